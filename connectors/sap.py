"""SAP S/4HANA connector: OData v2 and v4 over httpx, RFC/BAPI through optional ``pyrfc``.

- Auth: basic (communication user); writes first fetch an ``X-CSRF-Token`` (``GET`` with
  ``X-CSRF-Token: Fetch``), keeping the session cookies, as S/4HANA requires. An expired token
  (403 ``x-csrf-token: Required``) is dropped and surfaces as retryable: the retry fetches anew.
- Reads follow server-driven paging: v2 ``d.results`` + ``d.__next``, v4 ``value`` +
  ``@odata.nextLink`` (next links are only followed on the configured host).
- Actions: ``create_sales_order`` ↔ ``delete_sales_order``, ``create_business_partner`` ↔
  ``block_business_partner``, ``update_entity``, ``read_entities``, ``rfc_call``. Creates are
  idempotent through an external reference derived from the idempotency key
  (``PurchaseOrderByCustomer`` / ``BusinessPartnerIDByExtSystem``), looked up before the insert.
- Sync: ``A_SalesOrder`` by ``LastChangeDateTime`` then ``SalesOrder`` (keyset).
- RFC needs SAP's proprietary NW RFC SDK and ``pyrfc``; without them ``rfc_call`` raises
  ``ConnectorError(kind=not_installed)`` and everything else works.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import importlib
import re
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

import httpx
from pydantic import BaseModel, Field, SecretStr

from connectors.base import ActionSpec, ConnectorError, ErrorKind, StrictModel, SyncPage, SyncRecord
from connectors.http import HttpConnector

ENTITIES = ("A_SalesOrder", "A_BusinessPartner")
KEY_FIELDS = {"A_SalesOrder": "SalesOrder", "A_BusinessPartner": "BusinessPartner"}
DEFAULT_SERVICES = {
    "v2": {
        "A_BusinessPartner": "/sap/opu/odata/sap/API_BUSINESS_PARTNER",
        "A_SalesOrder": "/sap/opu/odata/sap/API_SALES_ORDER_SRV",
    },
    "v4": {
        "A_BusinessPartner": "/sap/opu/odata4/sap/api_business_partner/srvd_a2x/sap/businesspartner/0001",
        "A_SalesOrder": "/sap/opu/odata4/sap/api_salesorder/srvd_a2x/sap/salesorder/0001",
    },
}
_KEY = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
_V2_DATE = re.compile(r"^/Date\((-?\d+)(?:[+-]\d{4})?\)/$")
RFC_HINT = (
    "RFC calls need SAP's NW RFC SDK and the pyrfc package: install the SDK from SAP "
    "(SAPNWRFC_HOME), then `pip install pyrfc`, and set rfc_* in the connection config"
)


class SapConfig(StrictModel):
    """Non-secret settings."""

    base_url: str = Field(description="S/4HANA host, e.g. https://my-s4.example.com")
    odata_version: Literal["v2", "v4"] = "v2"
    services: dict[str, str] = Field(default_factory=dict, description="Entity set -> service root path")
    sap_client: str | None = Field(None, pattern=r"^\d{3}$", description="sap-client, e.g. 100")
    timeout_seconds: float = Field(30.0, gt=0, le=300)
    rfc_ashost: str | None = Field(None, description="RFC application server (for rfc_call)")
    rfc_sysnr: str | None = None
    rfc_client: str | None = None


class SapCredentials(StrictModel):
    """Communication user."""

    username: str
    password: SecretStr


EntityName = Field(pattern=r"^A_(SalesOrder|BusinessPartner)$")
Key = Field(pattern=_KEY.pattern)


class CreateSalesOrderInput(StrictModel):
    sales_order_type: str = "OR"
    sales_organization: str
    distribution_channel: str = "10"
    organization_division: str = "00"
    sold_to_party: str
    purchase_order_by_customer: str | None = Field(
        None, max_length=35, description="Unique reference; derived from the idempotency key when omitted"
    )
    fields: dict[str, Any] = Field(default_factory=dict)


class SalesOrderOutput(BaseModel):
    sales_order: str
    created: bool = False


class DeleteSalesOrderInput(StrictModel):
    sales_order: str = Key


class CreateBusinessPartnerInput(StrictModel):
    category: Literal["1", "2", "3"] = Field("2", description="1 person, 2 organization, 3 group")
    full_name: str = Field(min_length=1, max_length=80)
    fields: dict[str, Any] = Field(default_factory=dict)


class BusinessPartnerOutput(BaseModel):
    business_partner: str
    created: bool = False


class BlockBusinessPartnerInput(StrictModel):
    business_partner: str = Key


class UpdateEntityInput(StrictModel):
    entity: str = EntityName
    key: str = Key
    fields: dict[str, Any] = Field(min_length=1)


class EntityOutput(BaseModel):
    key: str


class ReadEntitiesInput(StrictModel):
    entity: str = EntityName
    filter: str | None = Field(None, max_length=2000, description="$filter")
    top: int | None = Field(None, ge=1, le=100_000)
    next_link: str | None = Field(None, description="Continue from a previous page")


class ReadEntitiesOutput(BaseModel):
    records: list[dict[str, Any]]
    next_link: str | None


class RfcCallInput(StrictModel):
    function: str = Field(pattern=r"^[A-Z0-9_/]{1,30}$")
    parameters: dict[str, Any] = Field(default_factory=dict)


class RfcCallOutput(BaseModel):
    result: dict[str, Any]


def reference(key: str, length: int) -> str:
    """A short, stable external reference for an idempotency key."""
    return "NX" + hashlib.sha256(key.encode()).hexdigest()[: length - 2].upper()


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class SapConnector(HttpConnector):
    """SAP S/4HANA OData (v2/v4) and optional RFC."""

    type: ClassVar[str] = "sap"
    title: ClassVar[str] = "SAP S/4HANA"
    config_model: ClassVar[builtins.type[BaseModel]] = SapConfig
    credentials_model: ClassVar[builtins.type[BaseModel]] = SapCredentials
    sync_objects: ClassVar[tuple[str, ...]] = ("A_SalesOrder",)
    actions: ClassVar[dict[str, ActionSpec]] = {
        "create_sales_order": ActionSpec(
            name="create_sales_order",
            title="Create sales order",
            input_model=CreateSalesOrderInput,
            output_model=SalesOrderOutput,
            idempotent=True,
            idempotency="PurchaseOrderByCustomer carries a reference derived from the idempotency key "
            "(or the given one); it is looked up before the insert",
            compensation="delete_sales_order",
            compensation_input=lambda i, o: {"sales_order": o["sales_order"]},
        ),
        "delete_sales_order": ActionSpec(
            name="delete_sales_order",
            title="Delete sales order",
            input_model=DeleteSalesOrderInput,
            output_model=SalesOrderOutput,
            idempotent=True,
            idempotency="Deleting an already deleted order (404) counts as done",
        ),
        "create_business_partner": ActionSpec(
            name="create_business_partner",
            title="Create business partner",
            input_model=CreateBusinessPartnerInput,
            output_model=BusinessPartnerOutput,
            idempotent=True,
            idempotency="BusinessPartnerIDByExtSystem carries a reference derived from the idempotency "
            "key; it is looked up before the insert",
            compensation="block_business_partner",
            compensation_input=lambda i, o: {"business_partner": o["business_partner"]},
        ),
        "block_business_partner": ActionSpec(
            name="block_business_partner",
            title="Block business partner",
            input_model=BlockBusinessPartnerInput,
            output_model=BusinessPartnerOutput,
            idempotent=True,
            idempotency="Setting BusinessPartnerIsBlocked again is a no-op (partners are not deleted)",
        ),
        "update_entity": ActionSpec(
            name="update_entity",
            title="Update entity",
            input_model=UpdateEntityInput,
            output_model=EntityOutput,
            idempotent=True,
            idempotency="MERGE/PATCH sets the same values on every attempt",
        ),
        "read_entities": ActionSpec(
            name="read_entities",
            title="Read entities (one server page)",
            input_model=ReadEntitiesInput,
            output_model=ReadEntitiesOutput,
            idempotent=True,
            idempotency="Read-only",
        ),
        "rfc_call": ActionSpec(
            name="rfc_call",
            title="RFC/BAPI call (needs pyrfc)",
            input_model=RfcCallInput,
            output_model=RfcCallOutput,
            idempotent=False,
            idempotency="Depends on the function module; BAPIs that write are not idempotent",
        ),
    }

    def __init__(self, config: BaseModel, credentials: BaseModel, **kw: Any) -> None:
        super().__init__(config, credentials, **kw)
        assert isinstance(config, SapConfig)
        assert isinstance(credentials, SapCredentials)
        self.cfg, self.creds = config, credentials
        self._csrf: str | None = None
        self._cookies = httpx.Cookies()

    @classmethod
    def hosts(cls, config: BaseModel) -> list[str]:
        """The S/4HANA base URL."""
        assert isinstance(config, SapConfig)
        return [config.base_url]

    # plumbing

    @property
    def v4(self) -> bool:
        return self.cfg.odata_version == "v4"

    def _root(self, entity: str) -> str:
        path = self.cfg.services.get(entity) or DEFAULT_SERVICES[self.cfg.odata_version][entity]
        return self.cfg.base_url.rstrip("/") + "/" + path.strip("/")

    def _url(self, entity: str, key: str | None = None) -> str:
        url = f"{self._root(entity)}/{entity}"
        return f"{url}({_quote(key)})" if key is not None else url

    def _params(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        params = dict(extra or {})
        if self.cfg.sap_client:
            params["sap-client"] = self.cfg.sap_client
        if not self.v4:
            params["$format"] = "json"
        return params

    def vendor_message(self, response: httpx.Response) -> str:
        """``error.message`` (v4 string, v2 ``{"value"}``); SAP's HTML logon page says nothing."""
        if response.status_code == 403 and response.headers.get("x-csrf-token", "").lower() == "required":
            return "CSRF token validation failed"
        body = response.json()
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            return ""
        message = error.get("message")
        return str(message.get("value", "")) if isinstance(message, dict) else str(message or "")

    async def _call(self, method: str, url: str, what: str, **kw: Any) -> httpx.Response:
        auth = httpx.BasicAuth(self.creds.username, self.creds.password.get_secret_value())
        headers = {"Accept": "application/json", **kw.pop("headers", {})}
        if self._cookies:  # the session cookies of the CSRF handshake, kept per connector
            headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in self._cookies.items())
        response = await self.send(
            method, url, what, auth=auth, headers=headers, timeout=self.cfg.timeout_seconds, **kw
        )
        self._cookies.update(response.cookies)
        return response

    async def _token(self, entity: str) -> str:
        if self._csrf is None:
            response = await self._call(
                "GET",
                self._url(entity),
                "CSRF token fetch",
                params=self._params({"$top": 0}),
                headers={"X-CSRF-Token": "Fetch"},
            )
            token = response.headers.get("x-csrf-token")
            if not token or token.lower() == "required":
                raise ConnectorError("SAP did not issue a CSRF token", kind=ErrorKind.unavailable)
            self._csrf = token
        return self._csrf

    async def _write(
        self, method: str, entity: str, key: str | None, what: str, body: Any = None
    ) -> httpx.Response:
        token = await self._token(entity)
        headers = {"X-CSRF-Token": token, "Content-Type": "application/json"}
        kw: dict[str, Any] = {"headers": headers, "params": self._params()}
        if body is not None:
            kw["json"] = body
        try:
            return await self._call(method, self._url(entity, key), what, **kw)
        except ConnectorError as exc:
            if exc.status == 403 and "CSRF" in exc.message:
                self._csrf = None  # the retry fetches a fresh token
                raise ConnectorError(
                    f"SAP {what} failed: CSRF token expired", kind=ErrorKind.unavailable, status=403
                ) from None
            raise

    def _rows(self, body: Any) -> tuple[list[dict[str, Any]], str | None]:
        if self.v4:
            return list(body.get("value", [])), body.get("@odata.nextLink")
        d = body.get("d", {})
        return list(d.get("results", [])), d.get("__next")

    def _entity(self, body: Any) -> dict[str, Any]:
        return dict(body if self.v4 else body.get("d", {}))

    def _literal(self, when: datetime) -> str:
        stamp = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return stamp if self.v4 else f"datetimeoffset'{stamp}'"

    async def _read(
        self, entity: str, params: dict[str, Any], what: str
    ) -> tuple[list[dict[str, Any]], str | None]:
        response = await self._call("GET", self._url(entity), what, params=self._params(params))
        return self._rows(self.json_of(response, what))

    async def _find(self, entity: str, field: str, value: str) -> str | None:
        rows, _ = await self._read(entity, {"$filter": f"{field} eq {_quote(value)}", "$top": 1}, "lookup")
        return str(rows[0][KEY_FIELDS[entity]]) if rows else None

    # protocol

    async def test(self) -> None:
        """Read one business partner."""
        await self._read("A_BusinessPartner", {"$top": 1}, "connection test")

    async def run_action(self, name: str, payload: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        """Run one declared action (see ``actions``)."""
        spec, data = self.parse_input(name, payload)
        if isinstance(data, CreateSalesOrderInput):
            ref = data.purchase_order_by_customer or reference(idempotency_key, 35)
            existing = await self._find("A_SalesOrder", "PurchaseOrderByCustomer", ref)
            if existing is not None:
                return self.finish(spec, {"sales_order": existing, "created": False})
            body = {
                **data.fields,
                "SalesOrderType": data.sales_order_type,
                "SalesOrganization": data.sales_organization,
                "DistributionChannel": data.distribution_channel,
                "OrganizationDivision": data.organization_division,
                "SoldToParty": data.sold_to_party,
                "PurchaseOrderByCustomer": ref,
            }
            response = await self._write("POST", "A_SalesOrder", None, "create sales order", body)
            created = self._entity(self.json_of(response, "create sales order"))
            return self.finish(spec, {"sales_order": str(created["SalesOrder"]), "created": True})
        if isinstance(data, DeleteSalesOrderInput):
            try:
                await self._write("DELETE", "A_SalesOrder", data.sales_order, "delete sales order")
            except ConnectorError as exc:
                if exc.kind is not ErrorKind.not_found:
                    raise
            return self.finish(spec, {"sales_order": data.sales_order})
        if isinstance(data, CreateBusinessPartnerInput):
            ref = reference(idempotency_key, 20)
            existing = await self._find("A_BusinessPartner", "BusinessPartnerIDByExtSystem", ref)
            if existing is not None:
                return self.finish(spec, {"business_partner": existing, "created": False})
            body = {
                **data.fields,
                "BusinessPartnerCategory": data.category,
                "BusinessPartnerFullName": data.full_name,
                "BusinessPartnerIDByExtSystem": ref,
            }
            response = await self._write("POST", "A_BusinessPartner", None, "create business partner", body)
            created = self._entity(self.json_of(response, "create business partner"))
            return self.finish(spec, {"business_partner": str(created["BusinessPartner"]), "created": True})
        if isinstance(data, BlockBusinessPartnerInput):
            method = "PATCH" if self.v4 else "MERGE"
            body = {"BusinessPartnerIsBlocked": True}
            await self._write(
                method, "A_BusinessPartner", data.business_partner, "block business partner", body
            )
            return self.finish(spec, {"business_partner": data.business_partner})
        if isinstance(data, UpdateEntityInput):
            method = "PATCH" if self.v4 else "MERGE"
            await self._write(method, data.entity, data.key, f"update {data.entity}", data.fields)
            return self.finish(spec, {"key": data.key})
        if isinstance(data, ReadEntitiesInput):
            return self.finish(spec, await self._read_entities(data))
        assert isinstance(data, RfcCallInput)
        return self.finish(spec, {"result": await self._rfc(data)})

    async def _read_entities(self, data: ReadEntitiesInput) -> dict[str, Any]:
        if data.next_link is not None:
            if not data.next_link.startswith(self.cfg.base_url.rstrip("/") + "/"):
                raise ConnectorError("next_link is not on the configured SAP host", kind=ErrorKind.validation)
            response = await self._call("GET", data.next_link, f"read {data.entity}")
            rows, nxt = self._rows(self.json_of(response, f"read {data.entity}"))
        else:
            params: dict[str, Any] = {}
            if data.filter:
                params["$filter"] = data.filter
            if data.top:
                params["$top"] = data.top
            rows, nxt = await self._read(data.entity, params, f"read {data.entity}")
        for row in rows:
            row.pop("__metadata", None)
        return {"records": rows, "next_link": nxt}

    async def _rfc(self, data: RfcCallInput) -> dict[str, Any]:
        try:
            pyrfc = importlib.import_module("pyrfc")
        except ImportError:
            raise ConnectorError(RFC_HINT, kind=ErrorKind.not_installed) from None
        if not (self.cfg.rfc_ashost and self.cfg.rfc_sysnr and self.cfg.rfc_client):
            raise ConnectorError(
                "set rfc_ashost, rfc_sysnr and rfc_client to make RFC calls", kind=ErrorKind.config
            )

        def call() -> dict[str, Any]:
            conn = pyrfc.Connection(
                ashost=self.cfg.rfc_ashost,
                sysnr=self.cfg.rfc_sysnr,
                client=self.cfg.rfc_client,
                user=self.creds.username,
                passwd=self.creds.password.get_secret_value(),
            )
            try:
                return dict(conn.call(data.function, **data.parameters))
            finally:
                conn.close()

        try:
            return await asyncio.to_thread(call)  # pyrfc blocks
        except Exception as exc:  # pyrfc's error classes only exist when it is installed
            name = type(exc).__name__
            kind = {
                "LogonError": ErrorKind.auth,
                "CommunicationError": ErrorKind.unavailable,
                "ABAPApplicationError": ErrorKind.validation,
                "ABAPRuntimeError": ErrorKind.validation,
            }.get(name, ErrorKind.unavailable)
            raise ConnectorError(f"SAP RFC {data.function} failed: {name}", kind=kind) from None

    async def read_page(self, obj: str, checkpoint: dict[str, Any] | None, page_size: int) -> SyncPage:
        """Sales orders changed after the checkpoint, by (LastChangeDateTime, SalesOrder)."""
        self.check_sync_object(obj)
        key_field = KEY_FIELDS[obj]
        params: dict[str, Any] = {
            "$orderby": f"LastChangeDateTime asc,{key_field} asc",
            "$top": page_size + 1,
        }
        if checkpoint:
            try:
                when = datetime.fromisoformat(str(checkpoint["changed_at"]))
                last = str(checkpoint["key"])
            except (KeyError, ValueError):
                raise ConnectorError("invalid SAP sync checkpoint", kind=ErrorKind.validation) from None
            if not _KEY.match(last):
                raise ConnectorError("invalid SAP sync checkpoint", kind=ErrorKind.validation)
            lit = self._literal(when)
            params["$filter"] = (
                f"LastChangeDateTime gt {lit} or (LastChangeDateTime eq {lit} and {key_field} gt {_quote(last)})"
            )
        rows, _ = await self._read(obj, params, f"sync {obj}")
        has_more = len(rows) > page_size
        records = []
        for row in rows[:page_size]:
            row.pop("__metadata", None)
            changed = parse_odata_datetime(row["LastChangeDateTime"])
            row["LastChangeDateTime"] = changed.isoformat()
            records.append(SyncRecord(external_id=str(row[key_field]), modified_at=changed, data=row))
        next_checkpoint = checkpoint
        if records:
            last_record = records[-1]
            next_checkpoint = {
                "changed_at": last_record.modified_at.isoformat(),
                "key": last_record.external_id,
            }
        return SyncPage(records=records, checkpoint=next_checkpoint, has_more=has_more)


def parse_odata_datetime(value: str) -> datetime:
    """An OData v2 ``/Date(ms+0000)/`` or v4 ISO datetime, as an aware UTC datetime."""
    m = _V2_DATE.match(value)
    if m is not None:
        return datetime.fromtimestamp(int(m.group(1)) / 1000, tz=UTC)
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
