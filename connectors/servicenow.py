"""ServiceNow connector: Table API (``/api/now/table/{table}``) over httpx.

- Auth: basic (user + password) or an OAuth bearer token.
- Actions: ``create_incident`` (idempotent: the idempotency key is stored in ``correlation_id``
  and looked up before the insert) ↔ ``cancel_incident`` (state 8, Canceled), ``update_record``,
  ``query`` (encoded query with ``sysparm_limit``/``sysparm_offset`` paging).
- Sync: any of ``sync_objects`` by ``sys_updated_on`` then ``sys_id`` (keyset, so ties and
  records changed while syncing are neither skipped nor repeated).
"""

from __future__ import annotations

import builtins
import re
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

import httpx
from pydantic import BaseModel, Field, SecretStr, model_validator

from connectors.base import ActionSpec, ConnectorError, ErrorKind, StrictModel, SyncPage, SyncRecord
from connectors.http import HttpConnector

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
_TABLE = re.compile(r"^[a-z][a-z0-9_]{0,79}$")
_SYS_ID = re.compile(r"^[0-9a-f]{32}$")
_STAMP = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
CANCELED = "8"


class ServiceNowConfig(StrictModel):
    """Non-secret settings."""

    instance_url: str = Field(description="Instance base URL, e.g. https://example.service-now.com")
    timeout_seconds: float = Field(30.0, gt=0, le=300, description="Per-request timeout.")


class ServiceNowCredentials(StrictModel):
    """Basic-auth user and password, or an OAuth access token."""

    username: str | None = None
    password: SecretStr | None = None
    access_token: SecretStr | None = None

    @model_validator(mode="after")
    def _one_method(self) -> ServiceNowCredentials:
        if self.access_token is None and (self.username is None or self.password is None):
            raise ValueError("give username and password, or access_token")
        return self


TableName = Field(pattern=_TABLE.pattern, description="Table name, e.g. incident")
SysId = Field(pattern=_SYS_ID.pattern, description="32-hex sys_id")


class CreateIncidentInput(StrictModel):
    short_description: str = Field(min_length=1, max_length=160)
    description: str = ""
    urgency: Literal["1", "2", "3"] = "3"
    impact: Literal["1", "2", "3"] = "3"
    category: str | None = None
    caller_id: str | None = None
    assignment_group: str | None = None
    fields: dict[str, str] = Field(default_factory=dict, description="Further incident fields.")


class IncidentOutput(BaseModel):
    sys_id: str
    number: str
    state: str
    created: bool = Field(description="False when an earlier attempt had already created it.")


class CancelIncidentInput(StrictModel):
    sys_id: str = SysId
    close_notes: str = "Canceled by NexusAI compensation"


class UpdateRecordInput(StrictModel):
    table: str = TableName
    sys_id: str = SysId
    fields: dict[str, str] = Field(min_length=1)


class RecordOutput(BaseModel):
    sys_id: str
    record: dict[str, Any]


class QueryInput(StrictModel):
    table: str = TableName
    query: str = Field("", description="Encoded query, e.g. active=true^ORDERBYnumber")
    fields: list[str] = Field(default_factory=list)
    limit: int = Field(100, ge=1, le=10000)
    offset: int = Field(0, ge=0)


class QueryOutput(BaseModel):
    records: list[dict[str, Any]]
    next_offset: int | None
    total: int | None


def _cancel_input(payload: dict[str, Any], output: dict[str, Any]) -> dict[str, Any]:
    return {"sys_id": output["sys_id"]}


class ServiceNowConnector(HttpConnector):
    """ServiceNow Table API."""

    type: ClassVar[str] = "servicenow"
    title: ClassVar[str] = "ServiceNow"
    config_model: ClassVar[builtins.type[BaseModel]] = ServiceNowConfig
    credentials_model: ClassVar[builtins.type[BaseModel]] = ServiceNowCredentials
    sync_objects: ClassVar[tuple[str, ...]] = ("incident", "change_request", "problem")
    actions: ClassVar[dict[str, ActionSpec]] = {
        "create_incident": ActionSpec(
            name="create_incident",
            title="Create incident",
            input_model=CreateIncidentInput,
            output_model=IncidentOutput,
            idempotent=True,
            idempotency="Idempotency key stored in correlation_id; an incident with that "
            "correlation_id is looked up before the insert and returned instead",
            compensation="cancel_incident",
            compensation_input=_cancel_input,
        ),
        "cancel_incident": ActionSpec(
            name="cancel_incident",
            title="Cancel incident (state 8)",
            input_model=CancelIncidentInput,
            output_model=IncidentOutput,
            idempotent=True,
            idempotency="Setting state=8 (Canceled) again is a no-op",
        ),
        "update_record": ActionSpec(
            name="update_record",
            title="Update record",
            input_model=UpdateRecordInput,
            output_model=RecordOutput,
            idempotent=True,
            idempotency="PATCH sets the same field values on every attempt",
        ),
        "query": ActionSpec(
            name="query",
            title="Query table",
            input_model=QueryInput,
            output_model=QueryOutput,
            idempotent=True,
            idempotency="Read-only",
        ),
    }

    @property
    def cfg(self) -> ServiceNowConfig:
        assert isinstance(self.config, ServiceNowConfig)
        return self.config

    @property
    def creds(self) -> ServiceNowCredentials:
        assert isinstance(self.credentials, ServiceNowCredentials)
        return self.credentials

    @classmethod
    def hosts(cls, config: BaseModel) -> list[str]:
        """The instance URL."""
        assert isinstance(config, ServiceNowConfig)
        return [config.instance_url]

    def _url(self, table: str, sys_id: str | None = None) -> str:
        base = self.cfg.instance_url.rstrip("/") + f"/api/now/table/{table}"
        return f"{base}/{sys_id}" if sys_id else base

    def _headers(self) -> dict[str, str]:
        return {"Accept": "application/json", "Content-Type": "application/json"}

    def _auth(self) -> dict[str, Any]:
        if self.creds.access_token is not None:
            return {
                "headers": {
                    **self._headers(),
                    "Authorization": f"Bearer {self.creds.access_token.get_secret_value()}",
                }
            }
        assert self.creds.username is not None
        assert self.creds.password is not None
        return {
            "headers": self._headers(),
            "auth": httpx.BasicAuth(self.creds.username, self.creds.password.get_secret_value()),
        }

    def vendor_message(self, response: httpx.Response) -> str:
        """``error.message`` of a ServiceNow failure body."""
        body = response.json()
        error = body.get("error") if isinstance(body, dict) else None
        return str(error.get("message", "")) if isinstance(error, dict) else ""

    async def _call(self, method: str, url: str, what: str, **kw: Any) -> Any:
        response = await self.send(method, url, what, timeout=self.cfg.timeout_seconds, **self._auth(), **kw)
        if response.status_code == 204:
            return None
        return self.json_of(response, what)

    async def _list(
        self, table: str, query: str, limit: int, offset: int = 0, fields: list[str] | None = None
    ) -> tuple[list[dict[str, Any]], bool, int | None]:
        params: dict[str, Any] = {"sysparm_query": query, "sysparm_limit": limit, "sysparm_offset": offset}
        if fields:
            params["sysparm_fields"] = ",".join(fields)
        response = await self.send(
            "GET",
            self._url(table),
            f"query {table}",
            params=params,
            timeout=self.cfg.timeout_seconds,
            **self._auth(),
        )
        records = self.json_of(response, f"query {table}").get("result", [])
        link = response.headers.get("Link")
        has_more = 'rel="next"' in link if link is not None else len(records) >= limit
        total_header = response.headers.get("X-Total-Count")
        total = int(total_header) if total_header and total_header.isdigit() else None
        return records, has_more, total

    async def test(self) -> None:
        """Read one incident (needs read access to the incident table)."""
        await self._list("incident", "", 1)

    async def run_action(self, name: str, payload: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        """Run one declared action (see ``actions``)."""
        spec, data = self.parse_input(name, payload)
        if isinstance(data, CreateIncidentInput):
            return self.finish(spec, await self._create_incident(data, idempotency_key))
        if isinstance(data, CancelIncidentInput):
            body = {"state": CANCELED, "close_notes": data.close_notes, "close_code": "Canceled"}
            record = (
                await self._call("PATCH", self._url("incident", data.sys_id), "cancel incident", json=body)
            )["result"]
            return self.finish(spec, {**_incident(record), "created": False})
        if isinstance(data, UpdateRecordInput):
            url = self._url(data.table, data.sys_id)
            record = (await self._call("PATCH", url, f"update {data.table}", json=data.fields))["result"]
            return self.finish(spec, {"sys_id": record["sys_id"], "record": record})
        assert isinstance(data, QueryInput)
        records, has_more, total = await self._list(
            data.table, data.query, data.limit, data.offset, data.fields
        )
        next_offset = data.offset + len(records) if has_more else None
        return self.finish(spec, {"records": records, "next_offset": next_offset, "total": total})

    async def _create_incident(self, data: CreateIncidentInput, idempotency_key: str) -> dict[str, Any]:
        key = idempotency_key.replace("^", "")[:100]
        found, _, _ = await self._list(
            "incident", f"correlation_id={key}", 1, fields=["sys_id", "number", "state"]
        )
        if found:
            return {**_incident(found[0]), "created": False}
        body: dict[str, str] = {
            **data.fields,
            "short_description": data.short_description,
            "description": data.description,
            "urgency": data.urgency,
            "impact": data.impact,
            "correlation_id": key,
        }
        for field in ("category", "caller_id", "assignment_group"):
            value = getattr(data, field)
            if value is not None:
                body[field] = value
        record = (await self._call("POST", self._url("incident"), "create incident", json=body))["result"]
        return {**_incident(record), "created": True}

    async def read_page(self, obj: str, checkpoint: dict[str, Any] | None, page_size: int) -> SyncPage:
        """Records of table ``obj`` changed after the checkpoint, ordered by (sys_updated_on, sys_id)."""
        self.check_sync_object(obj)
        order = "ORDERBYsys_updated_on^ORDERBYsys_id"
        if checkpoint:
            stamp, last_id = str(checkpoint.get("updated_on", "")), str(checkpoint.get("sys_id", ""))
            if not _STAMP.match(stamp) or not _SYS_ID.match(last_id):
                raise ConnectorError("invalid ServiceNow sync checkpoint", kind=ErrorKind.validation)
            query = f"sys_updated_on>{stamp}^NQsys_updated_on={stamp}^sys_id>{last_id}^{order}"
        else:
            query = order
        records, has_more, _ = await self._list(obj, query, page_size)
        out = [
            SyncRecord(external_id=r["sys_id"], modified_at=_parse_time(r["sys_updated_on"]), data=r)
            for r in records
        ]
        next_checkpoint = checkpoint
        if records:
            next_checkpoint = {"updated_on": records[-1]["sys_updated_on"], "sys_id": records[-1]["sys_id"]}
        return SyncPage(records=out, checkpoint=next_checkpoint, has_more=has_more and bool(records))


def _incident(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "sys_id": record["sys_id"],
        "number": record.get("number", ""),
        "state": str(record.get("state", "")),
    }


def _parse_time(value: str) -> datetime:
    return datetime.strptime(value, TIME_FORMAT).replace(tzinfo=UTC)
