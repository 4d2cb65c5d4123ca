"""HMAC-SHA256 signatures of outbound pipeline calls (``X-Nexus-Signature: t=<unix>,v1=<hex>``).

The signed string is ``"{t}.{body}"`` (Stripe's scheme): receivers recompute it with the shared
secret, compare in constant time and refuse stale timestamps, so a captured request cannot be
replayed later.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Nexus-Signature"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header value for ``body`` sent at ``timestamp`` (unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, header: str, body: bytes, now: int, tolerance_s: int = 300) -> bool:
    """Whether ``header`` is a valid, fresh signature of ``body`` (for receivers and tests)."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
        given = parts["v1"]
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, given)
