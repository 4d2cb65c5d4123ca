"""Approval notifications: signed webhook, Slack body, SMTP (local aiosmtpd), SSRF guard, and
the workflow delivering created/decided notices through retried activities."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from typing import Any

import pytest
import pytest_asyncio
from aiosmtpd.controller import Controller
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from cli.embedded import free_port
from core.approvals.client import send_decision
from core.approvals.contracts import (
    ApprovalStatus,
    Assignees,
    NotifyInput,
    NotifyTarget,
    approval_workflow_id,
)
from core.approvals.notify import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    NotificationSettings,
    Notifier,
    NotifyConfigError,
    verify,
)
from tests.workflows.approval_support import approval_worker, decision, request
from workflows.approval import ApprovalWorkflow

SECRET = "whsec-test"


@dataclass
class Receiver:
    """A local HTTP endpoint recording requests; the first ``fail_first`` answers are 500."""

    url: str
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    fail_first: int = 0
    seen: int = 0


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    box = Receiver(url="")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        lines = head.split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        box.seen += 1
        status = b"500 Internal Server Error" if box.seen <= box.fail_first else b"204 No Content"
        if box.seen > box.fail_first:
            box.requests.append((headers, body))
        writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    box.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
    yield box
    server.close()
    await server.wait_closed()


class Inbox:
    """aiosmtpd handler keeping every received message."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd hook
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


def _config(receiver: Receiver, smtp_port: int, *, allow_private: bool = True) -> NotificationSettings:
    return NotificationSettings.model_validate(
        {
            "channels": {
                "ops-hook": {
                    "kind": "webhook",
                    "url": receiver.url,
                    "secret": SECRET,
                    "allow_private": allow_private,
                },
                "ops-slack": {"kind": "slack", "url": receiver.url, "allow_private": allow_private},
                "ops-mail": {"kind": "email", "to": ["ops@example.com"]},
            },
            "smtp": {"host": "127.0.0.1", "port": smtp_port, "from_addr": "nexus@example.com"},
            "console_url": "https://nexus.example.com",
        }
    )


def _notice(channel: str) -> NotifyInput:
    return NotifyInput(
        tenant_id="t-1",
        approval_id="a-1",
        workflow_id="approval:t-1:a-1",
        channel=channel,
        event="created",
        title="Refund 1200 EUR",
        status=ApprovalStatus.pending,
        assignees=Assignees(roles=["approver"]),
        delivery_id=f"approval:t-1:a-1:created:{channel}",
    )


async def test_webhook_is_signed_and_slack_gets_text(receiver: Receiver, smtp: tuple[Inbox, int]) -> None:
    notifier = Notifier(_config(receiver, smtp[1]))
    await notifier.send(_notice("ops-hook"))
    await notifier.send(_notice("ops-slack"))
    (hook_headers, hook_body), (_, slack_body) = receiver.requests
    assert verify(SECRET, hook_headers[SIGNATURE_HEADER.lower()], hook_body)
    assert not verify("wrong-secret", hook_headers[SIGNATURE_HEADER.lower()], hook_body)
    assert not verify(SECRET, hook_headers[SIGNATURE_HEADER.lower()], hook_body + b" ")
    assert hook_headers[DELIVERY_HEADER.lower()] == "approval:t-1:a-1:created:ops-hook"
    event = json.loads(hook_body)
    assert event["type"] == "approval.created"
    assert event["url"] == "https://nexus.example.com/console/approvals/a-1"
    slack = json.loads(slack_body)
    assert set(slack) == {"text"}
    assert slack["text"].startswith("Approval requested: Refund 1200 EUR")


async def test_email_reaches_local_smtp_server(receiver: Receiver, smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    await Notifier(_config(receiver, port)).send(_notice("ops-mail"))
    sender, rcpts, raw = inbox.messages[0]
    assert sender == "nexus@example.com"
    assert rcpts == ["ops@example.com"]
    message = message_from_bytes(raw)
    assert message["Subject"] == "Approval requested: Refund 1200 EUR"
    assert "https://nexus.example.com/console/approvals/a-1" in message.get_payload()


@pytest.mark.parametrize("host", ["127.0.0.1", "169.254.169.254", "10.1.2.3", "[::1]"])
async def test_private_destinations_are_refused_unless_allowed(host: str) -> None:
    config = NotificationSettings.model_validate(
        {"channels": {"ops-hook": {"kind": "webhook", "url": f"http://{host}:9/hook"}}}
    )
    with pytest.raises(NotifyConfigError):
        await Notifier(config).send(_notice("ops-hook"))
    with pytest.raises(NotifyConfigError):
        await Notifier(config).send(_notice("unknown-channel"))


async def test_workflow_notifies_created_and_decided_with_retries(
    temporal_client: Client,
    task_queue: str,
    tenant: str,
    sessions: async_sessionmaker[AsyncSession],
    redis_client: Redis,
    receiver: Receiver,
    smtp: tuple[Inbox, int],
) -> None:
    receiver.fail_first = 1  # the first delivery attempt fails: Temporal retries the activity
    inbox, port = smtp
    req = request(
        tenant,
        approval_id=uuid.uuid4().hex[:12],
        notify=[NotifyTarget(channel="ops-hook"), NotifyTarget(channel="ops-mail")],
    )
    async with approval_worker(temporal_client, sessions, redis_client, task_queue, _config(receiver, port)):
        handle = await temporal_client.start_workflow(
            ApprovalWorkflow.run,
            req,
            id=approval_workflow_id(tenant, req.approval_id),
            task_queue=task_queue,
        )
        for _ in range(100):  # let "created" go out (after one failed attempt) before deciding
            if receiver.requests:
                break
            await asyncio.sleep(0.1)
        await send_decision(temporal_client, tenant, req.approval_id, decision(tenant))
        result = await handle.result()
    assert result.status is ApprovalStatus.approved
    types = [json.loads(body)["type"] for _, body in receiver.requests]
    assert types == ["approval.created", "approval.decided"]
    assert receiver.seen == 3
    subjects = [message_from_bytes(raw)["Subject"] for _, _, raw in inbox.messages]
    assert subjects == [
        "Approval requested: Send the quarterly letter",
        "Approval approved: Send the quarterly letter",
    ]
