"""Connections at rest: credentials sealed with AES-256-GCM, tenant-scoped repository, audit.

Credentials are encrypted with a key from the settings (``NEXUS_CONNECTORS__CREDENTIALS_KEYS``,
or a key derived with HKDF from the payload codec keys when none is set). Each row stores the
key id and the nonce beside the ciphertext; the tenant id and connection id are bound as
associated data, so a ciphertext copied into another row (or tenant) does not decrypt.

Nothing here returns credentials to a caller except :meth:`ConnectionRepository.credentials`,
which activities use to build a connector in the worker; API shapes never include them.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import re
import uuid
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import BaseModel, ValidationError
from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from connectors import registry
from connectors.base import Connector, ConnectorError, ErrorKind, validation_summary
from core.config import ConnectorsSettings, Settings
from core.db.connector_models import Connection, ConnectorJob
from core.errors import BadRequest, Conflict, NexusError, NotFound, Unavailable, ValidationFailed
from core.governance.audit import append

NONCE_BYTES = 12
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")
_DERIVE_INFO = b"nexus connector credentials v1"


class CredentialCipher:
    """AES-256-GCM over a connection's credentials JSON; key ids allow rotation."""

    def __init__(self, keys: Mapping[str, bytes], active: str) -> None:
        if active not in keys:
            raise ValueError("active credentials key id is not among the keys")
        for kid, key in keys.items():
            if len(key) != 32:
                raise ValueError(f"credentials key {kid!r} must be 32 bytes (AES-256)")
        self._aead = {kid: AESGCM(key) for kid, key in keys.items()}
        self.active = active

    @classmethod
    def from_settings(cls, settings: Settings) -> CredentialCipher:
        """Keys from ``connectors.credentials_keys``, else HKDF-derived from the codec keys."""
        section: ConnectorsSettings = settings.connectors
        if section.credentials_keys:
            keys = {k: base64.b64decode(v.get_secret_value()) for k, v in section.credentials_keys.items()}
            active = section.credentials_active_key or sorted(keys)[-1]
            return cls(keys, active)
        derived = {
            f"codec-{kid}": _derive(base64.b64decode(value.get_secret_value()))
            for kid, value in settings.security.codec_keys.items()
        }
        return cls(derived, f"codec-{settings.security.codec_active_key}")

    @staticmethod
    def _aad(tenant_id: str, connection_id: str) -> bytes:
        return f"nexus-connection\x00{tenant_id}\x00{connection_id}".encode()

    def seal(self, tenant_id: str, connection_id: str, plaintext: bytes) -> tuple[str, bytes, bytes]:
        """Encrypt; returns (key id, nonce, ciphertext)."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead[self.active].encrypt(nonce, plaintext, self._aad(tenant_id, connection_id))
        return self.active, nonce, sealed

    def open(self, tenant_id: str, connection_id: str, key_id: str, nonce: bytes, sealed: bytes) -> bytes:
        """Decrypt, or :class:`Unavailable` when the key is missing or the row was tampered with."""
        aead = self._aead.get(key_id)
        if aead is None:
            raise Unavailable("the key that encrypted this connection's credentials is not configured")
        try:
            return aead.decrypt(nonce, sealed, self._aad(tenant_id, connection_id))
        except InvalidTag:
            raise Unavailable("connection credentials cannot be decrypted") from None


def _derive(codec_key: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_DERIVE_INFO).derive(codec_key)


def connector_error(exc: ConnectorError) -> NexusError:
    """A connector failure as an API error (the message is client-safe by contract)."""
    if exc.kind in (ErrorKind.config, ErrorKind.validation, ErrorKind.not_installed):
        return ValidationFailed(exc.message)
    return BadRequest(exc.message)


def validate_models(
    type_: str, config: dict[str, Any], credentials: dict[str, Any] | None
) -> type[Connector]:
    """The connector class after checking ``config`` (and ``credentials``) against its models."""
    try:
        cls = registry.get(type_)
    except ConnectorError:
        raise ValidationFailed(f"unknown connector type {type_!r}") from None
    for what, model, value in (
        ("config", cls.config_model, config),
        ("credentials", cls.credentials_model, credentials),
    ):
        if value is None:
            continue
        try:
            model.model_validate(value)
        except ValidationError as exc:
            raise ValidationFailed(f"invalid {type_} {what}: {validation_summary(exc)}") from None
    return cls


async def check_hosts(cls: type[Connector], config: dict[str, Any], section: ConnectorsSettings) -> None:
    """The SSRF guard on every host of ``config`` (private/link-local refused unless allowed)."""
    model: BaseModel = cls.config_model.model_validate(config)
    try:
        await registry.check_hosts(
            cls, model, allow_private=section.allow_private_hosts, allowed_hosts=section.allowed_hosts
        )
    except ConnectorError as exc:
        raise ValidationFailed(exc.message) from None


def tls_verify(section: ConnectorsSettings) -> bool | str:
    """What connectors pass as ``verify``: the operator's CA bundle, else the system store."""
    return section.ca_bundle or True


class ConnectionRepository:
    """Tenant-scoped SQL of ``connections``; creates/updates/deletes are audited."""

    def __init__(self, session: AsyncSession, cipher: CredentialCipher) -> None:
        self.session = session
        self.cipher = cipher

    async def create(
        self,
        *,
        tenant_id: str,
        name: str,
        type_: str,
        config: dict[str, Any],
        credentials: dict[str, Any],
        actor: str,
    ) -> Connection:
        """Insert a connection (config/credentials already validated by the caller)."""
        if not _NAME.match(name):
            raise ValidationFailed("name must match [a-z0-9][a-z0-9_.-]{0,99}")
        if await self.find(tenant_id, name) is not None:
            raise Conflict("a connection with this name exists")
        connection_id = "conn_" + uuid.uuid4().hex[:20]
        kid, nonce, sealed = self.cipher.seal(tenant_id, connection_id, _dump(credentials))
        row = Connection(
            tenant_id=tenant_id,
            id=connection_id,
            name=name,
            type=type_,
            config=config,
            credentials_key_id=kid,
            credentials_nonce=nonce,
            credentials_ciphertext=sealed,
            created_by=actor,
        )
        self.session.add(row)
        await self.session.flush()
        await append(
            self.session,
            actor=actor,
            action="connection.create",
            tenant_id=tenant_id,
            target=connection_id,
            data={"name": name, "type": type_, "credential_fields": sorted(credentials)},
        )
        return row

    async def find(self, tenant_id: str, id_or_name: str) -> Connection | None:
        """By id or by name, within the tenant."""
        result = await self.session.execute(
            select(Connection).where(
                Connection.tenant_id == tenant_id,
                or_(Connection.id == id_or_name, Connection.name == id_or_name),
            )
        )
        return result.scalars().first()

    async def get(self, tenant_id: str, id_or_name: str) -> Connection:
        """The connection or :class:`NotFound` (also for another tenant's)."""
        row = await self.find(tenant_id, id_or_name)
        if row is None:
            raise NotFound("connection not found")
        return row

    async def page(
        self, tenant_id: str, *, limit: int, after: tuple[str, str] | None = None
    ) -> list[Connection]:
        """Newest first; ``after`` is (created_at iso, id) of the last row seen."""
        query = select(Connection).where(Connection.tenant_id == tenant_id)
        if after is not None:
            created = dt.datetime.fromisoformat(after[0])
            query = query.where(
                or_(
                    Connection.created_at < created,
                    and_(Connection.created_at == created, Connection.id < after[1]),
                )
            )
        query = query.order_by(Connection.created_at.desc(), Connection.id.desc()).limit(limit)
        return list((await self.session.execute(query)).scalars())

    async def update(
        self,
        tenant_id: str,
        id_or_name: str,
        *,
        actor: str,
        config: dict[str, Any] | None = None,
        credentials: dict[str, Any] | None = None,
    ) -> Connection:
        """Replace config and/or credentials (credentials are re-sealed with the active key)."""
        row = await self.get(tenant_id, id_or_name)
        changed: list[str] = []
        if config is not None:
            row.config = config
            changed.append("config")
        if credentials is not None:
            row.credentials_key_id, row.credentials_nonce, row.credentials_ciphertext = self.cipher.seal(
                tenant_id, row.id, _dump(credentials)
            )
            changed.append("credentials")
        row.updated_at = dt.datetime.now(dt.UTC)
        await self.session.flush()
        await append(
            self.session,
            actor=actor,
            action="connection.update",
            tenant_id=tenant_id,
            target=row.id,
            data={"name": row.name, "changed": changed},
        )
        return row

    async def delete(self, tenant_id: str, id_or_name: str, *, actor: str) -> None:
        """Delete a connection no job uses (:class:`Conflict` otherwise)."""
        row = await self.get(tenant_id, id_or_name)
        jobs = await self.session.scalar(
            select(func.count())
            .select_from(ConnectorJob)
            .where(ConnectorJob.tenant_id == tenant_id, ConnectorJob.connection_id == row.id)
        )
        if jobs:
            raise Conflict("the connection is used by connector jobs; delete them first")
        await self.session.delete(row)
        await self.session.flush()
        await append(
            self.session,
            actor=actor,
            action="connection.delete",
            tenant_id=tenant_id,
            target=row.id,
            data={"name": row.name, "type": row.type},
        )

    def credentials(self, row: Connection) -> dict[str, Any]:
        """The decrypted credentials of ``row`` (workers only; never returned by the API)."""
        raw = self.cipher.open(
            row.tenant_id, row.id, row.credentials_key_id, row.credentials_nonce, row.credentials_ciphertext
        )
        value: dict[str, Any] = json.loads(raw)
        return value


def _dump(credentials: dict[str, Any]) -> bytes:
    return json.dumps(credentials, separators=(",", ":")).encode()


def build_connector(row: Connection, credentials: dict[str, Any], section: ConnectorsSettings) -> Connector:
    """A connector for ``row`` (the caller closes it)."""
    egress = None if section.allow_private_hosts else list(section.allowed_hosts)
    return registry.build(
        row.type, row.config, credentials, verify=tls_verify(section), egress_allowlist=egress
    )


async def probe_connection(row: Connection, credentials: dict[str, Any], section: ConnectorsSettings) -> None:
    """Build the connector and make its one cheap authenticated call (``ConnectorError`` on failure)."""
    connector = build_connector(row, credentials, section)
    try:
        if connector.blocking:
            await asyncio.to_thread(connector.test)
        else:
            await connector.test()
    finally:
        if connector.blocking:
            await asyncio.to_thread(connector.close)
        else:
            await connector.close()
