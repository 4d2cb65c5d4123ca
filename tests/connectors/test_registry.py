"""Registry: discovery output, building with validation, and the outbound host guard."""

from __future__ import annotations

import json

import pytest

from connectors import registry
from connectors.base import ConnectorError, ErrorKind, UnknownConnector


def test_describe_lists_four_connectors_with_actions_and_certification() -> None:
    described = {d["type"]: d for d in registry.describe()}
    assert set(described) == {"salesforce", "sap", "servicenow", "m365"}
    sf = described["salesforce"]
    assert sf["blocking"] is True
    actions = {a["name"]: a for a in sf["actions"]}
    assert actions["create_case"]["compensation"] == "close_case"
    assert actions["create_case"]["idempotent"] is True
    assert "Nexus_Idempotency_Key__c" in actions["create_case"]["idempotency"]
    assert actions["upsert_record"]["input_schema"]["type"] == "object"
    assert {"name": "client_secret", "secret": True} in sf["credential_fields"]
    assert described["servicenow"]["sync_objects"][0] == "incident"
    for d in described.values():
        assert d["certification"]["certified"] is True
        assert set(d["certification"]["checks"]) == set(
            json.loads(registry.CERTIFICATION_FILE.read_text())["checks"]
        )
    json.dumps(list(described.values()))  # JSON-serialisable as GET /v1/connectors answers it


def test_every_compensation_names_a_declared_action() -> None:
    for cls in registry.connector_types():
        for spec in cls.actions.values():
            if spec.compensation is not None:
                assert spec.compensation in cls.actions
                assert spec.compensation_input is not None


def test_unknown_type_is_config_error_and_key_error() -> None:
    with pytest.raises(UnknownConnector) as info:
        registry.get("oracle")
    assert isinstance(info.value, KeyError)
    assert info.value.kind is ErrorKind.config
    assert "oracle" in str(info.value)


def test_build_errors_name_fields_never_values() -> None:
    with pytest.raises(ConnectorError) as info:
        registry.build(
            "servicenow", {"instance_url": "https://x.service-now.com"}, {"password": "hunter2-secret"}
        )
    assert info.value.kind is ErrorKind.config
    assert "hunter2" not in str(info.value)
    with pytest.raises(ConnectorError) as info:
        registry.build(
            "m365", {"tenant_id": "t", "bogus": "zzz-value"}, {"client_id": "a", "client_secret": "b"}
        )
    assert "bogus" in str(info.value)
    assert "zzz-value" not in str(info.value)


def test_connector_repr_hides_credentials() -> None:
    conn = registry.build(
        "sap", {"base_url": "https://s4.example.com"}, {"username": "U", "password": "very-secret-pw"}
    )
    assert "very-secret-pw" not in repr(conn)
    assert "very-secret-pw" not in repr(conn.credentials)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080", "http://169.254.169.254", "http://10.1.2.3", "http://localhost:9"]
)
async def test_check_hosts_refuses_private_targets(url: str) -> None:
    cls = registry.get("servicenow")
    config = cls.config_model.model_validate({"instance_url": url})
    with pytest.raises(ConnectorError) as info:
        await registry.check_hosts(cls, config, allow_private=False, allowed_hosts=[])
    assert info.value.kind is ErrorKind.config


async def test_check_hosts_allows_operator_exceptions() -> None:
    cls = registry.get("m365")
    config = cls.config_model.model_validate(
        {"tenant_id": "t", "authority_url": "http://127.0.0.1:1", "graph_url": "http://127.0.0.1:2"}
    )
    await registry.check_hosts(cls, config, allow_private=True, allowed_hosts=[])
    await registry.check_hosts(cls, config, allow_private=False, allowed_hosts=["127.0.0.1"])
    with pytest.raises(ConnectorError):
        await registry.check_hosts(cls, config, allow_private=False, allowed_hosts=[])
