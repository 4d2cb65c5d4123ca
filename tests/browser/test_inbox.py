"""The approval inbox in a real headless Chromium (Debian's, driven by Playwright).

Skipped when ``/usr/bin/chromium`` is missing (``make browser-deps`` installs it as root).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cli.embedded import free_port
from core.config import Settings
from core.temporal.client import connect
from tests.api.approvals_support import ensure_approval_routes
from tests.conftest import auth
from workers.main import build_worker

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Chromium is not installed (/usr/bin/chromium); run `make browser-deps`"
)
MakeKey = Callable[..., Awaitable[str]]


@pytest_asyncio.fixture(scope="module")
async def base_url(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[str]:
    """The real app under uvicorn on a free port, with a worker on the API's task queue."""
    import uvicorn

    from api.app import create_app

    application = create_app(settings)
    ensure_approval_routes(application)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(application, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    client = await connect(settings)
    redis = Redis.from_url(settings.redis.url)
    async with build_worker(client, settings, sessions, redis, settings.temporal.task_queue):
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
        server.should_exit = True
        await serving
    await redis.aclose()


async def test_login_see_pending_approve_with_comment(
    base_url: str, make_key: MakeKey, tenant_id: str
) -> None:
    from playwright.async_api import async_playwright, expect

    owner = await make_key(tenant_id)
    approver = await make_key(tenant_id, role="approver")
    title = f"Publish press release {uuid.uuid4().hex[:6]}"
    context = "# Draft\n\nDear **press**,\n\n<script>window.pwned = 1</script><img src=x onerror=alert(1)>"
    async with httpx.AsyncClient(base_url=base_url, trust_env=False) as http:
        created = await http.post(
            "/v1/approvals",
            json={"title": title, "context_markdown": context, "assignees": {"roles": ["approver"]}},
            headers=auth(owner),
        )
        assert created.status_code == 202, created.text
        approval_id = created.json()["id"]

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            page = await browser.new_page()
            await page.goto(f"{base_url}/console/approvals")
            await expect(page).to_have_url(f"{base_url}/console/login")
            await page.fill("#api_key", approver)
            await page.click("button[type=submit]")
            await expect(page).to_have_url(f"{base_url}/console/approvals")
            # The key lives in an HttpOnly cookie: scripts cannot read it.
            assert approver not in await page.evaluate("document.cookie")

            row = page.locator(f"tr[data-approval='{approval_id}']")
            await expect(row).to_contain_text(title)
            await row.get_by_role("link").click()
            await expect(page.locator("section.context h1")).to_have_text("Draft")
            await expect(page.locator("section.context strong")).to_have_text("press")
            # Raw HTML in the context is shown as text, never executed.
            await expect(page.locator("section.context")).to_contain_text("<script>window.pwned = 1</script>")
            assert await page.locator("section.context script, section.context img").count() == 0
            assert await page.evaluate("window.pwned === undefined")

            await page.fill("#comment", "Ship it on Monday")
            await page.click("button[value=approve]")
            outcome = page.locator("#outcome")
            await expect(outcome).to_contain_text("Approved by key:")
            await expect(outcome).to_contain_text("Ship it on Monday")

            await page.goto(f"{base_url}/console/approvals")
            await expect(page.locator(f"tr[data-approval='{approval_id}']")).to_have_count(0)
            await page.goto(f"{base_url}/console/approvals?view=history")
            await expect(page.locator(f"tr[data-approval='{approval_id}']")).to_contain_text("approve")
        finally:
            await browser.close()
