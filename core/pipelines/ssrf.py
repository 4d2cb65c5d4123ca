"""Outbound URL guard for ``http`` steps (server-side request forgery).

A pipeline author must not be able to make the platform call its own network: the guard
resolves the host and refuses any address that is private, loopback, link-local (cloud
metadata at 169.254.169.254), multicast, reserved or unspecified — unless the operator
allowlisted that host name, address or CIDR range (``NEXUS_PIPELINES__ALLOW_PRIVATE_HOSTS``).
Every resolved address must pass, so a name that resolves to one public and one private
address is refused. Redirects are never followed by the caller.

Known limit: the check and the connection resolve separately, so a DNS answer that changes
between them (rebinding with a TTL of 0) is not caught; pinning the checked address for the
connection would close that gap.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

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


def check_literal(url: str, allowlist: list[str]) -> None:
    """Refuse, without DNS, a URL whose host is a forbidden IP literal or a local name.

    Used at definition time on URLs without templates; the run-time check also resolves.
    """
    host, _ = _parts(url)
    try:
        ip: IPAddress | None = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        ip = None
    if _allowed(host, ip, allowlist):
        return
    if ip is not None and _is_forbidden_ip(ip):
        raise UrlRefused("URL points at a private, loopback, link-local or reserved address")
    if ip is None and (host in _FORBIDDEN_NAMES or host.endswith((".localhost", ".internal", ".local"))):
        raise UrlRefused("URL points at a local host name")


async def check_resolved(url: str, allowlist: list[str]) -> None:
    """Resolve the URL's host and refuse it unless every address is public (or allowlisted)."""
    check_literal(url, allowlist)
    host, port = _parts(url)
    if _allowed(host, None, allowlist):
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise UrlRefused("URL host does not resolve") from exc
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if _is_forbidden_ip(ip) and not _allowed(host, ip, allowlist):
            raise UrlRefused("URL resolves to a private, loopback, link-local or reserved address")
