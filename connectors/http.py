"""Shared plumbing for the httpx-based connectors: one client, zero retries, error mapping.

Every non-2xx answer becomes a ``ConnectorError``: 401 auth, 403 permission, 404 not found,
400/422 validation, 409/412 conflict, 429 throttled (with ``Retry-After``), 5xx unavailable;
transport timeouts are ``timeout`` and connection failures ``unavailable``. Each connector
supplies ``vendor_message`` to pull the vendor's short error text out of its error body;
request URLs (which may carry query values) never reach the message.
"""

from __future__ import annotations

import email.utils
import ssl
import time
from typing import Any

import httpx
from pydantic import BaseModel

from connectors.base import Connector, ConnectorError, ErrorKind
from core.pipelines.ssrf import GuardedTransport, UrlRefused

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
_MAX_VENDOR_TEXT = 200


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def tls_context(verify: bool | str) -> bool | ssl.SSLContext:
    """httpx's ``verify``: a CA bundle path becomes an ``SSLContext`` (httpx deprecated paths)."""
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    return verify


def kind_for_status(status: int) -> ErrorKind:
    """The error kind of an HTTP status (used by every HTTP connector)."""
    if status == 401:
        return ErrorKind.auth
    if status == 403:
        return ErrorKind.permission
    if status == 404:
        return ErrorKind.not_found
    if status in (409, 412):
        return ErrorKind.conflict
    if status == 429:
        return ErrorKind.throttled
    if status in (408, 504):
        return ErrorKind.timeout
    if status >= 500:
        return ErrorKind.unavailable
    return ErrorKind.validation


def clip(text: str) -> str:
    """Vendor text shortened for an error message."""
    text = " ".join(text.split())
    return text if len(text) <= _MAX_VENDOR_TEXT else text[: _MAX_VENDOR_TEXT - 1] + "…"


class HttpConnector(Connector):
    """Base of the async connectors: owns (or borrows) an ``httpx.AsyncClient``."""

    def __init__(
        self,
        config: BaseModel,
        credentials: BaseModel,
        *,
        http: httpx.AsyncClient | None = None,
        verify: bool | str = True,
        egress_allowlist: list[str] | None = None,
    ) -> None:
        super().__init__(config, credentials, http=http, verify=verify, egress_allowlist=egress_allowlist)

    @property
    def client(self) -> httpx.AsyncClient:
        """The HTTP client (created on first use when none was given)."""
        if self._http is None:
            # redirects are not followed: a vendor answering with a redirect to elsewhere
            # must not make us call an unchecked host
            if self.egress_allowlist is None:
                self._http = httpx.AsyncClient(
                    verify=tls_context(self.verify), timeout=DEFAULT_TIMEOUT, follow_redirects=False
                )
            else:
                transport = GuardedTransport(self.egress_allowlist, verify=tls_context(self.verify))
                self._http = httpx.AsyncClient(
                    transport=transport, timeout=DEFAULT_TIMEOUT, follow_redirects=False, trust_env=False
                )
        return self._http

    async def close(self) -> None:
        """Close the HTTP client if this connector created it."""
        if self._http is not None and self._owns_http:
            await self._http.aclose()
            self._http = None

    def vendor_message(self, response: httpx.Response) -> str:
        """Short vendor error text from an error response (overridden per vendor)."""
        return ""

    def error_for(self, response: httpx.Response, what: str) -> ConnectorError:
        """Map a non-2xx response to a ``ConnectorError`` with a client-safe message."""
        status = response.status_code
        kind = kind_for_status(status)
        try:
            detail = clip(self.vendor_message(response))
        except Exception:  # an unparsable error body must not hide the status
            detail = ""
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if kind is ErrorKind.auth:
            hint = "check the credentials"
        elif kind is ErrorKind.permission:
            hint = "the account lacks permission"
        elif kind is ErrorKind.throttled:
            hint = "rate limited" + (f", retry after {retry_after:g}s" if retry_after is not None else "")
        elif kind in (ErrorKind.unavailable, ErrorKind.timeout):
            hint = "service unavailable"
        else:
            hint = ""
        parts = [f"{self.title} {what} failed: HTTP {status}"]
        if hint:
            parts.append(hint)
        if detail:
            parts.append(detail)
        return ConnectorError(" — ".join(parts), kind=kind, retry_after=retry_after, status=status)

    async def send(
        self,
        method: str,
        url: str,
        what: str,
        *,
        ok: tuple[int, ...] = (),
        **kwargs: Any,
    ) -> httpx.Response:
        """One HTTP call, no retries; non-2xx (other than ``ok``) raises ``ConnectorError``."""
        try:
            response = await self.client.request(method, url, **kwargs)
        except UrlRefused as exc:  # the connection resolved to a refused address (e.g. DNS rebinding)
            raise ConnectorError(f"{self.title} {what} refused: {exc}", kind=ErrorKind.config) from None
        except httpx.TimeoutException:
            raise ConnectorError(f"{self.title} {what} timed out", kind=ErrorKind.timeout) from None
        except httpx.TransportError as exc:
            raise ConnectorError(
                f"{self.title} {what} failed: cannot connect ({type(exc).__name__})",
                kind=ErrorKind.unavailable,
            ) from None
        if response.is_success or response.status_code in ok:
            return response
        raise self.error_for(response, what)

    @staticmethod
    def json_of(response: httpx.Response, what: str) -> Any:
        """The JSON body, or ``ConnectorError(unavailable)`` when the vendor sent something else."""
        try:
            return response.json()
        except ValueError:
            raise ConnectorError(
                f"{what}: the service answered with a non-JSON body", kind=ErrorKind.unavailable
            ) from None
