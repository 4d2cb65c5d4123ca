"""Microsoft identity platform + Microsoft Graph simulator, from the public Graph docs.

- ``POST /{tenant}/oauth2/v2.0/token`` (client credentials): ``{"token_type": "Bearer",
  "expires_in": 3599, "access_token"}``; a bad secret answers 401 ``invalid_client``
  (AADSTS7000215).
- ``GET /v1.0/drives/{drive}/root/children`` and ``/items/{id}/children``: ``value`` +
  ``@odata.nextLink`` (``$top``); ``GET /items/{id}``; ``GET /items/{id}/content`` answers 302
  to a pre-authenticated download URL (``/download/{token}``, no bearer needed).
- ``PUT /v1.0/drives/{drive}/root:/{path}:/content``: simple upload, replacing by path.
- ``DELETE /v1.0/drives/{drive}/items/{id}``: 204.
- ``GET /v1.0/drives/{drive}/root/delta``: pages with ``@odata.nextLink``, the last with
  ``@odata.deltaLink``; calling the delta link later returns only what changed since.
- ``POST /v1.0/users/{user}/sendMail``: 202. ``POST /v1.0/teams/{t}/channels/{c}/messages``: 201
  chatMessage; ``POST .../messages/{id}/softDelete``: 204.
- Errors ``{"error": {"code", "message"}}``; 429 ``TooManyRequests`` with ``Retry-After``.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from connectors.simulators.common import SimulatorBase, seeded_time

DRIVE = "b!nexus-drive"


def item_id(index: int) -> str:
    """Deterministic drive item id."""
    return f"01NEXUS{index:010d}"


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


class M365Simulator(SimulatorBase):
    """In-memory tenant: one drive of seeded files, mailboxes and Teams channels."""

    name = "m365"

    def __init__(
        self,
        *,
        records: int = 120,
        tenant: str = "contoso",
        client_id: str = "nexus-app",
        client_secret: str = "m365-secret",
        latency: float = 0.0,
    ) -> None:
        self.tenant, self.client_id, self.client_secret = tenant, client_id, client_secret
        self.tokens: set[str] = set()
        self.token_requests = 0
        self.items: dict[str, dict[str, Any]] = {}
        self.content: dict[str, bytes] = {}
        self.downloads: dict[str, str] = {}
        self.sent_mail: list[dict[str, Any]] = []
        self.messages: dict[str, dict[str, Any]] = {}
        self.seq = 0
        self.clock = seeded_time(records) + timedelta(hours=1)
        for i in range(records):
            self._put(item_id(i), f"doc-{i:05d}.txt", f"Seeded document {i}\n".encode(), seeded_time(i))
        super().__init__(latency=latency)

    # state helpers

    def _put(self, iid: str, name: str, data: bytes, when: datetime) -> dict[str, Any]:
        self.seq += 1
        item = {
            "id": iid,
            "name": name,
            "size": len(data),
            "file": {"mimeType": "text/plain"},
            "parentReference": {"driveId": DRIVE, "path": "/drive/root:"},
            "createdDateTime": _iso(when),
            "lastModifiedDateTime": _iso(when),
            "_seq": self.seq,
        }
        old = self.items.get(iid)
        if old is not None:
            item["createdDateTime"] = old["createdDateTime"]
        self.items[iid] = item
        self.content[iid] = data
        return item

    def _tick(self) -> datetime:
        self.clock += timedelta(seconds=1)
        return self.clock

    def touch(self, iid: str, data: bytes) -> None:
        """Change a file's content (it then appears in delta)."""
        with self.lock:
            self._put(iid, self.items[iid]["name"], data, self._tick())

    def live(self) -> list[dict[str, Any]]:
        """Items that are not deleted."""
        with self.lock:
            return [i for i in self.items.values() if "deleted" not in i]

    @staticmethod
    def public(item: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in item.items() if not k.startswith("_")}

    # HTTP

    def routes(self) -> list[Any]:
        d = "/v1.0/drives/{drive}"
        return [
            Route("/{tenant}/oauth2/v2.0/token", self.token, methods=["POST"]),
            Route(d + "/root/children", self.children, methods=["GET"]),
            Route(d + "/items/{iid}/children", self.children, methods=["GET"]),
            Route(d + "/root/delta", self.delta, methods=["GET"]),
            Route(d + "/items/{iid}/content", self.download_redirect, methods=["GET"]),
            Route(d + "/items/{iid}", self.item, methods=["GET", "DELETE"]),
            Route(d + "/root:/{path:path}:/content", self.upload, methods=["PUT"]),
            Route("/download/{token}", self.download, methods=["GET"]),
            Route("/v1.0/users/{user}/sendMail", self.send_mail, methods=["POST"]),
            Route("/v1.0/teams/{team}/channels/{channel}/messages", self.post_message, methods=["POST"]),
            Route(
                "/v1.0/teams/{team}/channels/{channel}/messages/{mid}/softDelete",
                self.soft_delete,
                methods=["POST"],
            ),
        ]

    def throttled_response(self, retry_after: float) -> Response:
        return _error(
            429,
            "TooManyRequests",
            "Too many requests, retry after the delay",
            {"Retry-After": f"{retry_after:g}"},
        )

    def unavailable_response(self) -> Response:
        return _error(503, "serviceNotAvailable", "The service is temporarily unavailable")

    async def token(self, request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        with self.lock:
            self.token_requests += 1
        if request.path_params["tenant"] != self.tenant:
            return JSONResponse(
                {"error": "invalid_request", "error_description": "AADSTS90002: Tenant not found."},
                status_code=400,
            )
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return JSONResponse(
                {
                    "error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret provided. Ensure the secret "
                    "being sent in the request is the client secret value, not the client secret ID.",
                    "error_codes": [7000215],
                },
                status_code=401,
            )
        if form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        token = "eyJ0eXAi." + secrets.token_urlsafe(24)
        with self.lock:
            self.tokens.add(token)
        return JSONResponse(
            {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}
        )

    def _denied(self, request: Request) -> Response | None:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer ") or header[7:] not in self.tokens:
            return _error(
                401, "InvalidAuthenticationToken", "Access token validation failure. Invalid audience."
            )
        return None

    def _base(self, request: Request) -> str:
        return f"{request.url.scheme}://{request.url.netloc}"

    async def children(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        top = int(request.query_params.get("$top", "200"))
        skip = int(request.query_params.get("$skiptoken", "0"))
        rows = sorted(self.live(), key=lambda i: i["name"])
        page = rows[skip : skip + top]
        body: dict[str, Any] = {"value": [self.public(i) for i in page]}
        if skip + top < len(rows):
            body["@odata.nextLink"] = (
                f"{self._base(request)}{request.url.path}?$top={top}&$skiptoken={skip + top}"
            )
        return JSONResponse(body)

    async def delta(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        top = int(request.query_params.get("$top", "200"))
        token = request.query_params.get("token", "0")
        if not token.isdigit():
            return _error(410, "resyncRequired", "The delta token is no longer valid")
        since = int(token)
        with self.lock:
            changed = sorted((i for i in self.items.values() if i["_seq"] > since), key=lambda i: i["_seq"])
        page = changed[:top]
        last = page[-1]["_seq"] if page else since
        link = f"{self._base(request)}{request.url.path}?$top={top}&token={last}"
        body: dict[str, Any] = {"value": [self.public(i) for i in page]}
        body["@odata.nextLink" if len(changed) > top else "@odata.deltaLink"] = link
        return JSONResponse(body)

    async def item(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        iid = request.path_params["iid"]
        with self.lock:
            item = self.items.get(iid)
            if item is None or "deleted" in item:
                return _error(404, "itemNotFound", "The resource could not be found.")
            if request.method == "DELETE":
                self.seq += 1
                item.update(deleted={"state": "deleted"}, _seq=self.seq)
                return Response(status_code=204)
        return JSONResponse(self.public(item))

    async def download_redirect(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        iid = request.path_params["iid"]
        with self.lock:
            if iid not in self.items or "deleted" in self.items[iid]:
                return _error(404, "itemNotFound", "The resource could not be found.")
            token = secrets.token_urlsafe(12)
            self.downloads[token] = iid
        return RedirectResponse(f"{self._base(request)}/download/{token}", status_code=302)

    async def download(self, request: Request) -> Response:
        with self.lock:
            iid = self.downloads.get(request.path_params["token"])
        if iid is None:
            return _error(404, "itemNotFound", "The download URL has expired.")
        return Response(self.content[iid], media_type=self.items[iid]["file"]["mimeType"])

    async def upload(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        path = request.path_params["path"]
        data = await request.body()
        with self.lock:
            existing = next(
                (i for i in self.items.values() if i["name"] == path and "deleted" not in i), None
            )
            iid = existing["id"] if existing else "01UPLOAD" + secrets.token_hex(6).upper()
            item = self._put(iid, path, data, self._tick())
        return JSONResponse(self.public(item), status_code=200 if existing else 201)

    async def send_mail(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        body = await request.json()
        if not isinstance(body, dict) or "message" not in body:
            return _error(400, "ErrorInvalidRequest", "The message is missing.")
        with self.lock:
            self.sent_mail.append({"user": request.path_params["user"], **body})
        return Response(status_code=202)

    async def post_message(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        body = await request.json()
        if not isinstance(body, dict) or not isinstance(body.get("body"), dict):
            return _error(400, "BadRequest", "Message body is required.")
        with self.lock:
            mid = str(1_700_000_000_000 + len(self.messages))
            message = {
                "id": mid,
                "messageType": "message",
                "createdDateTime": _iso(self._tick()),
                "deletedDateTime": None,
                "body": body["body"],
                "channelIdentity": {
                    "teamId": request.path_params["team"],
                    "channelId": request.path_params["channel"],
                },
            }
            self.messages[mid] = message
        return JSONResponse(message, status_code=201)

    async def soft_delete(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        with self.lock:
            message = self.messages.get(request.path_params["mid"])
            if message is None:
                return _error(404, "NotFound", "Message not found.")
            message["deletedDateTime"] = message["deletedDateTime"] or _iso(self._tick())
        return Response(status_code=204)
