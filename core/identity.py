"""Identity: roles, permissions, API key material and the rules for minting keys.

A key looks like ``nx_<prefix>_<secret>``. Only ``HMAC-SHA256(pepper, secret)`` is stored;
the prefix is the lookup handle. A key can never mint a key with more rights than its own.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass, field
from enum import StrEnum

from core.errors import Forbidden


class Role(StrEnum):
    owner = "owner"
    admin = "admin"
    developer = "developer"
    approver = "approver"
    viewer = "viewer"
    auditor = "auditor"


class Permission(StrEnum):
    tenants_manage = "tenants:manage"  # platform tenant only: create/list other tenants
    users_read = "users:read"
    users_write = "users:write"
    keys_read = "keys:read"
    keys_write = "keys:write"
    runs_read = "runs:read"
    runs_write = "runs:write"
    audit_read = "audit:read"
    approvals_decide = "approvals:decide"
    codec = "codec:use"
    tenant_settings = "tenant:settings"  # budgets, gateway limits, content logging
    connections_manage = "connections:manage"  # connector connections (credentials) and sync jobs


_ALL = frozenset(Permission)
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.owner: _ALL,
    Role.admin: _ALL,
    Role.developer: frozenset(
        {
            Permission.users_read,
            Permission.keys_read,
            Permission.keys_write,
            Permission.runs_read,
            Permission.runs_write,
            Permission.codec,
        }
    ),
    Role.approver: frozenset({Permission.runs_read, Permission.approvals_decide}),
    Role.viewer: frozenset({Permission.runs_read}),
    Role.auditor: frozenset({Permission.audit_read, Permission.runs_read, Permission.codec}),
}


_PLATFORM_ONLY = frozenset({Permission.tenants_manage, Permission.codec})


@dataclass(frozen=True)
class Principal:
    """Who is calling: resolved from an API key on every request."""

    tenant_id: str
    key_id: uuid.UUID
    role: Role
    scopes: tuple[str, ...] | None = None  # None = unrestricted
    is_platform: bool = False
    expires_at: dt.datetime | None = None
    rate_limit_per_minute: int | None = None
    user_id: uuid.UUID | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def actor(self) -> str:
        return f"key:{self.key_id}"

    def can(self, permission: Permission) -> bool:
        # The codec decrypts any payload of the shared Temporal namespace, whoever's run it is
        # from: like tenant management, only platform operators may use it.
        if permission in _PLATFORM_ONLY and not self.is_platform:
            return False
        return permission in ROLE_PERMISSIONS[self.role]

    def require(self, permission: Permission) -> None:
        """Raise :class:`Forbidden` unless this principal holds ``permission``."""
        if not self.can(permission):
            raise Forbidden(f"role {self.role.value!r} lacks permission {permission.value!r}")

    def allows_scope(self, scope: str) -> bool:
        """Whether a scope such as ``models:gpt-4o`` is allowed (``*`` suffix = prefix match)."""
        if self.scopes is None:
            return True
        return any(_scope_match(own, scope) for own in self.scopes)


def _scope_match(pattern: str, scope: str) -> bool:
    if pattern.endswith("*"):
        return scope.startswith(pattern[:-1])
    return pattern == scope


def _scope_covers(own: str, requested: str) -> bool:
    """Whether pattern ``own`` grants everything pattern ``requested`` grants."""
    if requested.endswith("*"):
        return own.endswith("*") and requested[:-1].startswith(own[:-1])
    return _scope_match(own, requested)


def _role_rights(role: Role) -> frozenset[Permission]:
    return ROLE_PERMISSIONS[role]


def check_can_mint(
    minter: Principal,
    *,
    tenant_id: str,
    role: Role,
    scopes: list[str] | None,
    expires_at: dt.datetime | None,
) -> None:
    """Refuse a new key whose rights exceed the minter's own (role, scopes, expiry, tenant)."""
    minter.require(Permission.keys_write)
    if tenant_id != minter.tenant_id and not minter.can(Permission.tenants_manage):
        raise Forbidden("cannot mint keys for another tenant")
    if not _role_rights(role) <= _role_rights(minter.role):
        raise Forbidden(f"role {role.value!r} has rights beyond the minting key's role")
    if role in (Role.owner,) and minter.role is not Role.owner:
        raise Forbidden("only an owner can mint an owner key")
    if minter.scopes is not None:
        if scopes is None:
            raise Forbidden("a scoped key cannot mint an unscoped key")
        for scope in scopes:
            if not any(_scope_covers(own, scope) for own in minter.scopes):
                raise Forbidden(f"scope {scope!r} exceeds the minting key's scopes")
    if minter.expires_at is not None and (expires_at is None or expires_at > minter.expires_at):
        raise Forbidden("a new key cannot outlive the key that mints it")


@dataclass(frozen=True)
class KeyMaterial:
    prefix: str
    secret: str
    full: str


KEY_PREFIX = "nx"


def generate_key() -> KeyMaterial:
    """A fresh key: 12 hex chars of lookup prefix and 32 bytes of secret."""
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return KeyMaterial(prefix=prefix, secret=secret, full=f"{KEY_PREFIX}_{prefix}_{secret}")


def parse_key(raw: str) -> tuple[str, str] | None:
    """Split ``nx_<prefix>_<secret>``; ``None`` if malformed."""
    parts = raw.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or len(parts[1]) != 12 or not parts[2]:
        return None
    return parts[1], parts[2]


def hash_secret(secret: str, pepper: str) -> str:
    return hmac.new(pepper.encode(), secret.encode(), hashlib.sha256).hexdigest()


def secret_matches(secret: str, stored_hash: str, pepper: str) -> bool:
    return hmac.compare_digest(hash_secret(secret, pepper), stored_hash)
