"""The adapters' HTTP layer: line decoding and the aiohttp upstream's failures, over real sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from cli.embedded import free_port
from core.providers.errors import ErrorKind, ProviderError
from core.providers.openai import OpenAIAdapter
from core.providers.settings import ProviderTimeouts
from core.providers.transport import AiohttpUpstream, LineDecoder, UpstreamError
from core.providers.types import ChatRequest, Message

ASK = ChatRequest(model="m", messages=[Message(role="user", content="hi")])


def decode(*chunks: bytes) -> list[str]:
    decoder = LineDecoder()
    lines = [line for chunk in chunks for line in decoder.feed(chunk)]
    return lines + decoder.flush()


def test_lines_split_anywhere_come_out_whole() -> None:
    assert decode(b"data: a", b"bc\n\ndata: d\n", b"\n") == ["data: abc", "", "data: d", ""]
    # "\r\n" cut between two chunks is one line end, not two
    assert decode(b"data: x\r", b"\ndata: y\r\n\r\n") == ["data: x", "data: y", ""]
    assert decode(b"a\rb\r\r") == ["a", "b", ""]
    # a multi-byte character cut between chunks
    euro = "data: €".encode()
    assert decode(euro[:-1], euro[-1:] + b"\n") == ["data: €"]
    assert decode(b"tail without newline") == ["tail without newline"]


@pytest_asyncio.fixture
async def silent_server() -> AsyncIterator[int]:
    """Accepts connections and reads, but never answers."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        await asyncio.sleep(30)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    server.close()


@pytest_asyncio.fixture
async def cutting_server() -> AsyncIterator[int]:
    """Answers 200 with a Content-Length it never fulfils, then hangs up."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    server.close()


async def test_aiohttp_failures_map_to_the_provider_taxonomy(silent_server: int, cutting_server: int) -> None:
    upstream = AiohttpUpstream()
    timeouts = ProviderTimeouts(read_s=0.2, request_s=30)
    try:
        refused = OpenAIAdapter(
            client=upstream, base_url=f"http://127.0.0.1:{free_port()}/v1", timeouts=timeouts
        )
        with pytest.raises(ProviderError) as info:
            await refused.chat(ASK)
        assert info.value.kind is ErrorKind.server
        assert "ConnectError" in str(info.value)

        silent = OpenAIAdapter(
            client=upstream, base_url=f"http://127.0.0.1:{silent_server}/v1", timeouts=timeouts
        )
        with pytest.raises(ProviderError) as info:
            await silent.chat(ASK)
        assert info.value.kind is ErrorKind.timeout
        with pytest.raises(ProviderError) as info:
            async for _ in silent.stream(ASK):
                pass
        assert info.value.kind is ErrorKind.timeout

        with pytest.raises(UpstreamError) as cut:
            await upstream.post(f"http://127.0.0.1:{cutting_server}/", b"{}", {}, None, timeouts)
        assert cut.value.name == "RemoteProtocolError"
        assert not cut.value.timeout
    finally:
        await upstream.aclose()
