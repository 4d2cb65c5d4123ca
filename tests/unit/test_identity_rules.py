"""Pure identity rules: key material, hashing, minting limits, settings safety."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from core.config import Settings
from core.errors import Forbidden
from core.identity import (
    Permission,
    Principal,
    Role,
    check_can_mint,
    generate_key,
    hash_secret,
    parse_key,
    secret_matches,
)


def principal(role: Role, scopes: tuple[str, ...] | None = None, **kw: object) -> Principal:
    return Principal(tenant_id="t", key_id=uuid.uuid4(), role=role, scopes=scopes, **kw)  # type: ignore[arg-type]


def test_key_roundtrip_and_hash_needs_pepper() -> None:
    material = generate_key()
    assert parse_key(material.full) == (material.prefix, material.secret)
    stored = hash_secret(material.secret, "pepper")
    assert material.secret not in stored
    assert secret_matches(material.secret, stored, "pepper")
    assert not secret_matches(material.secret, stored, "other-pepper")
    assert parse_key("nx_short_x") is None
    assert parse_key("sk-abc") is None


@pytest.mark.parametrize(
    ("minter", "role", "scopes", "allowed"),
    [
        (Role.owner, Role.owner, None, True),
        (Role.admin, Role.owner, None, False),
        (Role.admin, Role.admin, None, True),
        (Role.developer, Role.developer, None, True),
        (Role.developer, Role.admin, None, False),
        (Role.developer, Role.auditor, None, False),
        (Role.developer, Role.viewer, None, True),
        (Role.auditor, Role.viewer, None, False),  # auditors cannot mint keys at all
        (Role.viewer, Role.viewer, None, False),
    ],
)
def test_role_ceiling(minter: Role, role: Role, scopes: list[str] | None, allowed: bool) -> None:
    p = principal(minter)
    if allowed:
        check_can_mint(p, tenant_id="t", role=role, scopes=scopes, expires_at=None)
    else:
        with pytest.raises(Forbidden):
            check_can_mint(p, tenant_id="t", role=role, scopes=scopes, expires_at=None)


def test_scope_ceiling() -> None:
    p = principal(Role.admin, scopes=("models:sim-openai/*", "models:gpt-4o"))
    check_can_mint(p, tenant_id="t", role=Role.viewer, scopes=["models:sim-openai/a"], expires_at=None)
    check_can_mint(p, tenant_id="t", role=Role.viewer, scopes=["models:sim-openai/x*"], expires_at=None)
    check_can_mint(p, tenant_id="t", role=Role.viewer, scopes=["models:gpt-4o"], expires_at=None)
    for bad in (None, ["models:*"], ["models:gpt-4o*"], ["models:sim-*"], ["routes:x"]):
        with pytest.raises(Forbidden):
            check_can_mint(p, tenant_id="t", role=Role.viewer, scopes=bad, expires_at=None)


def test_expiry_and_tenant_ceiling() -> None:
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    p = principal(Role.owner, expires_at=soon)
    check_can_mint(p, tenant_id="t", role=Role.viewer, scopes=None, expires_at=soon)
    with pytest.raises(Forbidden):
        check_can_mint(p, tenant_id="t", role=Role.viewer, scopes=None, expires_at=None)
    with pytest.raises(Forbidden):
        check_can_mint(
            principal(Role.owner), tenant_id="other", role=Role.viewer, scopes=None, expires_at=None
        )
    platform = principal(Role.owner, is_platform=True)
    check_can_mint(platform, tenant_id="other", role=Role.viewer, scopes=None, expires_at=None)
    assert platform.can(Permission.tenants_manage)
    assert not principal(Role.owner).can(Permission.tenants_manage)


def test_prod_settings_refuse_missing_secrets(tmp_path) -> None:
    with pytest.raises(ValueError, match="NEXUS_SECURITY__CODEC_KEYS"):
        Settings(env="prod", home=tmp_path)


def test_dev_secrets_generated_once_and_private(tmp_path) -> None:
    first = Settings(env="dev", home=tmp_path)
    second = Settings(env="dev", home=tmp_path)
    assert first.security.key_pepper == second.security.key_pepper
    assert (tmp_path / "secrets.json").stat().st_mode & 0o077 == 0
    assert "**" in repr(first.security.key_pepper)


def test_env_nested_settings(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("NEXUS_DATABASE__URL", "postgresql+asyncpg://u@db.example:5432/x")
    monkeypatch.setenv("NEXUS_TEMPORAL__ADDRESS", "temporal.example:7233")
    monkeypatch.setenv("NEXUS_PORTS__API", "9001")
    s = Settings(home=tmp_path)
    assert s.database.url.endswith("@db.example:5432/x")
    assert s.temporal.address == "temporal.example:7233"
    assert s.api.public_url == "http://127.0.0.1:9001"
