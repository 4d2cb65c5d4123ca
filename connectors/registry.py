"""Registry of connector types: discovery (``GET /v1/connectors``), building and host checks.

``get`` of an unknown type raises ``UnknownConnector``, which is both a ``ConnectorError``
(kind ``config``) and a ``KeyError``.
"""

from __future__ import annotations

import importlib
import json
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError

from connectors.base import Connector, ConnectorError, ErrorKind, UnknownConnector, validation_summary
from core.pipelines.ssrf import UrlRefused, check_resolved

# module, class name — imported lazily so `import connectors.registry` stays cheap
_CONNECTORS: tuple[tuple[str, str], ...] = (
    ("connectors.salesforce", "SalesforceConnector"),
    ("connectors.sap", "SapConnector"),
    ("connectors.servicenow", "ServiceNowConnector"),
    ("connectors.m365", "M365Connector"),
)

CERTIFICATION_FILE = Path(__file__).with_name("certification.json")


@cache
def connector_types() -> list[type[Connector]]:
    """Every registered connector class, in a stable order."""
    types: list[type[Connector]] = []
    for module_name, class_name in _CONNECTORS:
        cls = getattr(importlib.import_module(module_name), class_name)
        assert issubclass(cls, Connector)
        types.append(cls)
    return types


def get(type_: str) -> type[Connector]:
    """The connector class registered as ``type_``, or ``UnknownConnector``."""
    for cls in connector_types():
        if cls.type == type_:
            return cls
    raise UnknownConnector(type_)


def load_certification() -> dict[str, Any]:
    """The committed conformance results (``connectors/certification.json``), or {}."""
    try:
        data: dict[str, Any] = json.loads(CERTIFICATION_FILE.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    return data


def secret_fields(model: type[BaseModel]) -> list[str]:
    """Names of the fields of a credentials model (values are never described)."""
    return list(model.model_fields)


def _is_secret(model: type[BaseModel], field: str) -> bool:
    annotation = model.model_fields[field].annotation
    return annotation is SecretStr or "SecretStr" in repr(annotation)


def describe() -> list[dict[str, Any]]:
    """JSON description of every connector for ``GET /v1/connectors``.

    Includes config JSON schema, credential field names (never values), actions with their
    idempotency/compensation contract and input/output schemas, sync objects and the
    conformance-suite results per check (``certification``).
    """
    certification = load_certification().get("connectors", {})
    out: list[dict[str, Any]] = []
    for cls in connector_types():
        cert = certification.get(cls.type)
        out.append(
            {
                "type": cls.type,
                "title": cls.title,
                "blocking": cls.blocking,
                "config_schema": cls.config_model.model_json_schema(),
                "credential_fields": [
                    {"name": name, "secret": _is_secret(cls.credentials_model, name)}
                    for name in cls.credentials_model.model_fields
                ],
                "actions": [
                    {
                        "name": spec.name,
                        "title": spec.title,
                        "idempotent": spec.idempotent,
                        "idempotency": spec.idempotency,
                        "compensation": spec.compensation,
                        "input_schema": spec.input_model.model_json_schema(),
                        "output_schema": spec.output_model.model_json_schema(),
                    }
                    for spec in cls.actions.values()
                ],
                "sync_objects": list(cls.sync_objects),
                "certification": cert
                if cert is not None
                else {"certified": False, "checks": {}, "note": "conformance suite not run"},
            }
        )
    return out


async def check_hosts(
    cls: type[Connector],
    config: BaseModel,
    *,
    allow_private: bool,
    allowed_hosts: list[str],
) -> None:
    """Refuse a configuration whose hosts are private, loopback or link-local (SSRF guard).

    ``allow_private`` (operator setting) lets every host through; ``allowed_hosts`` lists host
    names, addresses or CIDR ranges allowed even when private. Raises ``ConnectorError(config)``.
    """
    for url in cls.hosts(config):
        if allow_private:
            continue
        try:
            await check_resolved(url, allowed_hosts)
        except UrlRefused as exc:
            raise ConnectorError(f"{cls.type} host refused: {exc}", kind=ErrorKind.config) from None


def build(type_: str, config: dict[str, Any], credentials: dict[str, Any], **kw: Any) -> Connector:
    """Validate config and credentials for ``type_`` and build the connector.

    Validation errors name the field (``config.instance_url: ...``) and never echo values.
    ``kw`` passes through to the constructor (``http=``, ``verify=``).
    """
    cls = get(type_)
    try:
        config_obj = cls.config_model.model_validate(config)
    except ValidationError as exc:
        raise ConnectorError(
            f"invalid {type_} config: {validation_summary(exc)}", kind=ErrorKind.config
        ) from None
    try:
        credentials_obj = cls.credentials_model.model_validate(credentials)
    except ValidationError as exc:
        raise ConnectorError(
            f"invalid {type_} credentials: {validation_summary(exc)}", kind=ErrorKind.config
        ) from None
    return cls(config_obj, credentials_obj, **kw)
