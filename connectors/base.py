"""The typed protocol every enterprise connector implements.

A connector is a class with:

- ``config_model`` (non-secret settings, including the instance/base URL) and
  ``credentials_model`` (secret fields as ``SecretStr``);
- ``test()``: one cheap authenticated call that raises ``ConnectorError`` on failure;
- ``actions``: named operations with typed input and output models; each declares whether it is
  idempotent, how retries are made safe (idempotency key / external id) and which action undoes
  it (saga compensation), with a function building the undo's input from (input, output);
- ``read_page(obj, checkpoint, page_size)``: incremental sync; the returned checkpoint is small
  JSON that the caller persists after each page, and reading again from it resumes exactly.

Connectors make **zero** retries: every failure is a ``ConnectorError`` whose ``kind`` says
whether Temporal should retry it (``retryable``) and, for throttling, after how long
(``retry_after`` from the vendor's ``Retry-After``). Messages are client-safe: never credentials,
tokens or URLs carrying secrets.

``blocking = True`` (Salesforce, built on the blocking ``simple-salesforce``) means ``test``,
``run_action``, ``read_page`` and ``close`` are plain functions that the caller runs on a thread
pool (a sync Temporal activity); otherwise they are coroutines.
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError


class ErrorKind(StrEnum):
    """Why a connector call failed; decides retryability."""

    auth = "auth"
    permission = "permission"
    not_found = "not_found"
    validation = "validation"
    conflict = "conflict"
    throttled = "throttled"
    unavailable = "unavailable"
    timeout = "timeout"
    config = "config"
    not_installed = "not_installed"


RETRYABLE_KINDS = frozenset({ErrorKind.throttled, ErrorKind.unavailable, ErrorKind.timeout})


class ConnectorError(Exception):
    """A failed connector call, with a client-safe message and its error kind.

    ``retry_after`` (seconds) is set for throttling when the vendor stated a delay;
    ``status`` is the vendor's HTTP status when there was one.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: ErrorKind,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.retry_after = retry_after
        self.status = status

    @property
    def retryable(self) -> bool:
        """True for throttling, unavailability and timeouts; auth/validation fail fast."""
        return self.kind in RETRYABLE_KINDS

    def __repr__(self) -> str:
        return (
            f"ConnectorError({self.message!r}, kind={self.kind.value!r}, "
            f"retry_after={self.retry_after!r}, status={self.status!r})"
        )


class UnknownConnector(ConnectorError, KeyError):
    """``registry.get`` of a type that is not registered (kind ``config``; also a KeyError)."""

    def __init__(self, type_: str) -> None:
        super().__init__(f"unknown connector type {type_!r}", kind=ErrorKind.config)

    def __str__(self) -> str:
        return self.message


class UnknownAction(ConnectorError, KeyError):
    """``run_action`` with a name the connector does not declare (kind ``validation``)."""

    def __init__(self, type_: str, name: str) -> None:
        super().__init__(f"connector {type_!r} has no action {name!r}", kind=ErrorKind.validation)

    def __str__(self) -> str:
        return self.message


CompensationInput = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class ActionSpec:
    """One action a connector offers, with its saga and idempotency contract."""

    name: str
    title: str
    input_model: type[BaseModel]
    output_model: type[BaseModel]
    idempotent: bool
    idempotency: str
    """Human text: how a retry is made safe (e.g. "upsert by external id field X")."""
    compensation: str | None = None
    """Name of the action that undoes this one, or None."""
    compensation_input: CompensationInput | None = None
    """(input, output) of this action -> input of the compensation action."""

    def undo_payload(self, payload: dict[str, Any], output: dict[str, Any]) -> dict[str, Any] | None:
        """Input of the compensating action for a completed call, or None when not compensable."""
        if self.compensation is None or self.compensation_input is None:
            return None
        return self.compensation_input(payload, output)


class SyncRecord(BaseModel):
    """One record read by incremental sync."""

    external_id: str
    modified_at: datetime
    data: dict[str, Any]


class SyncPage(BaseModel):
    """One page of incremental sync.

    ``checkpoint`` is small JSON (cursor, or last modstamp + last id) to persist after the
    page; reading again from it resumes exactly after the last record returned.
    """

    records: list[SyncRecord]
    checkpoint: dict[str, Any] | None
    has_more: bool


class StrictModel(BaseModel):
    """Base for connector config/credentials/action models: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class Connector(ABC):
    """Base class of every connector (see the module docstring for the protocol)."""

    type: ClassVar[str]
    title: ClassVar[str]
    blocking: ClassVar[bool] = False
    config_model: ClassVar[builtins.type[BaseModel]]
    credentials_model: ClassVar[builtins.type[BaseModel]]
    actions: ClassVar[dict[str, ActionSpec]]
    sync_objects: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        config: BaseModel,
        credentials: BaseModel,
        *,
        http: httpx.AsyncClient | None = None,
        verify: bool | str = True,
        egress_allowlist: list[str] | None = None,
    ) -> None:
        self.config = config
        self.credentials = credentials
        self.verify = verify
        # When set, HTTP connections go only to vetted public addresses (or these allowlisted
        # hosts/ranges), resolved once per connection: DNS rebinding cannot reach private networks.
        self.egress_allowlist = egress_allowlist
        self._http = http
        self._owns_http = http is None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} type={self.type!r}>"

    @classmethod
    @abstractmethod
    def hosts(cls, config: BaseModel) -> list[str]:
        """Every base URL this connector will call, validated by the SSRF guard before use."""

    @abstractmethod
    def test(self) -> Any:
        """One authenticated call; raises ``ConnectorError`` (auth, config, ...) on failure.

        A coroutine unless ``blocking``.
        """

    @abstractmethod
    def run_action(self, name: str, payload: dict[str, Any], idempotency_key: str) -> Any:
        """Run one action; returns its output as a dict (validated by its output model).

        A coroutine unless ``blocking``. ``idempotency_key`` is stable across retries of
        the same step, so a create retried after a crash does not create twice.
        """

    @abstractmethod
    def read_page(self, obj: str, checkpoint: dict[str, Any] | None, page_size: int) -> Any:
        """Read one page of ``obj`` changed after ``checkpoint`` (``SyncPage``).

        A coroutine unless ``blocking``.
        """

    @abstractmethod
    def close(self) -> Any:
        """Release clients (a coroutine unless ``blocking``)."""

    # helpers shared by the implementations

    def action(self, name: str) -> ActionSpec:
        """The declared action ``name`` or ``UnknownAction``."""
        try:
            return self.actions[name]
        except KeyError:
            raise UnknownAction(self.type, name) from None

    def parse_input(self, name: str, payload: dict[str, Any]) -> tuple[ActionSpec, BaseModel]:
        """Validate ``payload`` against the action's input model (errors name fields only)."""
        spec = self.action(name)
        try:
            return spec, spec.input_model.model_validate(payload)
        except ValidationError as exc:
            raise ConnectorError(
                f"invalid input for {self.type}.{name}: {validation_summary(exc)}",
                kind=ErrorKind.validation,
            ) from None

    def check_sync_object(self, obj: str) -> None:
        """Refuse an object this connector cannot sync."""
        if obj not in self.sync_objects:
            raise ConnectorError(
                f"connector {self.type!r} cannot sync {obj!r} (supported: {', '.join(self.sync_objects)})",
                kind=ErrorKind.validation,
            )

    @staticmethod
    def finish(spec: ActionSpec, output: BaseModel | dict[str, Any]) -> dict[str, Any]:
        """Validate an action's output against its model and return it as JSON-able dict."""
        model = output if isinstance(output, spec.output_model) else spec.output_model.model_validate(output)
        return model.model_dump(mode="json")


def validation_summary(exc: ValidationError) -> str:
    """Field locations and messages of a pydantic error, never the submitted values."""
    parts = []
    for err in exc.errors(include_input=False, include_url=False)[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)
