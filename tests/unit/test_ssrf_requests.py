"""The ``requests`` guard (``ssrf_requests.guard_session``): one lookup per connection, vetted.

A real HTTP server on 127.0.0.1 is the "internal service"; the resolver is injected (the first
answer public, the next ones loopback), as in ``test_ssrf_rebinding``.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest
import requests

from core.pipelines import ssrf
from core.pipelines.ssrf_requests import guard_session


class _Recorder(http.server.BaseHTTPRequestHandler):
    hits: list[tuple[str, str]] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        _Recorder.hits.append((self.path, self.headers.get("Host", "")))
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


def test_rebinding_to_loopback_is_refused_at_connect(internal_port: int) -> None:
    lookups: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["93.184.215.14"] if len(lookups) == 1 else ["127.0.0.1"]

    assert ssrf.vetted_addresses_sync("rebind.example", internal_port, [], resolve)  # the check passes
    with guard_session(requests.Session(), [], resolve=resolve) as session:
        with pytest.raises(ssrf.UrlRefused):
            session.get(f"http://rebind.example:{internal_port}/admin", timeout=5)
    assert _Recorder.hits == []
    assert lookups == ["rebind.example", "rebind.example"]


def test_allowlisted_address_is_reached_through_the_guards_own_lookup(internal_port: int) -> None:
    """The socket goes to the vetted address; the request still names the host."""

    def resolve(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    with guard_session(requests.Session(), ["127.0.0.1"], resolve=resolve) as session:
        response = session.get(f"http://only-in-our-resolver.example:{internal_port}/ok", timeout=5)
    assert response.status_code == 200
    assert _Recorder.hits == [("/ok", f"only-in-our-resolver.example:{internal_port}")]


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9/x", "http://169.254.169.254/latest", "http://localhost/x", "https://[::1]/x"]
)
def test_forbidden_literals_are_refused_without_a_lookup(url: str) -> None:
    def resolve(host: str, port: int) -> list[str]:
        raise AssertionError("no lookup for a literal or a local name")

    with guard_session(requests.Session(), [], resolve=resolve) as session:
        with pytest.raises(ssrf.UrlRefused):
            session.get(url, timeout=5)


def test_proxies_are_refused(internal_port: int) -> None:
    with guard_session(requests.Session(), ["127.0.0.1"]) as session:
        with pytest.raises(ssrf.UrlRefused):
            session.get(
                "http://example.com/", proxies={"http": f"http://127.0.0.1:{internal_port}"}, timeout=5
            )
    assert _Recorder.hits == []


def test_an_unreachable_vetted_address_is_a_connection_error() -> None:
    """Connection failures stay requests' ``ConnectionError`` (the connectors map it to unavailable)."""

    def resolve(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    with guard_session(requests.Session(), ["127.0.0.1"], resolve=resolve) as session:
        with pytest.raises(requests.ConnectionError):
            session.get("http://closed.example:9/", timeout=5)
