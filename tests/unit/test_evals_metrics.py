"""evals.metrics: each non-LLM metric against known values, the registry and its validation."""

from __future__ import annotations

import math

import pytest
import sacrebleu

from evals.contracts import EvalCase, MetricContext, MetricSpec, TargetOutput
from evals.metrics import (
    METRIC_NAMES,
    MetricSpecError,
    needs_embeddings,
    needs_llm,
    score,
    score_all,
    validate_specs,
)
from evals.metrics.json_schema import validate

CTX = MetricContext()


def case(expected: str | None = "The cat sat on the mat.") -> EvalCase:
    return EvalCase(id="c1", input="Describe the picture.", expected=expected)


async def value(
    name: str, text: str, expected: str | None = "The cat sat on the mat.", **params: object
) -> float:
    result = await score(MetricSpec(name=name, params=params), case(expected), TargetOutput(text=text), CTX)
    assert result.error is None, result.error
    assert result.value is not None
    return result.value


def test_registry_names() -> None:
    assert METRIC_NAMES == (
        "exact", "normalized_match", "bleu", "chrf", "rouge1", "rouge2", "rougeL", "embedding_similarity",
        "json_schema", "latency", "cost", "judge_rubric", "judge_reference", "faithfulness",
        "answer_relevancy", "context_precision", "context_recall",
    )  # fmt: skip
    llm = {n for n in METRIC_NAMES if needs_llm(MetricSpec(name=n))}
    assert llm == {
        "judge_rubric",
        "judge_reference",
        "faithfulness",
        "answer_relevancy",
        "context_precision",
        "context_recall",
    }
    assert {n for n in METRIC_NAMES if needs_embeddings(MetricSpec(name=n))} == {
        "embedding_similarity",
        "answer_relevancy",
    }


async def test_exact_strips_and_is_case_sensitive_by_default() -> None:
    assert await value("exact", "  Paris\n", "Paris") == 1.0
    assert await value("exact", "paris", "Paris") == 0.0
    assert await value("exact", "paris", "Paris", case_sensitive=False) == 1.0
    assert await value("exact", "Paris.", "Paris") == 0.0


async def test_normalized_match_like_squad() -> None:
    assert await value("normalized_match", "The  Eiffel-Tower!", "eiffel tower") == 1.0
    assert await value("normalized_match", "an Apple", "APPLE.") == 1.0
    assert await value("normalized_match", "ｆｕｌｌｗｉｄｔｈ", "fullwidth") == 1.0  # NFKC
    assert await value("normalized_match", "STRASSE", "straße") == 1.0  # casefold
    assert (
        await value("normalized_match", "«Bonjour», dit-il", "bonjour dit il") == 1.0
    )  # Unicode punctuation
    assert await value("normalized_match", "the cat", "a dog") == 0.0
    assert await value("normalized_match", "theory", "ory") == 0.0  # articles only as whole words


async def test_bleu_matches_a_hand_computed_value() -> None:
    # hyp "the cat sat on a mat" vs ref "The cat sat on the mat ." (13a tokens, case-sensitive):
    # 1..4-gram precisions 5/6, 2/5, 1/4, 0/3 (exp smoothing: 1/2 / 3), BP = exp(1 - 7/6).
    expected = math.exp(1 - 7 / 6) * (5 / 6 * 2 / 5 * 1 / 4 * (0.5 / 3)) ** 0.25
    assert await value("bleu", "the cat sat on a mat") == pytest.approx(expected)
    assert expected == pytest.approx(0.29059, abs=1e-5)
    assert await value("bleu", "The cat sat on the mat.") == pytest.approx(1.0)
    assert await value("bleu", "zebra") == pytest.approx(0.0, abs=1e-3)
    lowered = await value("bleu", "the cat sat on the mat.", lowercase=True)
    assert lowered == pytest.approx(1.0)


async def test_chrf_is_sacrebleu_sentence_chrf_over_100() -> None:
    hyp, ref = "The dog had bit the man.", "The dog bit the man."
    assert await value("chrf", hyp, ref) == pytest.approx(sacrebleu.sentence_chrf(hyp, [ref]).score / 100)
    assert await value("chrf", ref, ref) == pytest.approx(1.0)
    assert await value("chrf", "xyz", "abc") == 0.0
    plus = await value("chrf", hyp, ref, word_order=2)
    assert plus == pytest.approx(sacrebleu.sentence_chrf(hyp, [ref], word_order=2).score / 100)
    assert plus != await value("chrf", hyp, ref)


async def test_rouge_hand_computed() -> None:
    ref, hyp = "the cat sat on the mat", "the cat sat on a mat"
    assert await value("rouge1", hyp, ref) == pytest.approx(5 / 6)  # 5 shared unigrams of 6
    assert await value("rouge2", hyp, ref) == pytest.approx(3 / 5)  # the cat, cat sat, sat on
    assert await value("rougeL", hyp, ref) == pytest.approx(5 / 6)  # LCS "the cat sat on mat"
    # Porter stemming by default: "running dogs" ~ "run dog"
    assert await value("rouge1", "running dogs", "run dog") == pytest.approx(1.0)
    assert await value("rouge1", "running dogs", "run dog", use_stemmer=False) == 0.0
    # precision and recall differ when lengths differ: hyp 2 tokens, ref 4 → P 1, R 1/2, F 2/3
    result = await score(MetricSpec(name="rouge1"), case("a b c d"), TargetOutput(text="a b"), CTX)
    assert result.value == pytest.approx(2 / 3)
    assert result.detail == {"precision": 1.0, "recall": 0.5}


async def test_embedding_similarity_with_a_fake_embedder() -> None:
    vectors = {"out": [1.0, 0.0], "ref": [0.6, 0.8], "zero": [0.0, 0.0]}

    async def embed(texts: list[str]) -> list[list[float]]:
        return [vectors[t] for t in texts]

    ctx = MetricContext(embed=embed)
    result = await score(MetricSpec(name="embedding_similarity"), case("ref"), TargetOutput(text="out"), ctx)
    assert result.value == pytest.approx(0.6)
    assert result.passed is False  # default threshold 0.8
    assert (
        await score(
            MetricSpec(name="embedding_similarity", pass_threshold=0.5),
            case("ref"),
            TargetOutput(text="out"),
            ctx,
        )
    ).passed
    zero = await score(MetricSpec(name="embedding_similarity"), case("ref"), TargetOutput(text="zero"), ctx)
    assert zero.value is None
    assert "zero-length" in (zero.error or "")
    no_embedder = await score(
        MetricSpec(name="embedding_similarity"), case("ref"), TargetOutput(text="out"), CTX
    )
    assert no_embedder.error == "no embedder is configured for this metric"


SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "age": {"type": "integer", "minimum": 0},
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "uniqueItems": True},
        "kind": {"$ref": "#/$defs/kind"},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
    "$defs": {"kind": {"oneOf": [{"const": "x"}, {"type": "number"}]}},
}


async def test_json_schema_validity() -> None:
    good = '{"name": "Ada", "age": 36, "tags": ["a"], "kind": "x"}'
    assert await value("json_schema", good, schema=SCHEMA) == 1.0
    result = await score(
        MetricSpec(name="json_schema", params={"schema": SCHEMA}),
        case(),
        TargetOutput(text='{"name": "", "age": -1, "tags": ["a", "a"], "extra": 1, "kind": true}'),
        CTX,
    )
    assert result.value == 0.0
    assert result.passed is False
    errors = "\n".join(result.detail["errors"])
    for fragment in (
        "/name: shorter",
        "/age: less than minimum",
        "/tags: item 1 is a duplicate",
        "'extra' is not allowed",
        "/kind: matches 0 of oneOf",
    ):
        assert fragment in errors
    assert await value("json_schema", "not json", schema=SCHEMA) == 0.0
    fenced = '```json\n{"name": "A", "age": 1}\n```'
    assert await value("json_schema", fenced, schema=SCHEMA) == 0.0
    assert await value("json_schema", fenced, schema=SCHEMA, strip_code_fence=True) == 1.0
    assert await value("json_schema", "NaN", schema=True) == 0.0  # not JSON


@pytest.mark.parametrize(
    ("instance", "schema", "valid"),
    [
        (1.0, {"type": "integer"}, True),
        (True, {"type": "integer"}, False),
        (1, {"enum": [True]}, False),
        ([1, 1.0], {"uniqueItems": True}, False),
        ("ab", {"pattern": "^a"}, True),
        (7, {"multipleOf": 0.5, "exclusiveMaximum": 7}, False),
        ({"a": 1}, {"dependentRequired": {"a": ["b"]}}, False),
        ({"x1": "s"}, {"patternProperties": {"^x": {"type": "string"}}, "additionalProperties": False}, True),
        ([1, "a", None], {"prefixItems": [{"type": "integer"}, {"type": "string"}], "items": False}, False),
        ([1, "a"], {"contains": {"type": "string"}}, True),
        (5, {"if": {"minimum": 3}, "then": {"maximum": 4}, "else": {"minimum": 0}}, False),
        (None, {"not": {"type": "null"}}, False),
        ({"a": {"a": {}}}, {"properties": {"a": {"$ref": "#"}}, "type": "object"}, True),
    ],
)
def test_json_schema_keywords(instance: object, schema: dict[str, object], valid: bool) -> None:
    assert (validate(instance, schema) == []) is valid


async def test_latency_and_cost_pass_on_upper_bounds() -> None:
    out = TargetOutput(text="x", latency_ms=250.0, cost_usd=0.002)
    fast = await score(MetricSpec(name="latency", params={"max_ms": 300}), case(), out, CTX)
    assert (fast.value, fast.passed) == (250.0, True)
    slow = await score(MetricSpec(name="latency", params={"max_ms": 200}), case(), out, CTX)
    assert slow.passed is False
    unbounded = await score(MetricSpec(name="cost"), case(), out, CTX)
    assert (unbounded.value, unbounded.passed) == (0.002, None)
    assert (await score(MetricSpec(name="cost", params={"max_usd": 0.001}), case(), out, CTX)).passed is False


async def test_failed_target_and_missing_reference_are_errors() -> None:
    failed = TargetOutput(text="", error="upstream 500")
    for name in ("exact", "bleu", "latency", "judge_rubric"):
        params = {"rubric": "r"} if name == "judge_rubric" else {}
        result = await score(MetricSpec(name=name, params=params), case(), failed, CTX)
        assert (result.value, result.passed, result.error) == (None, None, "target failed: upstream 500")
    for name in ("exact", "normalized_match", "bleu", "chrf", "rougeL"):
        result = await score(MetricSpec(name=name), case(None), TargetOutput(text="x"), CTX)
        assert result.error == "case has no expected output"
        assert result.value is None
        assert result.passed is None


async def test_thresholds_and_score_all_order() -> None:
    specs = [
        MetricSpec(name="rouge1", pass_threshold=0.9),
        MetricSpec(name="exact"),
        MetricSpec(name="rouge2"),
    ]
    scores = await score_all(
        specs, case("the cat sat on the mat"), TargetOutput(text="the cat sat on a mat"), CTX
    )
    assert [s.name for s in scores] == ["rouge1", "exact", "rouge2"]
    assert [s.passed for s in scores] == [False, False, True]  # 0.83 < 0.9; exact 0; 0.6 >= 0.5


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        ([MetricSpec(name="blue")], "unknown metric 'blue'"),
        ([MetricSpec(name="bleu", params={"smoth": "exp"})], "metric 'bleu': params.smoth"),
        ([MetricSpec(name="bleu", params={"tokenize": "spaces"})], "params.tokenize"),
        ([MetricSpec(name="judge_rubric")], "metric 'judge_rubric': params.rubric: Field required"),
        ([MetricSpec(name="latency", pass_threshold=100)], "use params.max_ms"),
        ([MetricSpec(name="cost", pass_threshold=1)], "use params.max_usd"),
        ([MetricSpec(name="exact"), MetricSpec(name="exact")], "listed twice"),
        ([MetricSpec(name="exact", pass_threshold=float("nan"))], "finite"),
        (
            [
                MetricSpec(
                    name="json_schema", params={"schema": {"type": "object", "unevaluatedProperties": False}}
                )
            ],
            "unsupported keyword 'unevaluatedProperties'",
        ),
        (
            [MetricSpec(name="json_schema", params={"schema": {"$ref": "https://example.com/s.json"}})],
            "only local references",
        ),
        ([MetricSpec(name="json_schema", params={"schema": {"$ref": "#/$defs/missing"}})], "unresolvable"),
        ([MetricSpec(name="json_schema", params={"schema": {"type": "strin"}})], "unknown type"),
        ([MetricSpec(name="answer_relevancy", params={"questions": 0})], "params.questions"),
        ([MetricSpec(name="faithfulness", params={"contexts": "both"})], "params.contexts"),
        ([], "at least one metric"),
    ],
)
def test_validate_specs_names_the_problem(specs: list[MetricSpec], message: str) -> None:
    with pytest.raises(MetricSpecError) as info:
        validate_specs(specs)
    assert message in str(info.value)


def test_valid_specs_pass_validation() -> None:
    validate_specs(
        [
            MetricSpec(name="exact"),
            MetricSpec(name="json_schema", params={"schema": SCHEMA}),
            MetricSpec(
                name="judge_rubric", params={"rubric": "Is it polite?", "model": "m"}, pass_threshold=0.5
            ),
            MetricSpec(name="latency", params={"max_ms": 1000}),
            MetricSpec(name="context_recall", params={"contexts": "output"}),
        ]
    )


async def test_score_rejects_an_invalid_spec() -> None:
    with pytest.raises(MetricSpecError):
        await score(MetricSpec(name="nope"), case(), TargetOutput(text="x"), CTX)


async def test_catastrophic_pattern_is_a_metric_error_not_a_hang() -> None:
    """A tenant's backtracking-prone ``pattern`` times out into an error score; the worker is not blocked."""
    import time

    spec = MetricSpec(name="json_schema", params={"schema": {"type": "string", "pattern": "^(a|a)*$"}})
    started = time.monotonic()
    result = await score(
        spec, EvalCase(id="c", input="x"), TargetOutput(text='"' + "a" * 40 + 'b"'), MetricContext()
    )
    assert time.monotonic() - started < 5  # generous: unbounded backtracking would take hours
    assert result.value is None
    assert result.passed is None
    assert result.error is not None
    assert "took longer than" in result.error
