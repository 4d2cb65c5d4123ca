"""LLM judges with scripted replies: strict verdict parsing (garbage is an error, never a pass),
reference-guided grading, pairwise position swapping."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
import uvicorn

import core.simulator as simulator
from cli.embedded import free_port
from core.providers import Catalog, ProviderRegistry, ProvidersSettings
from evals.contracts import EvalCase, MetricContext, MetricScore, MetricSpec, TargetOutput
from evals.judges import first_shown, pairwise
from evals.llm import provider_embed, provider_llm
from evals.metrics import score, score_all
from evals.testing import ScriptedLlm

CASE = EvalCase(id="case-1", input="What is the capital of France?", expected="Paris")
OUT = TargetOutput(text="The capital of France is Paris.")
RUBRIC = MetricSpec(name="judge_rubric", params={"rubric": "Answers correctly and concisely."})


async def judge(
    reply: str, spec: MetricSpec = RUBRIC, case: EvalCase = CASE
) -> tuple[ScriptedLlm, MetricScore]:
    llm = ScriptedLlm([reply])
    result = await score(spec, case, OUT, MetricContext(llm=llm, judge_model="judge-m"))
    return llm, result


@pytest.mark.parametrize(
    ("reply", "score_", "value"),
    [
        ('{"reason": "Correct.", "score": 5}', 5, 1.0),
        ('{"score": 4, "reason": "Mostly."}', 4, 0.75),
        ('```json\n{"score": 1, "reason": "Wrong."}\n```', 1, 0.0),
        ('  {"score": 3.0, "reason": "Ok.", "confidence": 0.5}  ', 3, 0.5),
    ],
)
async def test_rubric_verdicts_normalised(reply: str, score_: int, value: float) -> None:
    llm, result = await judge(reply)
    assert result.error is None
    assert result.value == value
    assert result.detail["score"] == score_
    assert result.passed is (value >= 0.75)
    assert result.cost_usd == pytest.approx(0.001)
    call = llm.calls[0]
    assert call["model"] == "judge-m"
    assert call["json_mode"] is True
    assert call["temperature"] == 0.0
    assert "Answers correctly and concisely." in str(call["user"])
    assert "<response>\nThe capital of France is Paris.\n</response>" in str(call["user"])


@pytest.mark.parametrize(
    "reply",
    [
        "5",
        "Score: 5",
        'The answer is great. {"score": 5, "reason": "x"}',
        '{"score": 5, "reason": "x"} and more',
        '{"score": "5", "reason": "x"}',
        '{"score": true, "reason": "x"}',
        '{"score": 6, "reason": "x"}',
        '{"score": 0, "reason": "x"}',
        '{"score": 4.5, "reason": "x"}',
        '{"score": NaN, "reason": "x"}',
        '{"reason": "x"}',
        '{"score": 5}',
        '[{"score": 5, "reason": "x"}]',
        "",
        '{"score": 5, "reason": "x"',
    ],
)
async def test_unparseable_verdict_is_an_error_never_a_pass(reply: str) -> None:
    _, result = await judge(reply)
    assert result.value is None
    assert result.passed is None
    assert result.error is not None
    assert result.error.startswith("unparseable judge verdict")
    assert result.cost_usd == pytest.approx(0.001)  # the call was paid for


async def test_reference_guided_grading_uses_the_expected_output() -> None:
    spec = MetricSpec(
        name="judge_reference", params={"criteria": "Numbers must match exactly.", "model": "ref-m"}
    )
    llm, result = await judge('{"reason": "Same city.", "score": 5}', spec)
    assert result.value == 1.0
    user = str(llm.calls[0]["user"])
    assert "<reference>\nParis\n</reference>" in user
    assert "Numbers must match exactly." in user
    assert llm.calls[0]["model"] == "ref-m"
    llm, result = await judge('{"reason": "x", "score": 5}', spec, CASE.model_copy(update={"expected": None}))
    assert result.error == "case has no expected output"
    assert llm.calls == []


async def test_judge_without_model_or_llm_is_an_error() -> None:
    result = await score(RUBRIC, CASE, OUT, MetricContext(llm=ScriptedLlm([])))
    assert result.error == "no judge model: set params.model or a default judge model"
    result = await score(RUBRIC, CASE, OUT, MetricContext(judge_model="m"))
    assert result.error == "no LLM is configured for this metric"


def test_first_shown_is_stable_and_balanced() -> None:
    orders = [first_shown(f"case-{i}") for i in range(200)]
    assert orders == [first_shown(f"case-{i}") for i in range(200)]
    assert 70 <= orders.count("a") <= 130


def _pairwise_case(first: str) -> EvalCase:
    return next(
        EvalCase(id=f"pw-{i}", input="Name a prime.") for i in range(100) if first_shown(f"pw-{i}") == first
    )


A, B = TargetOutput(text="Seven is prime."), TargetOutput(text="Nine is prime.")


@pytest.mark.parametrize("first", ["a", "b"])
async def test_pairwise_swaps_positions_and_agrees(first: str) -> None:
    def prefers_seven(system: str, user: str) -> str:
        one = user.index('<response id="1">')
        return '{"reason": "7 is prime.", "winner": "%s"}' % ("1" if "Seven" in user[one : one + 40] else "2")

    llm = ScriptedLlm(route=prefers_seven)
    verdict = await pairwise(_pairwise_case(first), A, B, MetricContext(llm=llm, judge_model="j"))
    assert (verdict.winner, verdict.error, verdict.inconsistent) == ("a", None, False)
    assert verdict.cost_usd == pytest.approx(0.002)
    shown_first = ["Seven" in str(c["user"]).split('<response id="1">')[1][:40] for c in llm.calls]
    assert shown_first == ([True, False] if first == "a" else [False, True])


async def test_pairwise_position_bias_becomes_an_inconsistent_tie() -> None:
    llm = ScriptedLlm(route=lambda s, u: '{"reason": "First is better.", "winner": "1"}')
    verdict = await pairwise(_pairwise_case("a"), A, B, MetricContext(llm=llm, judge_model="j"))
    assert (verdict.winner, verdict.inconsistent) == ("tie", True)
    assert "differ" in verdict.reason
    llm = ScriptedLlm(['{"reason": "Equal.", "winner": "tie"}', '{"reason": "Equal.", "winner": "tie"}'])
    assert (await pairwise(CASE, A, B, MetricContext(llm=llm, judge_model="j"))).winner == "tie"


async def test_pairwise_single_order_follows_the_case_id() -> None:
    llm = ScriptedLlm(['{"reason": "r", "winner": 1}'])
    verdict = await pairwise(
        _pairwise_case("b"), A, B, MetricContext(llm=llm, judge_model="j"), both_orders=False
    )
    assert verdict.winner == "b"  # b was shown first and position 1 won
    assert len(llm.calls) == 1


@pytest.mark.parametrize("bad", ['{"winner": "A", "reason": "r"}', "1", '{"winner": "1"}', "Response 1 wins"])
async def test_pairwise_unparseable_is_an_error(bad: str) -> None:
    llm = ScriptedLlm(['{"reason": "r", "winner": "1"}', bad])
    verdict = await pairwise(CASE, A, B, MetricContext(llm=llm, judge_model="j"))
    assert verdict.winner is None
    assert verdict.error is not None
    assert verdict.error.startswith("unparseable pairwise verdict")
    assert verdict.cost_usd == pytest.approx(0.002)


async def test_pairwise_failed_targets() -> None:
    llm = ScriptedLlm([])
    ctx = MetricContext(llm=llm, judge_model="j")
    failed = TargetOutput(text="", error="timeout")
    assert (await pairwise(CASE, failed, B, ctx)).winner == "b"
    assert (await pairwise(CASE, A, failed, ctx)).winner == "a"
    both = await pairwise(CASE, failed, failed, ctx)
    assert both.winner is None
    assert "both targets failed" in (both.error or "")
    assert llm.calls == []
    assert (await pairwise(CASE, A, B, MetricContext(llm=llm))).error == (
        "no judge model: set params.model or a default judge model"
    )


# --- the judge through the real provider layer, against the provider simulator over HTTP ---

SIM_SCENARIO = {
    "seed": 3,
    "rules": [{"match": "EVALS-SIM-RUBRIC", "answer": '{"reason": "Correct and concise.", "score": 4}'}],
}
# A judge model without the json capability: the adapter sends no response_format, so the
# simulator answers the rule's text as is (with json_object it would wrap it in {"answer": ...}).
SIM_CATALOG = """
version: 1
models:
  - {id: sim-openai/evals-judge, provider: sim-openai, upstream: evals-judge, capabilities: [chat],
     context_window: 16000, prices: {input: 1.0, output: 2.0}, regions: [local]}
"""


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def sim_registry(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[ProviderRegistry, Catalog]]:
    port = free_port()
    app = simulator.create_app(simulator.Scenario.model_validate(SIM_SCENARIO))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    for _ in range(250):
        if server.started:
            break
        await asyncio.sleep(0.02)
    assert server.started, "simulator did not start"
    overlay = tmp_path_factory.mktemp("evals-sim") / "catalog.yaml"
    overlay.write_text(SIM_CATALOG)
    settings = ProvidersSettings(simulator_url=f"http://127.0.0.1:{port}", catalog_path=overlay)
    catalog = Catalog.load(settings)
    async with httpx.AsyncClient(timeout=settings.timeouts.httpx_timeout()) as client:
        yield ProviderRegistry(catalog, settings, client), catalog
    server.should_exit = True
    await task


@pytest.mark.asyncio(loop_scope="session")
async def test_rubric_judge_through_the_provider_layer(
    sim_registry: tuple[ProviderRegistry, Catalog],
) -> None:
    registry, catalog = sim_registry
    ctx = MetricContext(llm=provider_llm(registry, catalog), judge_model="sim-openai/evals-judge")
    spec = MetricSpec(name="judge_rubric", params={"rubric": "EVALS-SIM-RUBRIC: answers the question."})
    result = await score(spec, CASE, OUT, ctx)
    assert (result.value, result.passed, result.error) == (0.75, True, None)
    assert result.detail["reason"] == "Correct and concise."
    assert result.detail["model"] == "sim-openai/evals-judge"
    assert result.cost_usd > 0

    reply = await provider_llm(registry, catalog)(
        "sim-openai/evals-judge", [{"role": "user", "content": "EVALS-SIM-RUBRIC"}]
    )
    assert reply.cost_usd == pytest.approx((reply.input_tokens * 1.0 + reply.output_tokens * 2.0) / 1_000_000)

    # Prose from the simulated judge (no rule matches) is an error, never a pass.
    prose = await score(MetricSpec(name="judge_rubric", params={"rubric": "Be kind."}), CASE, OUT, ctx)
    assert (prose.value, prose.passed) == (None, None)
    assert prose.error is not None
    assert prose.error.startswith("unparseable judge verdict")
    assert prose.cost_usd > 0

    # A JSON-mode model answers JSON of the wrong shape ({"answer": ...}): also an error.
    wrapped = await score(
        spec.model_copy(update={"params": {**spec.params, "model": "sim-openai/gpt-4o-mini"}}), CASE, OUT, ctx
    )
    assert wrapped.value is None
    assert "'score' must be an integer" in (wrapped.error or "")


@pytest.mark.asyncio(loop_scope="session")
async def test_embedding_similarity_through_the_provider_layer(
    sim_registry: tuple[ProviderRegistry, Catalog],
) -> None:
    registry, _ = sim_registry
    embed = provider_embed(registry, "sim-openai/text-embedding-3-small")
    ctx = MetricContext(embed=embed)
    same = await score(
        MetricSpec(name="embedding_similarity"), CASE.model_copy(update={"expected": OUT.text}), OUT, ctx
    )
    other = await score(MetricSpec(name="embedding_similarity"), CASE, OUT, ctx)
    assert same.value == pytest.approx(1.0)
    assert other.value is not None
    assert other.value < 0.99
    assert embed.cost_usd > 0


class UpstreamDown(Exception):
    pass


async def test_provider_exceptions_propagate_unwrapped_from_score_all() -> None:
    def fail(system: str, user: str) -> str:
        raise UpstreamDown("503")

    ctx = MetricContext(llm=ScriptedLlm(route=fail), judge_model="j")
    specs = [MetricSpec(name="exact"), RUBRIC, MetricSpec(name="judge_reference")]
    with pytest.raises(UpstreamDown, match="503"):
        await score_all(specs, CASE, OUT, ctx)
