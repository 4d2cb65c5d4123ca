"""SAP S/4HANA OData simulator (v2 and v4), from the public API_BUSINESS_PARTNER /
API_SALES_ORDER_SRV documentation.

- v2 under ``/sap/opu/odata/sap/{SERVICE}/{EntitySet}``: collections answer
  ``{"d": {"results": [...], "__next": "...$skiptoken=N", "__count": "N"}}``, single entities
  ``{"d": {...}}``; ``Edm.DateTimeOffset`` values are ``/Date(ms+0000)/``; updates use MERGE
  (or PATCH); errors ``{"error": {"code", "message": {"lang", "value"}}}``.
- v4 under ``/sap/opu/odata4/sap/{service}/srvd_a2x/sap/{name}/0001/{EntitySet}``: collections
  answer ``{"value": [...], "@odata.nextLink": "..."}``, ISO datetimes, PATCH, errors
  ``{"error": {"code", "message"}}``.
- Query options: ``$filter`` (eq ne gt ge lt le, and/or/not, parentheses; literals 'text',
  ``datetimeoffset'…'`` (v2) or bare ISO datetimes (v4), numbers, true/false), ``$orderby``,
  ``$top``, ``$skip``, ``$skiptoken``; server-driven paging at ``page_size`` records.
- CSRF: writes need ``X-CSRF-Token`` from a ``GET`` with ``X-CSRF-Token: Fetch`` and the session
  cookie set by that GET; otherwise 403 with ``x-csrf-token: Required``.
- Basic auth; a failure answers 401 with SAP's HTML logon error page.
"""

from __future__ import annotations

import base64
import re
import secrets
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from connectors.simulators.common import SimulatorBase, seeded_time

KEYS = {"A_SalesOrder": "SalesOrder", "A_BusinessPartner": "BusinessPartner"}
_TOKEN = re.compile(
    r"\s*(?:(?P<dto>datetime(?:offset)?'[^']*')|(?P<str>'(?:[^']|'')*')"
    r"|(?P<dt>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z)|(?P<num>-?\d+(?:\.\d+)?)"
    r"|(?P<paren>[()])|(?P<word>[A-Za-z_][\w/]*))"
)
_SEGMENT = re.compile(r"^(?P<set>\w+)(?:\((?P<key>.*)\))?$")


def _iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def v2_date(when: datetime) -> str:
    """``/Date(ms+0000)/`` as OData v2 JSON writes Edm.DateTimeOffset."""
    return f"/Date({int(when.timestamp() * 1000)}+0000)/"


class _Filter:
    def __init__(self, text: str) -> None:
        self.toks: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text.strip()):
            m = _TOKEN.match(text, pos)
            if m is None or m.end() == pos:
                raise ValueError("invalid $filter")
            kind = m.lastgroup
            assert kind is not None
            self.toks.append((kind, m.group(kind)))
            pos = m.end()
        self.i = 0

    def _peek(self) -> tuple[str, str]:
        return self.toks[self.i] if self.i < len(self.toks) else ("eof", "")

    def _word(self, w: str) -> bool:
        if self._peek() == ("word", w):
            self.i += 1
            return True
        return False

    def parse(self) -> Any:
        expr = self._or()
        if self._peek()[0] != "eof":
            raise ValueError("invalid $filter")
        return expr

    def _or(self) -> Any:
        left = self._and()
        while self._word("or"):
            left = ("or", left, self._and())
        return left

    def _and(self) -> Any:
        left = self._not()
        while self._word("and"):
            left = ("and", left, self._not())
        return left

    def _not(self) -> Any:
        if self._word("not"):
            return ("not", self._not())
        if self._peek() == ("paren", "("):
            self.i += 1
            inner = self._or()
            if self._peek() != ("paren", ")"):
                raise ValueError("invalid $filter")
            self.i += 1
            return inner
        kind, name = self._peek()
        if kind != "word":
            raise ValueError("invalid $filter")
        self.i += 1
        op_kind, op = self._peek()
        if op not in ("eq", "ne", "gt", "ge", "lt", "le"):
            raise ValueError("invalid $filter")
        self.i += 1
        kind, raw = self._peek()
        self.i += 1
        value: Any
        if kind == "dto":
            value = _iso(raw.split("'", 1)[1][:-1])
        elif kind == "dt":
            value = _iso(raw)
        elif kind == "str":
            value = raw[1:-1].replace("''", "'")
        elif kind == "num":
            value = float(raw)
        elif raw in ("true", "false"):
            value = raw == "true"
        elif raw == "null":
            value = None
        else:
            raise ValueError("invalid $filter")
        return ("cmp", name, op, value)


def _eval(record: dict[str, Any], expr: Any) -> bool:
    if expr is None:
        return True
    if expr[0] == "and":
        return _eval(record, expr[1]) and _eval(record, expr[2])
    if expr[0] == "or":
        return _eval(record, expr[1]) or _eval(record, expr[2])
    if expr[0] == "not":
        return not _eval(record, expr[1])
    _, name, op, value = expr
    actual = record.get(name)
    if isinstance(actual, datetime) or isinstance(value, datetime):
        actual = actual if isinstance(actual, datetime) else None
    elif isinstance(value, float) and actual is not None:
        actual = float(actual)
    if op == "eq":
        return bool(actual == value)
    if op == "ne":
        return bool(actual != value)
    if actual is None or value is None:
        return False
    return bool(
        {"gt": actual > value, "ge": actual >= value, "lt": actual < value, "le": actual <= value}[op]
    )


class SapSimulator(SimulatorBase):
    """In-memory S/4HANA with seeded sales orders and business partners."""

    name = "sap"

    def __init__(
        self,
        *,
        records: int = 120,
        username: str = "COMM_USER",
        password: str = "sap-secret",
        page_size: int = 1000,
        latency: float = 0.0,
    ) -> None:
        self.username, self.password = username, password
        self.page_size = page_size
        self.csrf: dict[str, str] = {}  # session cookie -> token
        self.entities: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in KEYS}
        self.clock = seeded_time(records) + timedelta(hours=1)
        self._next = {"A_SalesOrder": 1_000_000, "A_BusinessPartner": 9_000_000}
        for i in range(records):
            key = f"{i + 1:010d}"
            self.entities["A_SalesOrder"][key] = {
                "SalesOrder": key,
                "SalesOrderType": "OR",
                "SalesOrganization": "1010",
                "SoldToParty": f"{17100001 + i % 5}",
                "PurchaseOrderByCustomer": f"SEED-{i}",
                "TotalNetAmount": f"{100 + i}.00",
                "TransactionCurrency": "EUR",
                "LastChangeDateTime": seeded_time(i),
            }
        for i in range(min(records, 20)):
            key = f"{17100001 + i}"
            self.entities["A_BusinessPartner"][key] = {
                "BusinessPartner": key,
                "BusinessPartnerCategory": "2",
                "BusinessPartnerFullName": f"Customer {i}",
                "BusinessPartnerIDByExtSystem": "",
                "BusinessPartnerIsBlocked": False,
                "LastChangeDateTime": seeded_time(i),
            }
        super().__init__(latency=latency)

    # state helpers

    def _tick(self) -> datetime:
        self.clock += timedelta(seconds=1)
        return self.clock

    def insert(self, entity: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Create an entity as the service would (server-assigned key)."""
        with self.lock:
            self._next[entity] += 1
            key_field = KEYS[entity]
            key = f"{self._next[entity]:010d}" if entity == "A_SalesOrder" else str(self._next[entity])
            record = {**fields, key_field: key, "LastChangeDateTime": self._tick()}
            self.entities[entity][key] = record
            return record

    def update(self, entity: str, key: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Change an entity (bumps LastChangeDateTime)."""
        with self.lock:
            record = self.entities[entity][key]
            record.update(fields, LastChangeDateTime=self._tick())
            return record

    def count(self, entity: str, **equals: Any) -> int:
        """Entities whose fields equal ``equals``."""
        with self.lock:
            rows = self.entities[entity].values()
            return sum(1 for r in rows if all(r.get(k) == v for k, v in equals.items()))

    # HTTP

    def routes(self) -> list[Any]:
        return [
            Route(
                "/sap/opu/{rest:path}",
                self.handle,
                methods=["GET", "POST", "PATCH", "MERGE", "PUT", "DELETE"],
            )
        ]

    @staticmethod
    def _error(
        v4: bool, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> Response:
        msg: Any = message if v4 else {"lang": "en", "value": message}
        return JSONResponse({"error": {"code": code, "message": msg}}, status_code=status, headers=headers)

    def throttled_response(self, retry_after: float) -> Response:
        return self._error(
            True, 429, "/IWFND/CM_CONSUMER/429", "Too many requests", {"Retry-After": f"{retry_after:g}"}
        )

    def unavailable_response(self) -> Response:
        return self._error(True, 503, "/IWFND/CM_BEC/026", "Service temporarily unavailable")

    def _authorised(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return user == self.username and password == self.password

    def _out(self, record: dict[str, Any], v4: bool, base: str, entity: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in record.items():
            out[k] = (
                (v.strftime("%Y-%m-%dT%H:%M:%SZ") if v4 else v2_date(v)) if isinstance(v, datetime) else v
            )
        if not v4:
            out["__metadata"] = {
                "uri": f"{base}/{entity}('{record[KEYS[entity]]}')",
                "type": f"API.{entity}Type",
            }
        return out

    async def handle(self, request: Request) -> Response:
        rest = request.path_params["rest"]
        v4 = rest.startswith("odata4/")
        if not self._authorised(request):
            return HTMLResponse(
                "<html><head><title>Logon Error Message</title></head><body><h1>Anmeldung fehlgeschlagen</h1>"
                "<p>Logon failed</p></body></html>",
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="SAP NetWeaver Application Server [S4H/100]"'},
            )
        path, _, last = rest.rstrip("/").rpartition("/")
        m = _SEGMENT.match(last)
        if m is None or m.group("set") not in KEYS:
            return self._error(v4, 404, "/IWBEP/CM_MGW_RT/020", f"Resource not found for segment '{last}'")
        entity, key = m.group("set"), m.group("key")
        if key is not None:
            key = key.split("=", 1)[-1].strip("'")
        base = f"{request.url.scheme}://{request.url.netloc}/sap/opu/{path}"
        headers: dict[str, str] = {}
        if request.method == "GET":
            if request.headers.get("x-csrf-token", "").lower() == "fetch":
                session = request.cookies.get("SAP_SESSIONID_S4H_100") or secrets.token_hex(8)
                token = secrets.token_urlsafe(16)
                with self.lock:
                    self.csrf[session] = token
                headers = {"X-CSRF-Token": token}
                response = self._read(request, v4, base, entity, key, headers)
                response.set_cookie("SAP_SESSIONID_S4H_100", session, httponly=True)
                return response
            return self._read(request, v4, base, entity, key, headers)
        session = request.cookies.get("SAP_SESSIONID_S4H_100", "")
        sent = request.headers.get("x-csrf-token", "")
        with self.lock:
            valid = bool(sent) and self.csrf.get(session) == sent
        if not valid:
            return self._error(
                v4, 403, "/IWFND/CM_CSRF/000", "CSRF token validation failed", {"x-csrf-token": "Required"}
            )
        return await self._write(request, v4, base, entity, key)

    def _read(
        self, request: Request, v4: bool, base: str, entity: str, key: str | None, headers: dict[str, str]
    ) -> Response:
        if key is not None:
            with self.lock:
                record = self.entities[entity].get(key)
            if record is None:
                return self._error(v4, 404, "/IWBEP/CM_MGW_RT/020", "Resource not found")
            body = self._out(record, v4, base, entity)
            return JSONResponse(body if v4 else {"d": body}, headers=headers)
        params = request.query_params
        try:
            expr = _Filter(params["$filter"]).parse() if params.get("$filter") else None
            top = int(params["$top"]) if "$top" in params else None
            skip = int(params.get("$skiptoken") or params.get("$skip") or 0)
        except (ValueError, KeyError):
            return self._error(v4, 400, "/IWBEP/CM_MGW_RT/022", "Invalid query option")
        with self.lock:
            rows = [r for r in self.entities[entity].values() if _eval(r, expr)]
        for part in reversed([p.strip() for p in params.get("$orderby", "").split(",") if p.strip()]):
            name, _, direction = part.partition(" ")
            rows.sort(key=lambda r: (r.get(name) is None, r.get(name) or ""), reverse=direction == "desc")
        total = len(rows)
        end = total if top is None else min(total, top)
        window = rows[skip:end]
        page, more = window[: self.page_size], len(window) > self.page_size
        records = [self._out(r, v4, base, entity) for r in page]
        next_link = None
        if more:
            q = {k: v for k, v in params.items() if k not in ("$skiptoken", "$skip")}
            next_link = f"{base}/{entity}?{urlencode({**q, '$skiptoken': skip + self.page_size})}"
        if v4:
            v4_body: dict[str, Any] = {"value": records}
            if next_link:
                v4_body["@odata.nextLink"] = next_link
            if params.get("$count") == "true":
                v4_body["@odata.count"] = total
            return JSONResponse(v4_body, headers=headers)
        d: dict[str, Any] = {"results": records}
        if next_link:
            d["__next"] = next_link
        if params.get("$inlinecount") == "allpages":
            d["__count"] = str(total)
        return JSONResponse({"d": d}, headers=headers)

    async def _write(self, request: Request, v4: bool, base: str, entity: str, key: str | None) -> Response:
        body: Any = None
        if request.method != "DELETE":
            try:
                body = await request.json()
            except ValueError:
                body = None
            if not isinstance(body, dict):
                return self._error(v4, 400, "/IWBEP/CM_MGW_RT/001", "Malformed request body")
            body = {
                k: v for k, v in body.items() if k not in (KEYS[entity], "LastChangeDateTime", "__metadata")
            }
        if request.method == "POST":
            if key is not None:
                return self._error(v4, 405, "/IWBEP/CM_MGW_RT/005", "Method not allowed")
            record = self.insert(entity, body)
            out = self._out(record, v4, base, entity)
            return JSONResponse(out if v4 else {"d": out}, status_code=201)
        with self.lock:
            exists = key is not None and key in self.entities[entity]
        if not exists:
            return self._error(v4, 404, "/IWBEP/CM_MGW_RT/020", "Resource not found")
        assert key is not None
        if request.method == "DELETE":
            with self.lock:
                self.entities[entity].pop(key, None)
        else:
            self.update(entity, key, body)
        return Response(status_code=204)
