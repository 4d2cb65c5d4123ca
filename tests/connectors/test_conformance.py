"""Every connector passes the shared conformance suite against its simulator, and the committed
``connectors/certification.json`` (shown by GET /v1/connectors) matches a fresh run."""

from __future__ import annotations

import asyncio
import json

import pytest

from connectors import conformance
from connectors.registry import CERTIFICATION_FILE, connector_types
from connectors.simulators.harnesses import HARNESSES


@pytest.fixture(scope="module")
def results() -> dict[tuple[str, str], conformance.CheckResult]:
    """One full run of the suite (about 12 s), shared by the tests below."""
    return {(r.connector, r.check): r for r in asyncio.run(conformance.run_suite())}


def test_every_registered_connector_has_a_harness() -> None:
    assert sorted(HARNESSES) == sorted(cls.type for cls in connector_types())


@pytest.mark.parametrize("check", conformance.CHECKS)
@pytest.mark.parametrize("connector", sorted(HARNESSES))
def test_check_passes(
    results: dict[tuple[str, str], conformance.CheckResult], connector: str, check: str
) -> None:
    result = results[(connector, check)]
    assert result.passed, result.detail


def test_committed_certification_matches_a_fresh_run(
    results: dict[tuple[str, str], conformance.CheckResult],
) -> None:
    fresh = conformance.certification(list(results.values()))
    committed = json.loads(CERTIFICATION_FILE.read_text(encoding="utf-8"))
    assert committed == fresh, "run `.venv/bin/python -m connectors.conformance --write` and commit the file"


def test_sap_odata_v4_passes_the_suite_too() -> None:
    from connectors.simulators import harnesses

    async def run_all() -> list[conformance.CheckResult]:
        out = []
        for check in ("pagination_complete", "idempotent_upsert_on_retry", "sync_resumes_from_checkpoint"):
            run = conformance.Run(harnesses.sap("v4"))
            try:
                await conformance.CHECK_FUNCTIONS[check](run)
                out.append(conformance.CheckResult("sap-v4", check, True, "", 0))
            finally:
                await run.close()
        return out

    assert all(r.passed for r in asyncio.run(run_all()))
