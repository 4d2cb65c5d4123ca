"""ServiceNow Table API simulator (``/api/now/table/{table}``), from the public Table API docs.

- GET list: ``sysparm_query`` (encoded query: ``field=value``, ``>``/``>=``/``<``/``<=``/``!=``,
  ``STARTSWITH``, ``LIKE``, ``^`` for AND, ``^NQ`` for OR of groups, ``ORDERBY``/``ORDERBYDESC``),
  ``sysparm_limit`` (default 10000), ``sysparm_offset``, ``sysparm_fields``; answers
  ``{"result": [...]}`` with ``X-Total-Count`` and a ``Link`` header (first/prev/next/last).
- GET/PATCH/PUT/DELETE one record by ``sys_id``; POST creates (201).
- Values are strings; ``sys_updated_on`` is ``YYYY-MM-DD HH:MM:SS`` (UTC).
- Basic auth or a Bearer token; failures answer the real 401 body
  ``{"error": {"message": "User Not Authenticated", ...}, "status": "failure"}``.
"""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors.simulators.common import SimulatorBase, seeded_time

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
SYNC_TABLES = ("incident", "change_request", "problem")
_CONDITION = re.compile(r"^([A-Za-z_][\w.]*?)(>=|<=|!=|=|>|<|STARTSWITH|LIKE)(.*)$", re.S)


def sys_id_for(table: str, index: int) -> str:
    """Deterministic 32-hex sys_id."""
    return hashlib.md5(f"{table}:{index}".encode(), usedforsecurity=False).hexdigest()


def _failure(status: int, message: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "detail": detail}, "status": "failure"},
        status_code=status,
        headers=headers,
    )


def _matches(record: dict[str, Any], condition: str) -> bool:
    m = _CONDITION.match(condition)
    if m is None:
        return True  # unknown syntax is ignored by ServiceNow as well (invalid queries match all)
    field, op, value = m.groups()
    actual = str(record.get(field, ""))
    if op == "=":
        return actual == value
    if op == "!=":
        return actual != value
    if op == ">":
        return actual > value
    if op == ">=":
        return actual >= value
    if op == "<":
        return actual < value
    if op == "<=":
        return actual <= value
    if op == "STARTSWITH":
        return actual.startswith(value)
    return value.lower() in actual.lower()  # LIKE


def run_query(records: list[dict[str, Any]], query: str) -> list[dict[str, Any]]:
    """Filter and order ``records`` by an encoded query."""
    order: list[tuple[str, bool]] = []
    groups: list[list[str]] = []
    for group in query.split("^NQ") if query else []:
        conditions: list[str] = []
        for part in group.split("^"):
            if not part or part == "EQ":
                continue
            if part.startswith("ORDERBYDESC"):
                order.append((part[len("ORDERBYDESC") :], True))
            elif part.startswith("ORDERBY"):
                order.append((part[len("ORDERBY") :], False))
            else:
                conditions.append(part)
        groups.append(conditions)
    selected = [r for r in records if not groups or any(all(_matches(r, c) for c in g) for g in groups)]
    for field, desc in reversed(order):
        selected.sort(key=lambda r: str(r.get(field, "")), reverse=desc)
    return selected


class ServiceNowSimulator(SimulatorBase):
    """In-memory ServiceNow instance with seeded incidents."""

    name = "servicenow"

    def __init__(
        self,
        *,
        records: int = 120,
        username: str = "integration",
        password: str = "sn-secret",
        token: str = "sn-token",
        latency: float = 0.0,
    ) -> None:
        self.username, self.password, self.token = username, password, token
        self.tables: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in SYNC_TABLES}
        self.clock = seeded_time(records) + timedelta(hours=1)
        self._numbers = 10000
        for i in range(records):
            self._insert(
                "incident",
                {
                    "short_description": f"Seeded incident {i}",
                    "urgency": str(1 + i % 3),
                    "impact": str(1 + i % 3),
                    "state": "1",
                },
                sys_id=sys_id_for("incident", i),
                at=seeded_time(i),
            )
        super().__init__(latency=latency)

    # state helpers (used by the routes and by tests)

    def _tick(self) -> datetime:
        self.clock += timedelta(seconds=1)
        return self.clock

    def _insert(
        self, table: str, fields: dict[str, Any], *, sys_id: str | None = None, at: datetime | None = None
    ) -> dict[str, Any]:
        rows = self.tables.setdefault(table, {})
        when = (at or self._tick()).strftime(TIME_FORMAT)
        sys_id = (
            sys_id
            or hashlib.md5(f"{table}:new:{len(rows)}:{when}".encode(), usedforsecurity=False).hexdigest()
        )
        record = {k: "" if v is None else str(v) for k, v in fields.items()}
        self._numbers += 1
        prefix = {"incident": "INC", "change_request": "CHG", "problem": "PRB"}.get(table, "REC")
        record.update(
            sys_id=sys_id,
            number=record.get("number") or f"{prefix}{self._numbers:07d}",
            sys_created_on=when,
            sys_updated_on=when,
            sys_mod_count="0",
        )
        record.setdefault("correlation_id", "")
        record.setdefault("state", "1")
        rows[sys_id] = record
        return record

    def update(self, table: str, sys_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Apply an update as the API would (bumps sys_updated_on and sys_mod_count)."""
        with self.lock:
            record = self.tables[table][sys_id]
            record.update({k: "" if v is None else str(v) for k, v in fields.items()})
            record["sys_updated_on"] = self._tick().strftime(TIME_FORMAT)
            record["sys_mod_count"] = str(int(record["sys_mod_count"]) + 1)
            return record

    def count(self, table: str, **equals: str) -> int:
        """Number of records in ``table`` whose fields equal ``equals``."""
        with self.lock:
            rows = self.tables.get(table, {}).values()
            return sum(1 for r in rows if all(r.get(k) == v for k, v in equals.items()))

    # HTTP

    def routes(self) -> list[Any]:
        return [
            Route("/api/now/table/{table}", self.list_or_create, methods=["GET", "POST"]),
            Route("/api/now/table/{table}/{sys_id}", self.one, methods=["GET", "PATCH", "PUT", "DELETE"]),
            Route("/api/now/v2/table/{table}", self.list_or_create, methods=["GET", "POST"]),
            Route("/api/now/v2/table/{table}/{sys_id}", self.one, methods=["GET", "PATCH", "PUT", "DELETE"]),
        ]

    def throttled_response(self, retry_after: float) -> Response:
        return _failure(
            429,
            "Rate limit exceeded",
            "The number of requests exceeded the rate limit rule for this user",
            {"Retry-After": f"{retry_after:g}"},
        )

    def unavailable_response(self) -> Response:
        return _failure(503, "Service Unavailable", "The instance is unavailable or hibernating")

    def _authorised(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if header.startswith("Bearer "):
            return header[7:] == self.token
        if header.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            except ValueError:
                return False
            return user == self.username and password == self.password
        return False

    def _denied(self) -> JSONResponse:
        return _failure(401, "User Not Authenticated", "Required to provide Auth information")

    @staticmethod
    def _project(record: dict[str, Any], fields: str | None) -> dict[str, Any]:
        if not fields:
            return dict(record)
        return {f: record.get(f, "") for f in fields.split(",") if f}

    async def list_or_create(self, request: Request) -> Response:
        if not self._authorised(request):
            return self._denied()
        table = request.path_params["table"]
        if request.method == "POST":
            try:
                body = await request.json()
            except ValueError:
                return _failure(400, "Exception while reading request", "The payload is not valid JSON.")
            if not isinstance(body, dict):
                return _failure(400, "Exception while reading request", "The payload is not valid JSON.")
            with self.lock:
                record = self._insert(table, body)
            return JSONResponse({"result": dict(record)}, status_code=201)
        params = request.query_params
        if table not in self.tables:
            return _failure(400, "Invalid table " + table, "")
        try:
            limit = int(params.get("sysparm_limit", "10000"))
            offset = int(params.get("sysparm_offset", "0"))
        except ValueError:
            return _failure(400, "Invalid sysparm_limit or sysparm_offset", "")
        with self.lock:
            selected = run_query(list(self.tables[table].values()), params.get("sysparm_query", ""))
            total = len(selected)
            page = [self._project(r, params.get("sysparm_fields")) for r in selected[offset : offset + limit]]
        headers = {"X-Total-Count": str(total), "Link": self._links(request, limit, offset, total)}
        return JSONResponse({"result": page}, headers=headers)

    @staticmethod
    def _links(request: Request, limit: int, offset: int, total: int) -> str:
        base = str(request.url.replace(query=""))
        params = dict(request.query_params)

        def link(at: int, rel: str) -> str:
            return (
                f'<{base}?{urlencode({**params, "sysparm_offset": at, "sysparm_limit": limit})}>;rel="{rel}"'
            )

        parts = [link(0, "first")]
        if offset > 0:
            parts.append(link(max(0, offset - limit), "prev"))
        if offset + limit < total:
            parts.append(link(offset + limit, "next"))
        parts.append(link(max(0, (total - 1) // max(limit, 1) * limit), "last"))
        return ",".join(parts)

    async def one(self, request: Request) -> Response:
        if not self._authorised(request):
            return self._denied()
        table, sys_id = request.path_params["table"], request.path_params["sys_id"]
        with self.lock:
            record = self.tables.get(table, {}).get(sys_id)
        if record is None:
            return _failure(
                404, "No Record found", "Record doesn't exist or ACL restricts the record retrieval"
            )
        if request.method == "GET":
            return JSONResponse({"result": self._project(record, request.query_params.get("sysparm_fields"))})
        if request.method == "DELETE":
            with self.lock:
                self.tables[table].pop(sys_id, None)
            return Response(status_code=204)
        try:
            body = await request.json()
        except ValueError:
            return _failure(400, "Exception while reading request", "The payload is not valid JSON.")
        if not isinstance(body, dict):
            return _failure(400, "Exception while reading request", "The payload is not valid JSON.")
        body = {k: v for k, v in body.items() if not k.startswith("sys_")}
        return JSONResponse({"result": dict(self.update(table, sys_id, body))})
