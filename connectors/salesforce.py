"""Salesforce connector through ``simple-salesforce`` (blocking: run on a thread pool).

- Auth: an OAuth access token (session id) + instance URL, or an OAuth token obtained from
  ``login_url`` with the client-credentials or username-password flow. The token request is
  made here (not by simple-salesforce, whose login always targets ``*.salesforce.com``), so
  the login host is configurable and checked like every other host.
- The ``requests.Session`` has ``trust_env=False`` (this machine's ``REQUESTS_CA_BUNDLE`` would
  otherwise override ``verify``) and a default timeout. With an egress allowlist (the
  connection store always gives one unless the operator allows private hosts) every connection
  of the session, the token request included, goes only to vetted addresses, resolved once per
  connection (``core.pipelines.ssrf_requests``): a login or instance host that re-resolves to a
  private address after the create-time check is refused. simple-salesforce is used in "direct"
  mode, where it never re-logs in or retries: every failure surfaces once, mapped to a
  ``ConnectorError`` (``Retry-After`` is read from the response by a session hook).
- Actions: ``create_case`` (upsert by the ``Nexus_Idempotency_Key__c`` external id) ↔
  ``close_case``; ``upsert_record`` by external id; ``update_record``; ``delete_record``;
  ``query`` (SOQL, paginated through ``nextRecordsUrl``).
- Sync: ``SystemModstamp`` then ``Id`` keyset (``LIMIT page_size + 1`` tells whether more follow).
"""

from __future__ import annotations

import builtins
import re
import threading
from datetime import datetime
from typing import Any, ClassVar, cast
from urllib.parse import quote, urlsplit

import requests
from pydantic import BaseModel, Field, SecretStr, model_validator
from simple_salesforce.api import Salesforce, SFType
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceError,
    SalesforceExpiredSession,
    SalesforceMalformedRequest,
    SalesforceMoreThanOneRecord,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from connectors.base import (
    ActionSpec,
    Connector,
    ConnectorError,
    ErrorKind,
    StrictModel,
    SyncPage,
    SyncRecord,
)
from connectors.http import clip, kind_for_status, parse_retry_after
from core.pipelines.ssrf import UrlRefused
from core.pipelines.ssrf_requests import guard_session

IDEMPOTENCY_FIELD = "Nexus_Idempotency_Key__c"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,79}$")
_ID = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")
_STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{3})?(?:Z|[+-]\d{4})$")
SYNC_FIELDS: dict[str, tuple[str, ...]] = {
    "Case": ("Id", "CaseNumber", "Subject", "Status", "Priority", "CreatedDate", "SystemModstamp"),
    "Account": ("Id", "Name", "CreatedDate", "SystemModstamp"),
}


class SalesforceConfig(StrictModel):
    """Non-secret settings."""

    # https only: the token request carries the client secret and password, every call the token.
    instance_url: str | None = Field(
        None, pattern=r"^https://", description="https://yourorg.my.salesforce.com (with access_token)"
    )
    login_url: str = Field(
        "https://login.salesforce.com", pattern=r"^https://", description="OAuth token endpoint host (https)"
    )
    api_version: str = Field("59.0", pattern=r"^\d{2,3}\.0$")
    timeout_seconds: float = Field(30.0, gt=0, le=300)


class SalesforceCredentials(StrictModel):
    """An access token, or a connected app (client id/secret) with optional user credentials."""

    access_token: SecretStr | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    security_token: SecretStr | None = None

    @model_validator(mode="after")
    def _one_flow(self) -> SalesforceCredentials:
        if self.access_token is None and (self.client_id is None or self.client_secret is None):
            raise ValueError("give access_token, or client_id and client_secret")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        return self


SObject = Field(pattern=_NAME.pattern, description="sObject API name, e.g. Case")
RecordId = Field(pattern=_ID.pattern, description="15/18-character record id")


class CreateCaseInput(StrictModel):
    subject: str = Field(min_length=1, max_length=255)
    description: str = ""
    priority: str = "Medium"
    origin: str | None = None
    fields: dict[str, Any] = Field(default_factory=dict)


class CaseOutput(BaseModel):
    id: str
    created: bool


class CloseCaseInput(StrictModel):
    id: str = RecordId
    status: str = "Closed"


class UpsertRecordInput(StrictModel):
    sobject: str = SObject
    external_id_field: str = Field(pattern=_NAME.pattern)
    external_id: str = Field(min_length=1, max_length=255)
    fields: dict[str, Any]


class UpdateRecordInput(StrictModel):
    sobject: str = SObject
    id: str = RecordId
    fields: dict[str, Any] = Field(min_length=1)


class DeleteRecordInput(StrictModel):
    sobject: str = SObject
    id: str = RecordId


class RecordOutput(BaseModel):
    id: str
    created: bool = False


class QueryInput(StrictModel):
    soql: str | None = Field(None, description="SOQL; omit when continuing with next_records_url")
    next_records_url: str | None = Field(None, pattern=r"^/services/data/v\d+\.0/query/[\w-]+$")

    @model_validator(mode="after")
    def _one(self) -> QueryInput:
        if (self.soql is None) == (self.next_records_url is None):
            raise ValueError("give soql or next_records_url")
        return self


class QueryOutput(BaseModel):
    records: list[dict[str, Any]]
    total_size: int
    done: bool
    next_records_url: str | None


def _close_input(payload: dict[str, Any], output: dict[str, Any]) -> dict[str, Any]:
    return {"id": output["id"]}


class _Session(requests.Session):
    """``trust_env=False``, a default timeout, and the last ``Retry-After`` seen per thread."""

    def __init__(self, verify: bool | str, timeout: float) -> None:
        super().__init__()
        self.trust_env = False
        self.verify = verify
        self.default_timeout = timeout
        self.last = threading.local()
        self.hooks["response"].append(self._remember)

    def _remember(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.last.retry_after = parse_retry_after(response.headers.get("Retry-After"))

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        kwargs.setdefault("timeout", self.default_timeout)
        self.last.retry_after = None
        return super().request(method, url, *args, **kwargs)


class SalesforceConnector(Connector):
    """Salesforce REST API via simple-salesforce (blocking)."""

    type: ClassVar[str] = "salesforce"
    title: ClassVar[str] = "Salesforce"
    blocking: ClassVar[bool] = True
    config_model: ClassVar[builtins.type[BaseModel]] = SalesforceConfig
    credentials_model: ClassVar[builtins.type[BaseModel]] = SalesforceCredentials
    sync_objects: ClassVar[tuple[str, ...]] = tuple(SYNC_FIELDS)
    actions: ClassVar[dict[str, ActionSpec]] = {
        "create_case": ActionSpec(
            name="create_case",
            title="Create case",
            input_model=CreateCaseInput,
            output_model=CaseOutput,
            idempotent=True,
            idempotency=f"Upsert by the external id field {IDEMPOTENCY_FIELD} = idempotency key",
            compensation="close_case",
            compensation_input=_close_input,
        ),
        "close_case": ActionSpec(
            name="close_case",
            title="Close case",
            input_model=CloseCaseInput,
            output_model=RecordOutput,
            idempotent=True,
            idempotency="Setting Status again is a no-op",
        ),
        "upsert_record": ActionSpec(
            name="upsert_record",
            title="Upsert record by external id",
            input_model=UpsertRecordInput,
            output_model=RecordOutput,
            idempotent=True,
            idempotency="Upsert by the given external id field",
        ),
        "update_record": ActionSpec(
            name="update_record",
            title="Update record",
            input_model=UpdateRecordInput,
            output_model=RecordOutput,
            idempotent=True,
            idempotency="PATCH sets the same values on every attempt",
        ),
        "delete_record": ActionSpec(
            name="delete_record",
            title="Delete record",
            input_model=DeleteRecordInput,
            output_model=RecordOutput,
            idempotent=True,
            idempotency="A retry after a delete that succeeded finds NOT_FOUND and reports success",
        ),
        "query": ActionSpec(
            name="query",
            title="SOQL query (one page)",
            input_model=QueryInput,
            output_model=QueryOutput,
            idempotent=True,
            idempotency="Read-only",
        ),
    }

    def __init__(self, config: BaseModel, credentials: BaseModel, **kw: Any) -> None:
        super().__init__(config, credentials, **kw)
        assert isinstance(config, SalesforceConfig)
        assert isinstance(credentials, SalesforceCredentials)
        self.cfg, self.creds = config, credentials
        if credentials.access_token is not None and config.instance_url is None:
            raise ConnectorError(
                "Salesforce config needs instance_url with access_token", kind=ErrorKind.config
            )
        self._session = _Session(self.verify, config.timeout_seconds)
        if self.egress_allowlist is not None:
            guard_session(self._session, self.egress_allowlist)
        self._sf: Salesforce | None = None

    @classmethod
    def hosts(cls, config: BaseModel) -> list[str]:
        """The instance URL (when configured) and the login URL."""
        assert isinstance(config, SalesforceConfig)
        return [u for u in (config.instance_url, config.login_url) if u]

    # client and error mapping

    def _token(self) -> tuple[str, str]:
        creds = self.creds
        assert creds.client_id is not None
        assert creds.client_secret is not None
        data = {"client_id": creds.client_id, "client_secret": creds.client_secret.get_secret_value()}
        if creds.username is not None and creds.password is not None:
            token = creds.security_token.get_secret_value() if creds.security_token else ""
            data |= {"grant_type": "password", "username": creds.username}
            data["password"] = creds.password.get_secret_value() + token
        else:
            data["grant_type"] = "client_credentials"
        url = self.cfg.login_url.rstrip("/") + "/services/oauth2/token"
        response = self._guard("login", lambda: self._session.post(url, data=data, allow_redirects=False))
        if response.status_code != 200:
            try:
                body = response.json()
            except ValueError:
                body = None
            detail = ""
            if isinstance(body, dict):
                detail = f"{body.get('error', '')}: {body.get('error_description', '')}"
            kind = (
                ErrorKind.auth
                if response.status_code in (400, 401)
                else kind_for_status(response.status_code)
            )
            raise ConnectorError(
                f"Salesforce login failed: HTTP {response.status_code} {clip(detail)}".strip(),
                kind=kind,
                status=response.status_code,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        body = response.json()
        instance = self.cfg.instance_url or body["instance_url"]
        if self.cfg.instance_url is None and urlsplit(instance).scheme != "https":
            raise ConnectorError("Salesforce login returned a non-https instance URL", kind=ErrorKind.config)
        return str(body["access_token"]), instance

    @property
    def sf(self) -> Salesforce:
        """The simple-salesforce client (logging in on first use)."""
        if self._sf is None:
            if self.creds.access_token is not None:
                token, instance = self.creds.access_token.get_secret_value(), self.cfg.instance_url
            else:
                token, instance = self._token()
            self._sf = Salesforce(
                instance_url=instance, session_id=token, session=self._session, version=self.cfg.api_version
            )
        return self._sf

    def _guard(self, what: str, fn: Any) -> Any:
        """Run ``fn`` and map simple-salesforce / requests failures to ``ConnectorError``."""
        try:
            return fn()
        except SalesforceError as exc:
            raise self._map(exc, what) from None
        except UrlRefused as exc:  # a connection resolved to a refused address (e.g. DNS rebinding)
            raise ConnectorError(f"Salesforce {what} refused: {exc}", kind=ErrorKind.config) from None
        except requests.exceptions.SSLError:
            raise ConnectorError(
                f"Salesforce {what} failed: TLS verification failed", kind=ErrorKind.config
            ) from None
        except requests.Timeout:
            raise ConnectorError(f"Salesforce {what} timed out", kind=ErrorKind.timeout) from None
        except requests.ConnectionError:
            raise ConnectorError(
                f"Salesforce {what} failed: cannot connect", kind=ErrorKind.unavailable
            ) from None

    def _map(self, exc: SalesforceError, what: str) -> ConnectorError:
        status = int(exc.status)
        content = exc.content
        code = message = ""
        if isinstance(content, list) and content and isinstance(content[0], dict):
            code, message = str(content[0].get("errorCode", "")), str(content[0].get("message", ""))
        retry_after = getattr(self._session.last, "retry_after", None)
        if isinstance(exc, SalesforceAuthenticationFailed | SalesforceExpiredSession):
            self._sf = None  # a fresh token is fetched on the next attempt
            kind = ErrorKind.auth
        elif isinstance(exc, SalesforceRefusedRequest):
            kind = ErrorKind.throttled if code == "REQUEST_LIMIT_EXCEEDED" else ErrorKind.permission
        elif isinstance(exc, SalesforceResourceNotFound):
            kind = ErrorKind.not_found
        elif isinstance(exc, SalesforceMoreThanOneRecord):
            kind, message = ErrorKind.conflict, "more than one record matches the external id"
        elif isinstance(exc, SalesforceMalformedRequest):
            kind = ErrorKind.conflict if code == "DUPLICATE_VALUE" else ErrorKind.validation
        else:  # SalesforceGeneralError: 429, 5xx, anything else
            kind = kind_for_status(status)
        text = f"Salesforce {what} failed: HTTP {status}"
        if code or message:
            text += f" {code}: {clip(message)}".rstrip(": ")
        if kind is ErrorKind.throttled and retry_after is not None:
            text += f" (retry after {retry_after:g}s)"
        return ConnectorError(text, kind=kind, status=status, retry_after=retry_after)

    def _sobject(self, name: str) -> SFType:
        return cast(SFType, getattr(self.sf, name))

    # protocol

    def test(self) -> None:
        """Log in (if needed) and read the REST resource directory."""
        self._guard("connection test", lambda: self.sf.restful(""))

    def close(self) -> None:
        """Close the HTTP session."""
        self._session.close()

    def run_action(self, name: str, payload: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        """Run one declared action (see ``actions``)."""
        spec, data = self.parse_input(name, payload)
        if isinstance(data, CreateCaseInput):
            fields = {
                **data.fields,
                "Subject": data.subject,
                "Description": data.description,
                "Priority": data.priority,
            }
            if data.origin is not None:
                fields["Origin"] = data.origin
            out = self._upsert("Case", IDEMPOTENCY_FIELD, idempotency_key, fields, "create case")
            return self.finish(spec, out)
        if isinstance(data, CloseCaseInput):
            self._guard("close case", lambda: self._sobject("Case").update(data.id, {"Status": data.status}))
            return self.finish(spec, {"id": data.id})
        if isinstance(data, UpsertRecordInput):
            out = self._upsert(data.sobject, data.external_id_field, data.external_id, data.fields, "upsert")
            return self.finish(spec, out)
        if isinstance(data, UpdateRecordInput):
            sobject = self._sobject(data.sobject)
            self._guard(f"update {data.sobject}", lambda: sobject.update(data.id, data.fields))
            return self.finish(spec, {"id": data.id})
        if isinstance(data, DeleteRecordInput):
            sobject = self._sobject(data.sobject)
            try:
                self._guard(f"delete {data.sobject}", lambda: sobject.delete(data.id))
            except ConnectorError as exc:
                if exc.kind is not ErrorKind.not_found:
                    raise
            return self.finish(spec, {"id": data.id})
        assert isinstance(data, QueryInput)
        if data.soql is not None:
            soql = data.soql
            result = self._guard("query", lambda: self.sf.query(soql))
        else:
            url = data.next_records_url
            assert url is not None
            result = self._guard("query", lambda: self.sf.query_more(url, identifier_is_url=True))
        return self.finish(
            spec,
            {
                "records": result.get("records", []),
                "total_size": result.get("totalSize", 0),
                "done": bool(result.get("done", True)),
                "next_records_url": result.get("nextRecordsUrl"),
            },
        )

    def _upsert(
        self, sobject: str, field: str, value: str, fields: dict[str, Any], what: str
    ) -> dict[str, Any]:
        target = self._sobject(sobject)
        record = f"{field}/{quote(value, safe='')}"
        response = self._guard(what, lambda: target.upsert(record, fields, raw_response=True))
        body = response.json() if response.content else {}
        return {"id": body.get("id", ""), "created": response.status_code == 201}

    def read_page(self, obj: str, checkpoint: dict[str, Any] | None, page_size: int) -> SyncPage:
        """Records of ``obj`` changed after the checkpoint, by (SystemModstamp, Id)."""
        self.check_sync_object(obj)
        where = ""
        if checkpoint:
            stamp, last_id = str(checkpoint.get("modstamp", "")), str(checkpoint.get("id", ""))
            if not _STAMP.match(stamp) or not _ID.match(last_id):
                raise ConnectorError("invalid Salesforce sync checkpoint", kind=ErrorKind.validation)
            literal = _soql_datetime(stamp)
            where = f" WHERE SystemModstamp > {literal} OR (SystemModstamp = {literal} AND Id > '{last_id}')"
        soql = (
            f"SELECT {', '.join(SYNC_FIELDS[obj])} FROM {obj}{where} "
            f"ORDER BY SystemModstamp ASC, Id ASC LIMIT {page_size + 1}"
        )
        result = self._guard(f"sync {obj}", lambda: self.sf.query(soql))
        rows = [{k: v for k, v in r.items() if k != "attributes"} for r in result.get("records", [])]
        has_more = len(rows) > page_size
        rows = rows[:page_size]
        records = [
            SyncRecord(external_id=r["Id"], modified_at=_parse_stamp(r["SystemModstamp"]), data=r)
            for r in rows
        ]
        next_checkpoint = checkpoint
        if rows:
            next_checkpoint = {"modstamp": rows[-1]["SystemModstamp"], "id": rows[-1]["Id"]}
        return SyncPage(records=records, checkpoint=next_checkpoint, has_more=has_more)


def _parse_stamp(value: str) -> datetime:
    value = value.replace("Z", "+0000")
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z")


def _soql_datetime(stamp: str) -> str:
    """A SOQL datetime literal in UTC (``2024-01-01T00:00:00.000Z``)."""
    return (
        _parse_stamp(stamp if "." in stamp else stamp[:19] + ".000" + stamp[19:]).strftime(
            "%Y-%m-%dT%H:%M:%S.%f"
        )[:-3]
        + "Z"
    )
