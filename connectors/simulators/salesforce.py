"""Salesforce REST API simulator (served over TLS: simple-salesforce builds https:// URLs).

From the public REST API docs:

- ``POST /services/oauth2/token``: ``client_credentials`` and ``password`` grants answer
  ``{"access_token", "instance_url", "token_type": "Bearer", ...}``; a bad client or user answers
  400 ``{"error": "invalid_client"|"invalid_grant", "error_description": "..."}``.
- ``GET /services/data/v{N}/``: the resource directory (used as the connection test).
- ``GET .../query/?q=SOQL``: ``{"totalSize", "done", "records", "nextRecordsUrl"}``; batches of
  ``batch_size`` (``Sforce-Query-Options: batchSize=N`` lowers it); ``GET .../query/{locator}``
  continues.
- ``/sobjects/{Type}/``: POST create (201 ``{"id","success","errors"}``); ``/{id}`` GET, PATCH
  (204), DELETE (204); ``/{ExternalIdField}/{value}`` PATCH upsert (201 ``created: true`` or
  200 ``created: false``; 300 when several records match).
- Errors are lists ``[{"message", "errorCode"}]``: 401 ``INVALID_SESSION_ID``, 404 ``NOT_FOUND``,
  400 ``MALFORMED_QUERY``/``INVALID_FIELD``/``JSON_PARSER_ERROR``.
- Writes set ``SystemModstamp``/``LastModifiedDate`` (``2024-01-01T00:00:00.000+0000``).
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors.simulators import soql
from connectors.simulators.common import SimulatorBase, seeded_time

API_VERSION = "59.0"
IDEMPOTENCY_FIELD = "Nexus_Idempotency_Key__c"
_PREFIX = {"Case": "500", "Account": "001", "Contact": "003", "Opportunity": "006"}


def sf_time(when: datetime) -> str:
    """Salesforce REST datetime format."""
    return when.strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def record_id(sobject: str, index: int) -> str:
    """Deterministic 18-character id with the object's key prefix."""
    return f"{_PREFIX.get(sobject, 'a00')}{index:012d}AAA"


def _errors(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse([{"message": message, "errorCode": code}], status_code=status, headers=headers)


class SalesforceSimulator(SimulatorBase):
    """In-memory Salesforce org with seeded Cases and Accounts."""

    name = "salesforce"

    def __init__(
        self,
        *,
        records: int = 120,
        client_id: str = "nexus-client",
        client_secret: str = "sf-secret",
        username: str = "integration@example.com",
        password: str = "sf-password",
        security_token: str = "sf-token",
        batch_size: int = 2000,
        latency: float = 0.0,
    ) -> None:
        self.client_id, self.client_secret = client_id, client_secret
        self.username, self.password, self.security_token = username, password, security_token
        self.batch_size = batch_size
        self.instance_url = ""  # set on the first token request (the URL the client used)
        self.tokens: set[str] = set()
        self.objects: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in _PREFIX}
        self.cursors: dict[str, list[dict[str, Any]]] = {}
        self.clock = seeded_time(records) + timedelta(hours=1)
        self._next = {name: 1_000_000 for name in _PREFIX}
        for i in range(records):
            at = sf_time(seeded_time(i))
            self.objects["Case"][record_id("Case", i)] = {
                "Id": record_id("Case", i),
                "CaseNumber": f"{i + 1:08d}",
                "Subject": f"Seeded case {i}",
                "Status": "New",
                "Priority": ("High", "Medium", "Low")[i % 3],
                IDEMPOTENCY_FIELD: None,
                "CreatedDate": at,
                "LastModifiedDate": at,
                "SystemModstamp": at,
            }
        for i in range(min(records, 20)):
            at = sf_time(seeded_time(i))
            self.objects["Account"][record_id("Account", i)] = {
                "Id": record_id("Account", i),
                "Name": f"Account {i}",
                "CreatedDate": at,
                "LastModifiedDate": at,
                "SystemModstamp": at,
            }
        super().__init__(latency=latency)

    # state helpers

    def _tick(self) -> str:
        self.clock += timedelta(seconds=1)
        return sf_time(self.clock)

    def insert(self, sobject: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Create a record as the API would."""
        with self.lock:
            self._next[sobject] = self._next.get(sobject, 1_000_000) + 1
            rid = record_id(sobject, self._next[sobject])
            now = self._tick()
            record = {"Id": rid, **fields, "CreatedDate": now, "LastModifiedDate": now, "SystemModstamp": now}
            if sobject == "Case":
                record.setdefault("Status", "New")
                record["CaseNumber"] = f"{self._next[sobject]:08d}"
            self.objects.setdefault(sobject, {})[rid] = record
            return record

    def update(self, sobject: str, rid: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Update a record as the API would (bumps SystemModstamp)."""
        with self.lock:
            record = self.objects[sobject][rid]
            now = self._tick()
            record.update(fields, LastModifiedDate=now, SystemModstamp=now)
            return record

    def count(self, sobject: str, **equals: Any) -> int:
        """Records of ``sobject`` whose fields equal ``equals``."""
        with self.lock:
            return sum(
                1
                for r in self.objects.get(sobject, {}).values()
                if all(r.get(k) == v for k, v in equals.items())
            )

    # HTTP

    def routes(self) -> list[Any]:
        base = "/services/data/v{version}"
        return [
            Route("/services/oauth2/token", self.token, methods=["POST"]),
            Route(base + "/", self.directory, methods=["GET"]),
            Route(base + "/query/", self.query, methods=["GET"]),
            Route(base + "/query/{locator}", self.query_more, methods=["GET"]),
            Route(base + "/sobjects/{sobject}/", self.create, methods=["POST"]),
            Route(base + "/sobjects/{sobject}/{rid}", self.one, methods=["GET", "PATCH", "DELETE"]),
            Route(base + "/sobjects/{sobject}/{field}/{value}", self.upsert, methods=["PATCH", "GET"]),
        ]

    def throttled_response(self, retry_after: float) -> Response:
        return _errors(
            429,
            "REQUEST_LIMIT_EXCEEDED",
            "TotalRequests Limit exceeded.",
            {"Retry-After": f"{retry_after:g}"},
        )

    def unavailable_response(self) -> Response:
        return _errors(503, "SERVER_UNAVAILABLE", "Server temporarily unavailable. Please try again later.")

    async def token(self, request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        grant = form.get("grant_type")
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return JSONResponse(
                {"error": "invalid_client", "error_description": "invalid client credentials"}, 400
            )
        if grant == "password":
            if (
                form.get("username") != self.username
                or form.get("password") != self.password + self.security_token
            ):
                return JSONResponse(
                    {"error": "invalid_grant", "error_description": "authentication failure"}, 400
                )
        elif grant != "client_credentials":
            return JSONResponse(
                {"error": "unsupported_grant_type", "error_description": "grant type not supported"}, 400
            )
        token = "00D" + secrets.token_hex(16)
        with self.lock:
            self.tokens.add(token)
            self.instance_url = f"{request.url.scheme}://{request.url.netloc}"
        return JSONResponse(
            {
                "access_token": token,
                "instance_url": self.instance_url,
                "id": f"{self.instance_url}/id/00D000000000001/005000000000001",
                "token_type": "Bearer",
                "issued_at": "1704067200000",
                "signature": "c2ltdWxhdGVk",
            }
        )

    def _authorised(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        return header.startswith("Bearer ") and header[7:] in self.tokens

    @staticmethod
    def _denied() -> JSONResponse:
        return _errors(401, "INVALID_SESSION_ID", "Session expired or invalid")

    async def directory(self, request: Request) -> Response:
        if not self._authorised(request):
            return self._denied()
        v = request.path_params["version"]
        return JSONResponse(
            {"sobjects": f"/services/data/v{v}/sobjects", "query": f"/services/data/v{v}/query"}
        )

    def _batch(self, request: Request) -> int:
        options = request.headers.get("sforce-query-options", "")
        size = self.batch_size
        for part in options.split(","):
            name, _, value = part.strip().partition("=")
            if name == "batchSize" and value.isdigit():
                size = min(size, max(1, int(value)))
        return size

    def _page(
        self, request: Request, rows: list[dict[str, Any]], total: int, locator: str, start: int
    ) -> Response:
        size = self._batch(request)
        chunk, rest = rows[:size], rows[size:]
        body: dict[str, Any] = {"totalSize": total, "done": not rest, "records": chunk}
        if rest:
            nxt = f"{locator}-{start + size}"
            with self.lock:
                self.cursors[nxt] = rest
            body["nextRecordsUrl"] = f"/services/data/v{request.path_params['version']}/query/{nxt}"
        return JSONResponse(body)

    async def query(self, request: Request) -> Response:
        if not self._authorised(request):
            return self._denied()
        try:
            q = soql.parse(request.query_params.get("q", ""))
        except (soql.SoqlError, ValueError) as exc:
            return _errors(400, "MALFORMED_QUERY", str(exc))
        with self.lock:
            table = self.objects.get(q.sobject)
            if table is None:
                return _errors(400, "INVALID_TYPE", f"sObject type '{q.sobject}' is not supported.")
            found = soql.execute(q, list(table.values()))
        unknown = [f for f in q.fields if f != "Id" and found and f not in found[0]]
        if unknown:
            return _errors(400, "INVALID_FIELD", f"No such column '{unknown[0]}' on entity '{q.sobject}'.")
        v = request.path_params["version"]
        rows = [
            {
                "attributes": {
                    "type": q.sobject,
                    "url": f"/services/data/v{v}/sobjects/{q.sobject}/{r['Id']}",
                },
                **{f: r.get(f) for f in q.fields},
            }
            for r in found
        ]
        return self._page(request, rows, len(rows), "01g" + secrets.token_hex(6), 0)

    async def query_more(self, request: Request) -> Response:
        if not self._authorised(request):
            return self._denied()
        locator = request.path_params["locator"]
        with self.lock:
            rows = self.cursors.pop(locator, None)
        if rows is None:
            return _errors(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        base, _, start = locator.rpartition("-")
        return self._page(request, rows, -1, base, int(start))

    async def _body(self, request: Request) -> dict[str, Any] | None:
        try:
            body = await request.json()
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    async def create(self, request: Request) -> Response:
        if not self._authorised(request):
            return self._denied()
        body = await self._body(request)
        if body is None:
            return _errors(400, "JSON_PARSER_ERROR", "The request body is not valid JSON.")
        record = self.insert(request.path_params["sobject"], body)
        return JSONResponse({"id": record["Id"], "success": True, "errors": []}, status_code=201)

    async def one(self, request: Request) -> Response:
        if not self._authorised(request):
            return self._denied()
        sobject, rid = request.path_params["sobject"], request.path_params["rid"]
        with self.lock:
            record = self.objects.get(sobject, {}).get(rid)
        if record is None:
            return _errors(404, "NOT_FOUND", "The requested resource does not exist")
        if request.method == "GET":
            return JSONResponse({"attributes": {"type": sobject}, **record})
        if request.method == "DELETE":
            with self.lock:
                self.objects[sobject].pop(rid, None)
            return Response(status_code=204)
        body = await self._body(request)
        if body is None:
            return _errors(400, "JSON_PARSER_ERROR", "The request body is not valid JSON.")
        self.update(sobject, rid, body)
        return Response(status_code=204)

    async def upsert(self, request: Request) -> Response:
        if not self._authorised(request):
            return self._denied()
        sobject, field, value = (request.path_params[k] for k in ("sobject", "field", "value"))
        with self.lock:
            matching = [r for r in self.objects.get(sobject, {}).values() if r.get(field) == value]
        if request.method == "GET":
            if not matching:
                return _errors(404, "NOT_FOUND", "The requested resource does not exist")
            return JSONResponse({"attributes": {"type": sobject}, **matching[0]})
        body = await self._body(request)
        if body is None:
            return _errors(400, "JSON_PARSER_ERROR", "The request body is not valid JSON.")
        if len(matching) > 1:
            return JSONResponse([r["Id"] for r in matching], status_code=300)
        if matching:
            self.update(sobject, matching[0]["Id"], body)
            return JSONResponse({"id": matching[0]["Id"], "success": True, "errors": [], "created": False})
        record = self.insert(sobject, {**body, field: value})
        return JSONResponse(
            {"id": record["Id"], "success": True, "errors": [], "created": True}, status_code=201
        )
