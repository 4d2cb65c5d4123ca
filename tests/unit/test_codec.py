"""The AES-GCM payload codec: round trip, key rotation, tampering, unknown keys, passthrough."""

from __future__ import annotations

import os

import pytest
from cryptography.exceptions import InvalidTag
from temporalio.api.common.v1 import Payload

from core.temporal.codec import ENCODING, KEY_ID, CodecKeyError, EncryptionCodec


def _payload(data: bytes = b'{"prompt":"confidential"}') -> Payload:
    return Payload(metadata={"encoding": b"json/plain", "messageType": b"Demo"}, data=data)


@pytest.fixture
def keys() -> dict[str, bytes]:
    return {"k1": os.urandom(32), "k2": os.urandom(32)}


async def test_round_trip_restores_metadata_and_data(keys: dict[str, bytes]) -> None:
    codec = EncryptionCodec(keys, "k1")
    original = [_payload(), _payload(b"")]
    sealed = await codec.encode(original)
    for item in sealed:
        assert item.metadata["encoding"] == ENCODING
        assert item.metadata[KEY_ID] == b"k1"
        assert b"confidential" not in item.data
        assert b"json/plain" not in item.data
    assert await codec.decode(sealed) == original


async def test_nonces_differ_between_encryptions(keys: dict[str, bytes]) -> None:
    codec = EncryptionCodec(keys, "k1")
    a, b = await codec.encode([_payload(), _payload()])
    assert a.data != b.data


async def test_rotation_old_key_still_decodes(keys: dict[str, bytes]) -> None:
    old = EncryptionCodec({"k1": keys["k1"]}, "k1")
    sealed = await old.encode([_payload()])
    rotated = EncryptionCodec(keys, "k2")
    fresh = await rotated.encode([_payload()])
    assert fresh[0].metadata[KEY_ID] == b"k2"
    assert await rotated.decode(sealed) == [_payload()]
    assert await rotated.decode(fresh) == [_payload()]


async def test_tampered_ciphertext_fails(keys: dict[str, bytes]) -> None:
    codec = EncryptionCodec(keys, "k1")
    (sealed,) = await codec.encode([_payload()])
    broken = bytearray(sealed.data)
    broken[-1] ^= 0x01
    with pytest.raises(InvalidTag):
        await codec.decode([Payload(metadata=sealed.metadata, data=bytes(broken))])


async def test_relabelled_key_id_fails(keys: dict[str, bytes]) -> None:
    """The key id is authenticated: pointing a payload at another known key fails."""
    codec = EncryptionCodec(keys, "k1")
    (sealed,) = await codec.encode([_payload()])
    relabelled = Payload(metadata={"encoding": ENCODING, KEY_ID: b"k2"}, data=sealed.data)
    with pytest.raises(InvalidTag):
        await codec.decode([relabelled])


async def test_unknown_key_id_fails(keys: dict[str, bytes]) -> None:
    (sealed,) = await EncryptionCodec(keys, "k1").encode([_payload()])
    other = EncryptionCodec({"k9": os.urandom(32)}, "k9")
    with pytest.raises(CodecKeyError, match="k1"):
        await other.decode([sealed])


async def test_unencrypted_payloads_pass_through(keys: dict[str, bytes]) -> None:
    codec = EncryptionCodec(keys, "k1")
    plain = [_payload(), Payload(metadata={"encoding": b"binary/null"})]
    assert await codec.decode(plain) == plain


def test_rejects_bad_keys() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        EncryptionCodec({"short": b"x" * 16}, "short")
    with pytest.raises(ValueError, match="active"):
        EncryptionCodec({"k1": os.urandom(32)}, "k2")
