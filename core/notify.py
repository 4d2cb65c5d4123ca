"""Operator notification channels: signed webhooks, Slack-compatible incoming webhooks, e-mail.

One delivery path for every kind of event (approval requests and decisions, eval regression
alerts): :meth:`ChannelNotifier.send_event`. Channels are configured by the operator
(``NEXUS_APPROVALS__CHANNELS``), never by API clients: a request names a channel, not a URL.
Outbound URLs must not resolve to private, loopback, link-local or otherwise reserved addresses
unless the operator marks the channel ``allow_private: true`` (e.g. an intranet receiver). Each
send is one attempt: transport errors are raised so the calling Temporal activity is retried;
configuration errors are :class:`NotifyConfigError` (not retryable).

Wire format:

* ``webhook`` — ``POST`` of ``{"id": <delivery id>, "type": <event type>, **payload}`` (compact
  JSON), headers ``X-Nexus-Delivery`` (replay-stable: receivers deduplicate on it) and, when the
  channel has a secret, ``X-Nexus-Signature: t=<ts>,v1=<hex HMAC-SHA256 over "<ts>.<body>">``.
* ``slack`` — ``POST`` of ``{"text": <summary>[ " <link|open>"]}`` with ``X-Nexus-Delivery``.
* ``email`` — subject ``<summary>``, the given text (or the summary and the payload as JSON),
  a replay-stable ``Message-ID`` derived from the delivery id.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import socket
import time
from email.message import EmailMessage
from typing import Any, Literal
from urllib.parse import urlsplit

import aiosmtplib
import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

SIGNATURE_HEADER = "X-Nexus-Signature"
DELIVERY_HEADER = "X-Nexus-Delivery"


class ChannelSettings(BaseModel):
    """One notification channel."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["webhook", "slack", "email"] = Field(description="Transport of this channel.")
    url: str | None = Field(None, description="Webhook / Slack incoming-webhook URL (http or https).")
    to: list[str] = Field(default_factory=list, description="E-mail recipients (kind=email).")
    secret: SecretStr | None = Field(None, description="HMAC-SHA256 key of webhook signatures.")
    allow_private: bool = Field(
        False, description="Allow private/loopback/link-local targets (operator opt-in only)."
    )
    timeout_s: float = Field(10.0, gt=0, le=60, description="Per-attempt HTTP/SMTP timeout.")

    @model_validator(mode="after")
    def _target(self) -> ChannelSettings:
        if self.kind == "email" and not self.to:
            raise ValueError("an email channel needs 'to'")
        if self.kind != "email":
            if not self.url:
                raise ValueError(f"a {self.kind} channel needs 'url'")
            parts = urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("channel url must be an absolute http(s) URL")
            if parts.username or parts.password:
                raise ValueError("channel url must not embed credentials")
        return self


class SmtpSettings(BaseModel):
    """The SMTP relay used by e-mail channels."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="SMTP relay host.")
    port: int = Field(25, description="SMTP relay port.")
    from_addr: str = Field("nexus@localhost", description="Envelope and header sender.")
    username: str | None = Field(None, description="SMTP AUTH user (optional).")
    password: SecretStr | None = Field(None, description="SMTP AUTH password (optional).")
    use_tls: bool = Field(False, description="Implicit TLS (SMTPS, usually port 465).")
    start_tls: bool = Field(False, description="Upgrade with STARTTLS (usually port 587).")


class NotificationSettings(BaseModel):
    """Approval notification settings (``NEXUS_APPROVALS__…``)."""

    model_config = ConfigDict(extra="forbid")

    channels: dict[str, ChannelSettings] = Field(default_factory=dict, description="Channels by name.")
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    console_url: str = Field("", description="Public console base URL for links in messages.")


def notification_settings(settings: Any) -> NotificationSettings:
    """``settings.approvals`` when the root settings have it, else empty defaults."""
    value = getattr(settings, "approvals", None)
    return value if isinstance(value, NotificationSettings) else NotificationSettings()


class NotifyConfigError(Exception):
    """The channel is unknown or its target is refused: retrying cannot help."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """``t=<ts>,v1=<hex>``: HMAC-SHA256 over ``<ts>.<body>``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(
    secret: str, header: str, body: bytes, *, tolerance_s: int = 300, now: float | None = None
) -> bool:
    """Check a :func:`sign` header (for receivers and tests); rejects stale timestamps."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
        expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    except (KeyError, ValueError):
        return False
    fresh = abs((now if now is not None else time.time()) - timestamp) <= tolerance_s
    return fresh and hmac.compare_digest(expected, fields.get("v1", ""))


def _address_refused(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


async def check_destination(url: str, allow_private: bool) -> None:
    """Refuse URLs whose host resolves to a non-public address (SSRF guard).

    The check resolves the name once before the request; an operator-controlled DNS name that
    changes between check and connect is outside this guard (channels are operator-configured).
    """
    if allow_private:
        return
    host = urlsplit(url).hostname or ""
    port = urlsplit(url).port or 443
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ConnectionError(f"cannot resolve notification host: {type(exc).__name__}") from exc
    if not infos or any(_address_refused(str(info[4][0])) for info in infos):
        raise NotifyConfigError("notification target resolves to a private or reserved address")


class ChannelNotifier:
    """Delivers events through the operator's configured channels."""

    def __init__(self, config: NotificationSettings) -> None:
        self.config = config

    def channel(self, name: str) -> ChannelSettings:
        """The configured channel ``name``, else :class:`NotifyConfigError`."""
        channel = self.config.channels.get(name)
        if channel is None:
            raise NotifyConfigError(f"unknown notification channel {name!r}")
        return channel

    async def send_event(
        self,
        channel_name: str,
        event_type: str,
        payload: dict[str, Any],
        summary: str,
        *,
        delivery_id: str,
        link: str | None = None,
        email_text: str | None = None,
    ) -> None:
        """Deliver one event through ``channel_name`` (one attempt; see the module docstring for
        each channel's wire format). ``payload`` must not carry ``id`` or ``type``."""
        channel = self.channel(channel_name)
        if channel.kind == "email":
            text = email_text
            if text is None:
                text = summary + "\n\n" + json.dumps(payload, indent=2, default=str) + "\n"
            await self._email(channel, summary, text, delivery_id)
            return
        assert channel.url is not None
        await check_destination(channel.url, channel.allow_private)
        body_obj: dict[str, Any]
        if channel.kind == "slack":
            body_obj = {"text": summary + (f" <{link}|open>" if link else "")}
        else:
            body_obj = {"id": delivery_id, "type": event_type, **payload}
        body = json.dumps(body_obj, separators=(",", ":"), default=str).encode()
        headers = {"Content-Type": "application/json", DELIVERY_HEADER: delivery_id}
        if channel.kind == "webhook" and channel.secret is not None:
            headers[SIGNATURE_HEADER] = sign(channel.secret.get_secret_value(), int(time.time()), body)
        # No redirects: a redirect could point past the destination check.
        async with httpx.AsyncClient(trust_env=False, timeout=channel.timeout_s) as http:
            response = await http.post(channel.url, content=body, headers=headers)
        if response.status_code >= 300:
            raise ConnectionError(f"notification endpoint answered HTTP {response.status_code}")

    async def _email(self, channel: ChannelSettings, subject: str, text: str, delivery_id: str) -> None:
        smtp = self.config.smtp
        message = EmailMessage()
        message["From"] = smtp.from_addr
        message["To"] = ", ".join(channel.to)
        message["Subject"] = subject
        domain = smtp.from_addr.rsplit("@", 1)[-1] or "localhost"
        # Replay-stable Message-ID: a retried send is recognisable as the same message.
        digest = hashlib.sha256(delivery_id.encode()).hexdigest()[:32]
        message["Message-ID"] = f"<{digest}@{domain}>"
        message.set_content(text)
        await aiosmtplib.send(
            message,
            hostname=smtp.host,
            port=smtp.port,
            username=smtp.username,
            password=smtp.password.get_secret_value() if smtp.password else None,
            use_tls=smtp.use_tls,
            start_tls=smtp.start_tls,
            timeout=channel.timeout_s,
        )
