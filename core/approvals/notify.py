"""Approval notifications over the operator's channels (:mod:`core.notify`).

Builds the approval events (``approval.created`` / ``approval.escalated`` / ``approval.decided``)
and hands them to :meth:`core.notify.ChannelNotifier.send_event`, the delivery path shared with
eval regression alerts (signed webhook, Slack-compatible webhook, e-mail; SSRF guard). The
channel settings and helpers are re-exported here for existing imports.
"""

from __future__ import annotations

from typing import Any

from core.approvals.contracts import NotifyInput
from core.notify import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    ChannelNotifier,
    ChannelSettings,
    NotificationSettings,
    NotifyConfigError,
    SmtpSettings,
    check_destination,
    notification_settings,
    sign,
    verify,
)

__all__ = [
    "DELIVERY_HEADER",
    "SIGNATURE_HEADER",
    "ChannelSettings",
    "NotificationSettings",
    "Notifier",
    "NotifyConfigError",
    "SmtpSettings",
    "check_destination",
    "event_payload",
    "notification_settings",
    "sign",
    "summary",
    "verify",
]


def event_payload(inp: NotifyInput, console_url: str) -> dict[str, Any]:
    """The JSON body of webhook notifications."""
    link = f"{console_url.rstrip('/')}/console/approvals/{inp.approval_id}" if console_url else None
    return {
        "id": inp.delivery_id,
        "type": f"approval.{inp.event}",
        "tenant_id": inp.tenant_id,
        "approval_id": inp.approval_id,
        "workflow_id": inp.workflow_id,
        "title": inp.title,
        "status": inp.status.value,
        "assignees": inp.assignees.model_dump(),
        "decision": inp.decision.model_dump(mode="json") if inp.decision else None,
        "url": link,
    }


def summary(inp: NotifyInput) -> str:
    """A one-line human summary (Slack text, e-mail subject)."""
    if inp.event == "decided":
        return f"Approval {inp.status.value.replace('_', ' ')}: {inp.title}"
    if inp.event == "escalated":
        return f"Approval escalated: {inp.title}"
    return f"Approval requested: {inp.title}"


class Notifier(ChannelNotifier):
    """Sends approval notifications (and, through :meth:`send_event`, any other event)."""

    async def send(self, inp: NotifyInput) -> None:
        """Deliver ``inp`` (one attempt; the caller's activity is retried by Temporal)."""
        payload = event_payload(inp, self.config.console_url)
        link = payload["url"]
        lines = [summary(inp), "", f"Status: {inp.status.value}", f"Approval: {inp.approval_id}"]
        if inp.decision is not None:
            lines += [f"Decided by: {inp.decision.actor}", f"Comment: {inp.decision.comment}"]
        if link:
            lines += ["", f"Open: {link}"]
        await self.send_event(
            inp.channel,
            payload.pop("type"),
            {k: v for k, v in payload.items() if k != "id"},
            summary(inp),
            delivery_id=inp.delivery_id,
            link=link,
            email_text="\n".join(lines) + "\n",
        )
