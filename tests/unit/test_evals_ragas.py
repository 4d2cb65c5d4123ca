"""Native RAGAS metrics with a scripted LLM and a table embedder giving known values."""

from __future__ import annotations

import json

import pytest

from evals.contracts import EvalCase, MetricContext, MetricScore, MetricSpec, TargetOutput
from evals.metrics import score
from evals.rag_metrics import (
    ENTAILMENT_SYSTEM,
    PRECISION_SYSTEM,
    QUESTIONS_SYSTEM,
    RECALL_SYSTEM,
    STATEMENTS_SYSTEM,
    average_precision,
)
from evals.testing import ScriptedLlm, TableEmbed

CASE = EvalCase(
    id="rag-1",
    input="Who wrote the Analytical Engine notes and when?",
    expected="Ada Lovelace wrote the notes. She published them in 1843.",
    contexts=["Ada Lovelace translated Menabrea's article.", "Her notes were published in 1843."],
)
OUT = TargetOutput(
    text="Ada Lovelace wrote them in 1843, in Paris.", contexts=["retrieved A", "retrieved B", "retrieved C"]
)


def verdicts(key: str, values: list[int]) -> str:
    return json.dumps({"verdicts": [{key: i + 1, "reason": "r", "verdict": v} for i, v in enumerate(values)]})


async def run(
    name: str,
    llm: ScriptedLlm,
    *,
    embed: TableEmbed | None = None,
    case: EvalCase = CASE,
    output: TargetOutput = OUT,
    **params: object,
) -> MetricScore:
    ctx = MetricContext(llm=llm, embed=embed, judge_model="judge")
    return await score(MetricSpec(name=name, params=params), case, output, ctx)


async def test_faithfulness_is_supported_over_extracted_statements() -> None:
    statements = [
        "Ada Lovelace wrote the notes.",
        "The notes were written in 1843.",
        "They were written in Paris.",
    ]
    llm = ScriptedLlm([json.dumps({"statements": statements}), verdicts("statement", [1, 1, 0])])
    result = await run("faithfulness", llm)
    assert result.value == pytest.approx(2 / 3)
    assert result.passed is False  # default threshold 0.8
    assert result.cost_usd == pytest.approx(0.002)
    assert [s["supported"] for s in result.detail["statements"]] == [True, True, False]
    assert result.detail["contexts_from"] == "output"
    assert llm.calls[0]["system"] == STATEMENTS_SYSTEM
    assert llm.calls[1]["system"] == ENTAILMENT_SYSTEM
    assert '<context n="3">\nretrieved C\n</context>' in str(llm.calls[1]["user"])
    assert '<statement n="3">\nThey were written in Paris.\n</statement>' in str(llm.calls[1]["user"])


async def test_faithfulness_verdicts_may_come_in_any_order_and_contexts_fall_back_to_the_case() -> None:
    shuffled = json.dumps({"verdicts": [{"statement": 2, "verdict": 0}, {"statement": 1, "verdict": True}]})
    llm = ScriptedLlm([json.dumps({"statements": ["s1", "s2"]}), shuffled])
    result = await run("faithfulness", llm, output=TargetOutput(text="answer"))
    assert result.value == 0.5
    assert result.detail["contexts_from"] == "case"
    assert "Her notes were published in 1843." in str(llm.calls[1]["user"])


@pytest.mark.parametrize(
    ("replies", "error"),
    [
        (["statements: a, b"], "unparseable statement extraction"),
        ([json.dumps({"statements": "a"})], "unparseable statement extraction"),
        ([json.dumps({"statements": []})], "no statements could be extracted"),
        ([json.dumps({"statements": ["a", "b"]}), verdicts("statement", [1])], "expected 2 verdicts, got 1"),
        (
            [
                json.dumps({"statements": ["a", "b"]}),
                json.dumps({"verdicts": [{"statement": 1, "verdict": 1}] * 2}),
            ],
            "judged twice",
        ),
        ([json.dumps({"statements": ["a"]}), verdicts("statement", [2])], "must be 0 or 1"),
        ([json.dumps({"statements": ["a"]}), "yes"], "unparseable entailment verdicts"),
    ],
)
async def test_faithfulness_garbage_is_an_error(replies: list[str], error: str) -> None:
    llm = ScriptedLlm(list(replies))
    result = await run("faithfulness", llm)
    assert (result.value, result.passed) == (None, None)
    assert error in (result.error or "")
    assert result.cost_usd == pytest.approx(0.001 * len(replies))


async def test_faithfulness_without_contexts_is_an_error() -> None:
    result = await run(
        "faithfulness",
        ScriptedLlm([]),
        case=CASE.model_copy(update={"contexts": []}),
        output=TargetOutput(text="x"),
    )
    assert result.error is not None
    assert result.error.startswith("no contexts")
    forced = await run("faithfulness", ScriptedLlm([]), contexts="output", output=TargetOutput(text="x"))
    assert forced.error is not None
    assert forced.error.startswith("no contexts")


async def test_answer_relevancy_mean_cosine_of_generated_questions() -> None:
    generated = ["Who wrote the notes?", "When were the notes written?", "Where was Ada?"]
    embed = TableEmbed(
        {CASE.input: [1.0, 0.0], generated[0]: [2.0, 0.0], generated[1]: [0.6, 0.8], generated[2]: [0.0, 1.0]}
    )
    llm = ScriptedLlm([json.dumps({"questions": generated, "noncommittal": 0})])
    result = await run("answer_relevancy", llm, embed=embed)
    assert result.value == pytest.approx((1.0 + 0.6 + 0.0) / 3)
    assert result.detail["similarities"] == pytest.approx([1.0, 0.6, 0.0])
    assert llm.calls[0]["system"] == QUESTIONS_SYSTEM.format(n=3)
    assert CASE.input not in str(llm.calls[0]["user"])  # questions come from the answer alone


async def test_answer_relevancy_noncommittal_is_zero_and_extra_questions_are_cut() -> None:
    llm = ScriptedLlm([json.dumps({"questions": ["q"], "noncommittal": 1})])
    result = await run("answer_relevancy", llm, embed=TableEmbed({}))
    assert (result.value, result.detail["noncommittal"]) == (0.0, True)
    embed = TableEmbed({CASE.input: [1.0, 0.0], "q1": [1.0, 0.0]})
    llm = ScriptedLlm([json.dumps({"questions": ["q1", "q2", "q3"], "noncommittal": 0})])
    assert (await run("answer_relevancy", llm, embed=embed, questions=1)).value == pytest.approx(1.0)


@pytest.mark.parametrize(
    "reply",
    [
        '{"questions": ["q"]}',
        '{"questions": [], "noncommittal": 0}',
        '{"questions": [1], "noncommittal": 0}',
        "q1? q2?",
    ],
)
async def test_answer_relevancy_garbage_is_an_error(reply: str) -> None:
    result = await run("answer_relevancy", ScriptedLlm([reply]), embed=TableEmbed({}))
    assert result.value is None
    assert result.error is not None


async def test_answer_relevancy_needs_an_embedder() -> None:
    llm = ScriptedLlm([json.dumps({"questions": ["q"], "noncommittal": 0})])
    result = await run("answer_relevancy", llm)
    assert result.error == "no embedder is configured for this metric"
    assert result.cost_usd == pytest.approx(0.001)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1, 1, 1], 1.0),
        ([0, 0, 0], 0.0),
        ([1, 0, 1], (1 + 2 / 3) / 2),
        ([0, 1, 1], (1 / 2 + 2 / 3) / 2),
        ([0, 0, 1, 1, 0], (1 / 3 + 2 / 4) / 2),  # 0.417, the textbook example
    ],
)
def test_average_precision(values: list[int], expected: float) -> None:
    assert average_precision(values) == pytest.approx(expected)


async def test_context_precision_uses_reference_and_rank() -> None:
    llm = ScriptedLlm([verdicts("context", [0, 1, 1])])
    result = await run("context_precision", llm)
    assert result.value == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert result.detail["verdicts"] == [0, 1, 1]
    assert llm.calls[0]["system"] == PRECISION_SYSTEM
    assert "<reference>\nAda Lovelace wrote the notes." in str(llm.calls[0]["user"])
    missing = await run("context_precision", ScriptedLlm([]), case=CASE.model_copy(update={"expected": None}))
    assert missing.error is not None
    assert "needs the reference" in missing.error
    short = await run("context_precision", ScriptedLlm([verdicts("context", [1, 1])]))
    assert "expected 3 verdicts, got 2" in (short.error or "")


async def test_context_recall_attributed_reference_statements() -> None:
    reply = json.dumps(
        {
            "statements": [
                {"statement": "Ada Lovelace wrote the notes.", "reason": "r", "attributed": 0},
                {"statement": "She published them in 1843.", "reason": "r", "attributed": 1},
                {"statement": "They were about the engine.", "reason": "r", "attributed": 1},
                {"statement": "They included an algorithm.", "reason": "r", "attributed": 1},
            ]
        }
    )
    llm = ScriptedLlm([reply])
    result = await run("context_recall", llm, contexts="case")
    assert result.value == pytest.approx(0.75)
    assert result.passed is False  # default threshold 0.8
    assert result.detail["contexts_from"] == "case"
    assert llm.calls[0]["system"] == RECALL_SYSTEM
    assert "Her notes were published in 1843." in str(llm.calls[0]["user"])
    for bad in (
        '{"statements": []}',
        '{"statements": [{"statement": "s", "attributed": "yes"}]}',
        '{"statements": ["s"]}',
    ):
        result = await run("context_recall", ScriptedLlm([bad]))
        assert result.value is None
        assert result.error is not None
