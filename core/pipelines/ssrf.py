"""Outbound URL guard for ``http`` steps (server-side request forgery).

A pipeline author must not be able to make the platform call its own network: the guard
resolves the host and refuses any address that is private, loopback, link-local (cloud
metadata at 169.254.169.254), multicast, reserved or unspecified — unless the operator
allowlisted that host name, address or CIDR range (``NEXUS_PIPELINES__ALLOW_PRIVATE_HOSTS``).
Every resolved address must pass, so a name that resolves to one public and one private
address is refused. Redirects are never followed by the caller.

DNS rebinding: a check that resolves the name and a connection that resolves it again can see
two different answers (a TTL-0 record that is public for the check and 127.0.0.1 for the
connection). :class:`GuardedTransport` closes that gap: its connections resolve the name once,
refuse it unless every address passes, and connect to a vetted address (TLS still verifies the
certificate against the host name). A caller that wants a clear error before it builds a request
vets the URL first with :func:`check_resolved` and hands the result to the transport
(``pinned=``), so the name is looked up once per call. The blocking ``requests`` counterpart
(Salesforce) is in :mod:`core.pipelines.ssrf_requests`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_FORBIDDEN_NAMES = ("localhost", "metadata.google.internal", "metadata")


class UrlRefused(ValueError):
    """The URL may not be called; the message is safe to show (no resolved addresses)."""


def _is_forbidden_ip(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return bool(
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local)
    )


def _allowed(host: str, ip: IPAddress | None, allowlist: list[str]) -> bool:
    for entry in allowlist:
        entry = entry.strip().lower()
        if not entry:
            continue
        if entry == host:
            return True
        if ip is not None:
            try:
                if ip in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
    return False


def _parts(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UrlRefused("only http and https URLs may be called")
    if not parts.hostname:
        raise UrlRefused("URL has no host")
    if parts.username or parts.password:
        raise UrlRefused("URL must not embed credentials")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise UrlRefused("URL has an invalid port") from exc
    return parts.hostname.lower().rstrip("."), port


def _check_host(host: str, allowlist: list[str]) -> IPAddress | None:
    """The checks that need no DNS: a forbidden IP literal or a local name is refused.

    Returns the host's address when the host is an IP literal (there is nothing to resolve).
    """
    try:
        ip: IPAddress | None = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        ip = None
    if _allowed(host, ip, allowlist):
        return ip
    if ip is not None and _is_forbidden_ip(ip):
        raise UrlRefused("URL points at a private, loopback, link-local or reserved address")
    if ip is None and (host in _FORBIDDEN_NAMES or host.endswith((".localhost", ".internal", ".local"))):
        raise UrlRefused("URL points at a local host name")
    return ip


def check_literal(url: str, allowlist: list[str]) -> None:
    """Refuse, without DNS, a URL whose host is a forbidden IP literal or a local name.

    Used at definition time on URLs without templates; the run-time check also resolves.
    """
    _check_host(_parts(url)[0], allowlist)


Resolver = Callable[[str, int], Awaitable[list[str]]]
SyncResolver = Callable[[str, int], list[str]]


@dataclass(frozen=True)
class Vetted:
    """A host, port and the addresses that passed the guard (connect only to these)."""

    host: str
    port: int
    addresses: tuple[str, ...]


async def system_resolve(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for ``host`` (TCP), in its order."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]).split("%", 1)[0] for info in infos]


def system_resolve_sync(host: str, port: int) -> list[str]:
    """Blocking :func:`system_resolve` (for clients that run on a thread, like ``requests``)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]).split("%", 1)[0] for info in infos]


def _vet_answer(host: str, addresses: list[str], allowlist: list[str]) -> list[str]:
    if not addresses:
        raise UrlRefused("URL host does not resolve")
    if _allowed(host, None, allowlist):
        return addresses
    for address in addresses:
        ip = ipaddress.ip_address(address)
        if _is_forbidden_ip(ip) and not _allowed(host, ip, allowlist):
            raise UrlRefused("URL resolves to a private, loopback, link-local or reserved address")
    return addresses


async def vetted_addresses(
    host: str, port: int, allowlist: list[str], resolve: Resolver = system_resolve
) -> list[str]:
    """The addresses a connection to ``host`` may use: all of them must pass, else :class:`UrlRefused`."""
    host = host.lower().rstrip(".")
    literal = _check_host(host, allowlist)
    if literal is not None:
        return [str(literal)]
    try:
        addresses = await resolve(host, port)
    except OSError as exc:
        raise UrlRefused("URL host does not resolve") from exc
    return _vet_answer(host, addresses, allowlist)


def vetted_addresses_sync(
    host: str, port: int, allowlist: list[str], resolve: SyncResolver = system_resolve_sync
) -> list[str]:
    """Blocking :func:`vetted_addresses` (same checks, same errors)."""
    host = host.lower().rstrip(".")
    literal = _check_host(host, allowlist)
    if literal is not None:
        return [str(literal)]
    try:
        addresses = resolve(host, port)
    except OSError as exc:
        raise UrlRefused("URL host does not resolve") from exc
    return _vet_answer(host, addresses, allowlist)


async def check_resolved(url: str, allowlist: list[str], resolve: Resolver = system_resolve) -> Vetted:
    """Resolve the URL's host and refuse it unless every address is public (or allowlisted).

    The result can be handed to :class:`GuardedTransport` (``pinned=``) so the connection goes
    to exactly these addresses without a second lookup.
    """
    host, port = _parts(url)
    return Vetted(host, port, tuple(await vetted_addresses(host, port, allowlist, resolve)))


class GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """Opens TCP connections only to vetted addresses of the requested host (see the module doc)."""

    def __init__(
        self, allowlist: list[str], resolve: Resolver = system_resolve, pinned: Vetted | None = None
    ) -> None:
        self._allowlist = list(allowlist)
        self._resolve = resolve
        self._pinned = pinned
        self._inner = httpcore.AnyIOBackend()

    async def _addresses(self, host: str, port: int) -> list[str]:
        pinned = self._pinned
        if pinned is not None and (host.lower().rstrip("."), port) == (pinned.host, pinned.port):
            return list(pinned.addresses)  # vetted by the caller's check: no second lookup
        return await vetted_addresses(host, port, self._allowlist, self._resolve)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore backend interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Resolve once (or take the pinned addresses), vet, then connect to the first that answers."""
        addresses = await self._addresses(host, port)
        last: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore backend interface)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Unix sockets are never a destination for user-given URLs."""
        raise UrlRefused("unix sockets may not be called")

    async def sleep(self, seconds: float) -> None:
        """Delegate to the default backend."""
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """An httpx transport whose connections go only to vetted addresses (DNS rebinding safe).

    A refused destination raises :class:`UrlRefused` out of ``client.request``. ``pinned``
    (from :func:`check_resolved`) makes connections to that host and port use the addresses
    already vetted instead of resolving again; any other destination is resolved and vetted.
    """

    def __init__(
        self,
        allowlist: list[str],
        *,
        verify: Any = True,
        limits: httpx.Limits = httpx.Limits(max_connections=20, max_keepalive_connections=5),
        resolve: Resolver = system_resolve,
        pinned: Vetted | None = None,
    ) -> None:
        super().__init__(verify=verify, limits=limits, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedNetworkBackend(allowlist, resolve, pinned),
        )


def guarded_client(allowlist: list[str], *, pinned: Vetted | None = None, **kwargs: Any) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` for user-given URLs: no environment proxies, vetted connections."""
    transport = GuardedTransport(allowlist, pinned=pinned)
    return httpx.AsyncClient(trust_env=False, transport=transport, **kwargs)
