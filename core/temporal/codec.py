"""Payload codec: AES-256-GCM encryption of every Temporal payload, with key ids for rotation.

Encrypted payloads carry ``encoding=binary/encrypted`` and ``encryption-key-id`` metadata; the
original payload (metadata and data) is serialised with protobuf and sealed. Decoding picks the
key by id, so old histories stay readable after a new key becomes active. Payloads written
before encryption was enabled pass through unchanged.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping, Sequence

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12


class CodecKeyError(Exception):
    """A payload names a key id this process does not have."""


class EncryptionCodec(PayloadCodec):
    """AES-GCM payload codec. ``keys`` maps key id to 32 raw bytes; ``active`` encrypts."""

    def __init__(self, keys: Mapping[str, bytes], active: str) -> None:
        if active not in keys:
            raise ValueError("active key id is not among the keys")
        for kid, key in keys.items():
            if len(key) != 32:
                raise ValueError(f"codec key {kid!r} must be 32 bytes (AES-256)")
        self._aead = {kid: AESGCM(key) for kid, key in keys.items()}
        self._active = active

    @classmethod
    def from_b64(cls, keys: Mapping[str, str], active: str) -> EncryptionCodec:
        return cls({kid: base64.b64decode(val) for kid, val in keys.items()}, active)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(p) for p in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        nonce = os.urandom(NONCE_BYTES)
        kid = self._active
        # The key id is bound as associated data so a payload cannot be relabelled.
        sealed = self._aead[kid].encrypt(nonce, payload.SerializeToString(), kid.encode())
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID: kid.encode()},
            data=nonce + sealed,
        )

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        kid = payload.metadata.get(KEY_ID, b"").decode()
        aead = self._aead.get(kid)
        if aead is None:
            raise CodecKeyError(f"unknown payload encryption key id {kid!r}")
        nonce, sealed = payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:]
        return Payload.FromString(aead.decrypt(nonce, sealed, kid.encode()))
