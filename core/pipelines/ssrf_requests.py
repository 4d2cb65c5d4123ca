"""The outbound URL guard for blocking ``requests`` sessions (simple-salesforce runs on them).

Same rule and the same DNS-rebinding safety as :class:`core.pipelines.ssrf.GuardedTransport`:
each new connection resolves its host once, refuses it unless every address passes the guard,
and opens the socket to a vetted address. Only the socket's destination changes: the urllib3
connection keeps the host name, so the ``Host`` header, TLS SNI and certificate verification
still use the name, never the address.

A refused destination raises :class:`~core.pipelines.ssrf.UrlRefused` out of
``session.request`` (requests does not wrap it). Proxies are refused: a proxy would resolve the
name itself, outside the guard.
"""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import DEFAULT_POOLBLOCK, HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.poolmanager import PoolManager
from urllib3.util import connection as urllib3_connection

from core.pipelines.ssrf import SyncResolver, UrlRefused, system_resolve_sync, vetted_addresses_sync


@dataclass(frozen=True)
class EgressGuard:
    """The allowlist (host names, addresses, CIDR ranges) and the resolver of one session."""

    allowlist: tuple[str, ...]
    resolve: SyncResolver = system_resolve_sync

    def addresses(self, host: str, port: int) -> list[str]:
        """The vetted addresses of ``host`` (one lookup), else :class:`UrlRefused`."""
        return vetted_addresses_sync(host, port, list(self.allowlist), self.resolve)


def _connect_vetted(conn: HTTPConnection, guard: EgressGuard) -> socket.socket:
    """urllib3's ``_new_conn`` with its own lookup replaced by the guard's vetted addresses."""
    port = conn.port or (443 if isinstance(conn, HTTPSConnection) else 80)
    last: OSError | None = None
    for address in guard.addresses(conn.host, port):
        try:
            sock = urllib3_connection.create_connection(
                (address, port),
                conn.timeout,
                source_address=conn.source_address,
                socket_options=conn.socket_options,
            )
        except OSError as exc:  # try the next vetted address, as urllib3 does
            last = exc
            continue
        sys.audit("http.client.connect", conn, conn.host, port)
        return sock
    if isinstance(last, TimeoutError):
        raise ConnectTimeoutError(
            conn, f"Connection to {conn.host} timed out. (connect timeout={conn.timeout})"
        ) from last
    raise NewConnectionError(conn, f"Failed to establish a new connection: {last}") from last


class _GuardedHTTPConnection(HTTPConnection):
    def __init__(self, *args: Any, egress_guard: EgressGuard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.egress_guard = egress_guard

    def _new_conn(self) -> socket.socket:
        return _connect_vetted(self, self.egress_guard)


class _GuardedHTTPSConnection(HTTPSConnection):
    def __init__(self, *args: Any, egress_guard: EgressGuard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.egress_guard = egress_guard

    def _new_conn(self) -> socket.socket:
        return _connect_vetted(self, self.egress_guard)


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class _GuardedPoolManager(PoolManager):
    """Builds pools whose connections carry the guard (it reaches them as a connection kwarg)."""

    def __init__(self, guard: EgressGuard, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.egress_guard = guard
        self.pool_classes_by_scheme = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}

    def _new_pool(
        self, scheme: str, host: str, port: int, request_context: dict[str, Any] | None = None
    ) -> HTTPConnectionPool:
        # added here, not to connection_pool_kw: pool keys are built from those and know no guard
        context = dict(self.connection_pool_kw if request_context is None else request_context)
        context["egress_guard"] = self.egress_guard
        return super()._new_pool(scheme, host, port, context)


class GuardedAdapter(HTTPAdapter):
    """A ``requests`` transport adapter whose connections go only to vetted addresses."""

    def __init__(self, guard: EgressGuard, **kwargs: Any) -> None:
        self.egress_guard = guard  # before super().__init__, which builds the pool manager
        super().__init__(**kwargs)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = DEFAULT_POOLBLOCK, **pool_kwargs: Any
    ) -> None:
        """Like ``HTTPAdapter.init_poolmanager``, with the guarded pool manager."""
        self._pool_connections = connections
        self._pool_maxsize = maxsize
        self._pool_block = block
        self.poolmanager = _GuardedPoolManager(
            self.egress_guard, num_pools=connections, maxsize=maxsize, block=block, **pool_kwargs
        )

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        """Never: a proxy would resolve the destination outside the guard."""
        raise UrlRefused("proxies are not used for guarded connections")


def guard_session(
    session: requests.Session, allowlist: list[str], *, resolve: SyncResolver = system_resolve_sync
) -> requests.Session:
    """Make every ``http``/``https`` request of ``session`` go only to vetted addresses.

    ``allowlist`` lists host names, addresses or CIDR ranges allowed although private (the
    operator's ``allowed_hosts``). Environment proxies are turned off (``trust_env=False``).
    """
    adapter = GuardedAdapter(EgressGuard(tuple(allowlist), resolve))
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.trust_env = False
    return session
