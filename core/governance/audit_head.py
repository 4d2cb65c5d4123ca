"""Signed audit heads: export the chain's last (seq, hash), signed with Ed25519.

A verified chain proves no event was altered or removed *in the middle*; it cannot prove
that the newest events were not removed (a truncated chain is still a valid chain). An
exported head, stored somewhere the database's administrators cannot write, closes that
gap: the chain must still contain the exported seq with the exported hash.

The signature covers the canonical JSON of every field except ``signature`` itself, so a
head cannot be edited without the private key. The private seed never leaves this module's
callers: errors name the key only by its fingerprint.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.db.models import AuditEvent
from core.governance.audit import GENESIS, canonical
from core.governance.audit_verify import VerifyResult, verify_chain


class SignedHead(BaseModel):
    """The chain head at export time, signed. Store it outside the database (WORM bucket, ticket)."""

    model_config = ConfigDict(extra="forbid")

    alg: Literal["Ed25519"] = Field("Ed25519", description="Signature algorithm.")
    seq: int = Field(ge=0, description="Seq of the last event (0 when the log was empty).")
    hash: str = Field(pattern=r"^[0-9a-f]{64}$", description="Hash of that event (GENESIS when empty).")
    created_at: AwareDatetime | None = Field(description="When that event was appended.")
    exported_at: AwareDatetime = Field(description="When this head was exported.")
    key_id: str = Field(max_length=64, description="Fingerprint of the signing public key.")
    public_key: str = Field(max_length=64, description="Base64 raw Ed25519 public key (32 bytes).")
    signature: str = Field(max_length=128, description="Base64 Ed25519 signature over the other fields.")


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.astimezone(dt.UTC).isoformat(timespec="microseconds")


def signed_payload(head: SignedHead) -> bytes:
    """The exact bytes the signature covers: canonical JSON of all fields but ``signature``."""
    fields: dict[str, Any] = {
        "alg": head.alg,
        "seq": head.seq,
        "hash": head.hash,
        "created_at": _iso(head.created_at),
        "exported_at": _iso(head.exported_at),
        "key_id": head.key_id,
        "public_key": head.public_key,
    }
    return canonical(fields)


def load_signing_key(seed_b64: str) -> Ed25519PrivateKey:
    """Build the private key from a base64 32-byte seed (``NEXUS_SECURITY__AUDIT_SIGNING_KEY``)."""
    try:
        seed = base64.b64decode(seed_b64, validate=True)
    except (binascii.Error, ValueError):
        seed = b""
    if len(seed) != 32:
        # Deliberately no detail: the message must not echo any part of the secret.
        raise ValueError("audit signing key must be the base64 encoding of a 32-byte Ed25519 seed")
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_key_b64(key: Ed25519PublicKey) -> str:
    """Base64 of the raw 32-byte public key."""
    return base64.b64encode(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def load_public_key(value: Ed25519PublicKey | str) -> Ed25519PublicKey:
    """Accept a public key object or its base64 raw form."""
    if isinstance(value, Ed25519PublicKey):
        return value
    try:
        raw = base64.b64decode(value, validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("public key must be the base64 encoding of 32 raw Ed25519 bytes") from exc


def key_fingerprint(key: Ed25519PublicKey) -> str:
    """Short stable id of a public key: ``ed25519:`` + the first 16 hex digits of its SHA-256."""
    raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


async def export_head(
    session: AsyncSession, signing_key_b64: str, *, now: dt.datetime | None = None
) -> SignedHead:
    """Sign the current last event's (seq, hash, created_at) with the Ed25519 seed given."""
    private = load_signing_key(signing_key_b64)
    public = private.public_key()
    row = (
        await session.execute(
            select(AuditEvent.seq, AuditEvent.hash, AuditEvent.created_at)
            .order_by(AuditEvent.seq.desc())
            .limit(1)
        )
    ).first()
    seq, hash_, created_at = (row[0], row[1], row[2]) if row else (0, GENESIS, None)
    unsigned = SignedHead(
        seq=seq,
        hash=hash_,
        created_at=created_at,
        exported_at=now or dt.datetime.now(dt.UTC),
        key_id=key_fingerprint(public),
        public_key=public_key_b64(public),
        signature="",
    )
    signature = base64.b64encode(private.sign(signed_payload(unsigned))).decode()
    return unsigned.model_copy(update={"signature": signature})


def verify_head_signature(head: SignedHead, public_key: Ed25519PublicKey | str) -> str | None:
    """Check ``head`` was signed by ``public_key`` (the *trusted* key, never the head's own
    ``public_key`` field). Returns None when valid, otherwise the reason."""
    trusted = load_public_key(public_key)
    if head.key_id != key_fingerprint(trusted) or head.public_key != public_key_b64(trusted):
        return f"head was signed by another key ({head.key_id}), not the trusted {key_fingerprint(trusted)}"
    try:
        signature = base64.b64decode(head.signature, validate=True)
        trusted.verify(signature, signed_payload(head))
    except (binascii.Error, ValueError, InvalidSignature):
        return "head signature is invalid: the head was altered or forged"
    return None


async def verify_against_head(
    session: AsyncSession, head: SignedHead, public_key: Ed25519PublicKey | str
) -> VerifyResult:
    """Verify the signature on ``head``, the whole chain, and that the chain still holds
    ``head.seq`` with ``head.hash`` (a deleted tail or rewritten history is reported)."""
    problem = verify_head_signature(head, public_key)
    if problem is not None:
        return VerifyResult(ok=False, checked=0, head_seq=None, head_hash=None, reason=problem)
    result = await verify_chain(session)
    if not result.ok:
        return result

    def inconsistent(first_broken_seq: int, reason: str) -> VerifyResult:
        return result.model_copy(update={"ok": False, "first_broken_seq": first_broken_seq, "reason": reason})

    if head.seq == 0:
        if head.hash != GENESIS:
            return inconsistent(1, "exported head of an empty log must carry the GENESIS hash")
        return result
    last = result.head_seq or 0
    if last < head.seq:
        return inconsistent(
            last + 1,
            f"chain truncated: exported head is seq {head.seq} but the log ends at seq {last} "
            f"(events {last + 1}..{head.seq} missing)",
        )
    stored = await session.scalar(select(AuditEvent.hash).where(AuditEvent.seq == head.seq))
    if stored != head.hash:
        return inconsistent(head.seq, f"history rewritten: event {head.seq} differs from the exported head")
    return result
