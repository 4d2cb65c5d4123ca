"""The certified-connector conformance suite: one set of checks run against every connector.

Each connector is exercised against its local simulator (``connectors.simulators``) through a
``Harness`` (``connectors.simulators.harnesses``) that says how to build it, which action is
its idempotent create/upsert, which one is compensable and how to inspect the simulator state.
Every check runs on a fresh simulator.

Checks:

- ``auth_failure_mapped``: bad credentials → ``ConnectorError(kind=auth)``, not retryable, no
  secret in the message, and exactly one request (connectors make zero retries).
- ``pagination_complete``: sync from scratch in small pages returns every seeded record exactly
  once (and the paginated query action, where there is one, does too).
- ``throttling_retried_after_delay``: the next request answers 429 with ``Retry-After: 1``; the
  connector surfaces ``kind=throttled, retry_after=1`` after one request; a small driver that
  mimics Temporal sleeps that delay and calls again, which succeeds.
- ``idempotent_upsert_on_retry``: the simulator commits a create and loses its response; the
  retry with the same idempotency key succeeds and leaves exactly one record.
- ``compensation_undoes_action``: the compensable action, then its declared compensation with
  ``compensation_input(input, output)``, leaves the record undone; undoing twice is harmless.
- ``sync_resumes_from_checkpoint``: reading from a (JSON round-tripped) checkpoint twice gives
  the same page, never repeats earlier records, and after a record changes a read from the
  final checkpoint returns exactly that record.

``python -m connectors.conformance [--write] [--type T]`` prints the results; ``--write``
stores them in ``connectors/certification.json`` (shown by ``GET /v1/connectors``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from connectors.base import Connector, ConnectorError, ErrorKind, SyncPage
from connectors.registry import CERTIFICATION_FILE
from connectors.simulators.harnesses import HARNESSES, Harness, call
from connectors.simulators.serve import RunningSimulator, start

SUITE_VERSION = 1
CHECKS = (
    "auth_failure_mapped",
    "pagination_complete",
    "throttling_retried_after_delay",
    "idempotent_upsert_on_retry",
    "compensation_undoes_action",
    "sync_resumes_from_checkpoint",
)
RETRY_AFTER = 1.0
PAGE_SIZE = 10


class CheckFailed(AssertionError):
    """A conformance expectation that did not hold."""


@dataclass(frozen=True)
class CheckResult:
    """Outcome of one check for one connector (``detail`` is deterministic)."""

    connector: str
    check: str
    passed: bool
    detail: str
    seconds: float


def expect(condition: bool, message: str) -> None:
    """Fail the running check with ``message`` unless ``condition``."""
    if not condition:
        raise CheckFailed(message)


async def expect_error(awaitable: Awaitable[Any]) -> ConnectorError:
    """The ``ConnectorError`` the call raises (failing the check if it succeeds)."""
    try:
        await awaitable
    except ConnectorError as exc:
        return exc
    raise CheckFailed("the call succeeded but should have failed")


async def read_all(
    connector: Connector, obj: str, checkpoint: dict[str, Any] | None
) -> tuple[list[str], Any, int]:
    """Every external id from ``checkpoint`` on, the final checkpoint, and the page count."""
    ids: list[str] = []
    pages = 0
    while True:
        page: SyncPage = await call(connector, "read_page", obj, checkpoint, PAGE_SIZE)
        pages += 1
        ids.extend(r.external_id for r in page.records)
        checkpoint = json.loads(json.dumps(page.checkpoint))  # what the store persists
        if not page.has_more:
            return ids, checkpoint, pages
        expect(pages < 10_000, "sync never reported the last page")


class Run:
    """One check's environment: a fresh simulator served locally and connectors built on it."""

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.sim = harness.make_simulator()
        self.served: RunningSimulator = start(self.sim, tls=harness.tls)
        self.connectors: list[Connector] = []

    def connector(self, *, good: bool = True) -> Connector:
        h = self.harness
        creds = h.credentials(self.served.base_url) if good else h.bad_credentials(self.served.base_url)
        cls = h.connector_class()
        conn = cls(
            cls.config_model.model_validate(h.config(self.served.base_url)),
            cls.credentials_model.model_validate(creds),
            verify=self.served.verify,
        )
        self.connectors.append(conn)
        return conn

    async def close(self) -> None:
        for conn in self.connectors:
            await call(conn, "close")
        await asyncio.to_thread(self.served.stop)


async def auth_failure_mapped(run: Run) -> str:
    conn = run.connector(good=False)
    run.sim.reset_counters()
    err = await expect_error(call(conn, "test"))
    expect(err.kind is ErrorKind.auth, f"expected kind auth, got {err.kind.value}")
    expect(not err.retryable, "an auth failure must not be retryable")
    text = f"{err} {err!r}"
    for secret in run.harness.secrets:
        expect(secret not in text, "the error message contains a secret")
    expect(run.sim.requests == 1, f"expected exactly 1 request (no retries), saw {run.sim.requests}")
    return f"HTTP {err.status} mapped to auth, not retryable, 1 request, no secret in message"


async def pagination_complete(run: Run) -> str:
    h = run.harness
    conn = run.connector()
    ids, _, pages = await read_all(conn, h.sync_object, None)
    expect(len(ids) == h.seeded, f"sync read {len(ids)} records, expected {h.seeded}")
    expect(len(set(ids)) == len(ids), "sync returned a record twice")
    expect(pages <= math.ceil(h.seeded / PAGE_SIZE) + 1, f"sync used {pages} pages")
    detail = f"sync: {len(ids)} records in {pages} pages of {PAGE_SIZE}"
    if h.paginate is not None:
        listed = await h.paginate(conn, PAGE_SIZE)
        expect(len(listed) == h.seeded, f"paginated query read {len(listed)} records, expected {h.seeded}")
        expect(len(set(listed)) == len(listed), "paginated query returned a record twice")
        detail += f"; {h.paginate_label}: {len(listed)} records"
    return detail


async def throttling_retried_after_delay(run: Run) -> str:
    conn = run.connector()
    await call(conn, "test")  # warm any token cache so the throttled request is the API call
    run.sim.reset_counters()
    run.sim.faults.throttle_next(1, retry_after=RETRY_AFTER)
    started = time.monotonic()
    err = await expect_error(call(conn, "test"))
    expect(err.kind is ErrorKind.throttled, f"expected kind throttled, got {err.kind.value}")
    expect(err.retryable, "throttling must be retryable")
    expect(err.retry_after == RETRY_AFTER, f"expected retry_after {RETRY_AFTER:g}, got {err.retry_after}")
    expect(run.sim.requests == 1, f"expected 1 request before surfacing the 429, saw {run.sim.requests}")
    assert err.retry_after is not None
    await asyncio.sleep(err.retry_after)  # the retry driver, as Temporal's next_retry_delay would
    await call(conn, "test")
    waited = time.monotonic() - started
    expect(waited >= RETRY_AFTER, "the retry came before the stated delay")
    return f"429 surfaced as throttled with retry_after={RETRY_AFTER:g}s after 1 request; retry succeeded"


async def idempotent_upsert_on_retry(run: Run) -> str:
    h = run.harness
    conn = run.connector()
    key = f"conformance-{uuid.uuid4().hex[:12]}"
    name, payload = h.upsert_action
    await call(conn, "test")  # log in first: the lost response must be the action's write
    run.sim.faults.lose_next_write_response(1)
    err = await expect_error(call(conn, "run_action", name, payload, key))
    expect(err.retryable, f"a lost response must be retryable, got {err.kind.value}")
    expect(h.count_by_key(run.sim, key) == 1, "the first attempt was not committed by the simulator")
    first = await call(conn, "run_action", name, payload, key)
    again = await call(conn, "run_action", name, payload, key)
    count = h.count_by_key(run.sim, key)
    expect(count == 1, f"{count} records exist for one idempotency key")
    expect(h.record_id(first) == h.record_id(again), "retries returned different records")
    return f"{name}: write committed + response lost, 2 retries → 1 record"


async def compensation_undoes_action(run: Run) -> str:
    h = run.harness
    conn = run.connector()
    name, payload = h.compensable_action
    spec = conn.actions[name]
    expect(spec.compensation is not None, f"{name} declares no compensation")
    assert spec.compensation is not None
    expect(spec.compensation in conn.actions, f"compensation {spec.compensation} is not an action")
    output = await call(conn, "run_action", name, payload, f"comp-{uuid.uuid4().hex[:12]}")
    expect(not h.is_undone(run.sim, output), "the action had no visible effect")
    undo = spec.undo_payload(payload, output)
    expect(undo is not None, f"{name} has no compensation_input")
    assert undo is not None
    await call(conn, "run_action", spec.compensation, undo, f"undo-{uuid.uuid4().hex[:12]}")
    expect(h.is_undone(run.sim, output), f"{spec.compensation} did not undo {name}")
    await call(conn, "run_action", spec.compensation, undo, f"undo-{uuid.uuid4().hex[:12]}")
    expect(h.is_undone(run.sim, output), "a second compensation changed the outcome")
    return f"{name} undone by {spec.compensation} (twice, idempotently)"


async def sync_resumes_from_checkpoint(run: Run) -> str:
    h = run.harness
    conn = run.connector()
    first: SyncPage = await call(conn, "read_page", h.sync_object, None, PAGE_SIZE)
    checkpoint = json.loads(json.dumps(first.checkpoint))
    expect(checkpoint is not None and first.has_more, "the first page gave no checkpoint")
    a: SyncPage = await call(conn, "read_page", h.sync_object, checkpoint, PAGE_SIZE)
    b: SyncPage = await call(conn, "read_page", h.sync_object, checkpoint, PAGE_SIZE)
    ids_a, ids_b = [r.external_id for r in a.records], [r.external_id for r in b.records]
    expect(ids_a == ids_b, "reading twice from one checkpoint gave different pages")
    seen = {r.external_id for r in first.records}
    expect(not seen & set(ids_a), "the page after the checkpoint repeats earlier records")
    rest, final, _ = await read_all(conn, h.sync_object, checkpoint)
    expect(len(seen) + len(rest) == h.seeded, "first page + resumed pages do not cover every record")
    changed = h.touch(run.sim, 0)
    expect(changed in seen, "the touched record was not on the first page")
    after, _, _ = await read_all(conn, h.sync_object, final)
    expect(after == [changed], f"after one change, resuming read {len(after)} records, expected exactly it")
    return "resume is exact (same page twice, nothing repeated); a later change is picked up alone"


CHECK_FUNCTIONS: dict[str, Callable[[Run], Awaitable[str]]] = {
    "auth_failure_mapped": auth_failure_mapped,
    "pagination_complete": pagination_complete,
    "throttling_retried_after_delay": throttling_retried_after_delay,
    "idempotent_upsert_on_retry": idempotent_upsert_on_retry,
    "compensation_undoes_action": compensation_undoes_action,
    "sync_resumes_from_checkpoint": sync_resumes_from_checkpoint,
}


async def run_check(type_: str, check: str) -> CheckResult:
    """Run one check against connector ``type_`` on a fresh simulator."""
    run = Run(HARNESSES[type_]())
    started = time.monotonic()
    try:
        detail = await CHECK_FUNCTIONS[check](run)
        passed = True
    except (CheckFailed, ConnectorError) as exc:
        detail, passed = f"{type(exc).__name__}: {exc}", False
    except Exception as exc:  # a crash in the connector is a failed check, not a crashed suite
        detail, passed = f"unexpected {type(exc).__name__}: {exc}", False
    finally:
        await run.close()
    return CheckResult(type_, check, passed, detail, round(time.monotonic() - started, 3))


async def run_suite(types: list[str] | None = None) -> list[CheckResult]:
    """Every check against every (or the given) connector type."""
    results = []
    for type_ in types or list(HARNESSES):
        for check in CHECKS:
            results.append(await run_check(type_, check))
    return results


def certification(results: list[CheckResult]) -> dict[str, Any]:
    """The deterministic certification document (no timings) for ``certification.json``."""
    connectors: dict[str, Any] = {}
    for r in results:
        entry = connectors.setdefault(r.connector, {"certified": True, "checks": {}})
        entry["checks"][r.check] = {"passed": r.passed, "detail": r.detail}
        entry["certified"] = entry["certified"] and r.passed
    return {"suite_version": SUITE_VERSION, "checks": list(CHECKS), "connectors": connectors}


def main(argv: list[str] | None = None) -> int:
    """CLI: run the suite, print results, optionally write ``certification.json``."""
    parser = argparse.ArgumentParser(
        prog="python -m connectors.conformance", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--write", action="store_true", help=f"write {CERTIFICATION_FILE.name}")
    parser.add_argument("--type", action="append", dest="types", choices=sorted(HARNESSES))
    args = parser.parse_args(argv)
    results = asyncio.run(run_suite(args.types))
    for r in results:
        mark = "PASS" if r.passed else "FAIL"
        sys.stdout.write(f"{mark}  {r.connector:<11} {r.check:<32} {r.seconds:6.2f}s  {r.detail}\n")
    if args.write:
        if args.types:
            sys.stderr.write("--write needs the full suite (no --type)\n")
            return 2
        CERTIFICATION_FILE.write_text(json.dumps(certification(results), indent=2) + "\n", encoding="utf-8")
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
