"""DNS rebinding: the connection itself must go only to addresses that passed the guard.

A real HTTP server listens on 127.0.0.1 (the "internal service"). The attacker's name
``rebind.example`` resolves to a public address for the first lookup (the early check) and to
127.0.0.1 for every later one (the connection). Without pinning, the request would reach the
internal service; with :class:`ssrf.GuardedTransport` it is refused and the server sees nothing.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import httpx
import pytest

from core.pipelines import ssrf


class _Recorder(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        _Recorder.hits.append(self.path)
        body = b"internal secret"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def internal_port() -> Iterator[int]:
    _Recorder.hits = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def rebinding_resolver() -> ssrf.Resolver:
    answers = iter([["93.184.215.14"]])  # first answer public, then loopback forever

    async def resolve(host: str, port: int) -> list[str]:
        assert host == "rebind.example"
        return next(answers, ["127.0.0.1"])

    return resolve


async def test_rebinding_to_loopback_is_refused_at_connect(internal_port: int) -> None:
    resolve = rebinding_resolver()
    url = f"http://rebind.example:{internal_port}/admin"
    await ssrf.check_resolved(url, [], resolve)  # the early check sees the public answer and passes
    transport = ssrf.GuardedTransport([], resolve=resolve)
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(ssrf.UrlRefused):
            await client.get(url)
    assert _Recorder.hits == []


async def test_connection_uses_the_vetted_address_not_a_second_lookup(internal_port: int) -> None:
    """An operator-allowlisted address is reached through the guard's own resolution (pinning)."""

    async def resolve(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    transport = ssrf.GuardedTransport(["127.0.0.1"], resolve=resolve)
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get(f"http://only-in-our-resolver.example:{internal_port}/ok")
    assert response.status_code == 200
    assert _Recorder.hits == ["/ok"]


async def test_a_pinned_check_is_the_only_lookup(internal_port: int) -> None:
    """An http step vets the URL once and the connection uses exactly that answer.

    The name answers an allowlisted address first and a refused one afterwards: a second lookup
    at connect time would fail the call.
    """
    lookups: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"] if len(lookups) == 1 else ["10.0.0.7"]

    url = f"http://pinned.example:{internal_port}/hook"
    vetted = await ssrf.check_resolved(url, ["127.0.0.1"], resolve)
    assert vetted == ssrf.Vetted("pinned.example", internal_port, ("127.0.0.1",))
    transport = ssrf.GuardedTransport(["127.0.0.1"], resolve=resolve, pinned=vetted)
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get(url)
    assert response.status_code == 200
    assert _Recorder.hits == ["/hook"]
    assert lookups == ["pinned.example"]


async def test_pinning_covers_only_the_vetted_host_and_port(internal_port: int) -> None:
    """Any other destination is resolved and vetted by the connection itself."""

    async def resolve(host: str, port: int) -> list[str]:
        return ["127.0.0.1"] if host == "pinned.example" else ["10.0.0.7"]

    vetted = await ssrf.check_resolved(f"http://pinned.example:{internal_port}/", ["127.0.0.1"], resolve)
    pinned_elsewhere = ssrf.Vetted("other.example", internal_port, ("127.0.0.1",))
    for pinned, url in (
        (vetted, f"http://other.example:{internal_port}/x"),  # another host
        (pinned_elsewhere, f"http://other.example:{internal_port + 1}/x"),  # another port
    ):
        transport = ssrf.GuardedTransport(["127.0.0.1"], resolve=resolve, pinned=pinned)
        async with httpx.AsyncClient(transport=transport) as client:
            with pytest.raises(ssrf.UrlRefused):
                await client.get(url)
    assert _Recorder.hits == []


@pytest.mark.parametrize(
    "address", ["10.0.0.7", "169.254.169.254", "::1", "::ffff:127.0.0.1", "192.168.1.1", "0.0.0.0"]
)
async def test_any_forbidden_address_in_the_answer_refuses(address: str) -> None:
    async def resolve(host: str, port: int) -> list[str]:
        return ["93.184.215.14", address]

    with pytest.raises(ssrf.UrlRefused):
        await ssrf.vetted_addresses("mixed.example", 80, [], resolve)


async def test_unix_sockets_are_refused() -> None:
    backend = ssrf.GuardedNetworkBackend([])
    with pytest.raises(ssrf.UrlRefused):
        await backend.connect_unix_socket("/var/run/docker.sock")
