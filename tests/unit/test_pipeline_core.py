"""Templates (sandboxed), expressions, the URL guard, signatures, diffs and run inputs."""

from __future__ import annotations

import time

import pytest

from core.errors import Conflict, ValidationFailed
from core.pipelines import diff, expressions, signing, ssrf, templating
from core.pipelines.definition import PipelineDefinition
from core.pipelines.service import retry_outputs, run_inputs


def test_templates_render_and_refuse_python_internals() -> None:
    ctx = {"inputs": {"name": "ada"}, "steps": {"s": {"output": {"n": 2}}}}
    assert templating.render("hi {{ inputs.name }} {{ steps.s.output.n + 1 }}", ctx) == "hi ada 3"
    for evil in (
        "{{ inputs.__class__.__mro__ }}",
        "{{ ''.__class__.__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ inputs.update({'x': 1}) }}",
    ):
        with pytest.raises(templating.TemplateFailed):
            templating.render(evil, ctx)
    with pytest.raises(templating.TemplateFailed, match="does not exist"):
        templating.render("{{ inputs.missing }}", ctx)
    assert templating.render_value({"a": ["{{ inputs.name }}", 3]}, ctx) == {"a": ["ada", 3]}


def test_expressions_search_and_references() -> None:
    data = {"inputs": {"n": 4}, "steps": {"a": {"output": [1, 2, 3]}}}
    assert expressions.search("sum(steps.a.output)", data) == 6
    assert expressions.truthy(expressions.search("inputs.n > `3`", data))
    assert expressions.references("{x: steps.a.output, y: inputs.n}") == ({"n"}, {"a"}, set())
    with pytest.raises(expressions.ExpressionFailed):
        expressions.compile_expression("[?")


async def test_ssrf_resolution() -> None:
    with pytest.raises(ssrf.UrlRefused):
        await ssrf.check_resolved("http://localhost/x", [])
    with pytest.raises(ssrf.UrlRefused):
        await ssrf.check_resolved("http://0x7f000001/x", [])
    await ssrf.check_resolved("http://127.0.0.1:9/x", ["127.0.0.1"])
    await ssrf.check_resolved("http://localhost/x", ["localhost"])
    with pytest.raises(ssrf.UrlRefused):
        await ssrf.check_resolved("http://[::ffff:10.0.0.1]/x", [])


def test_signatures_verify_and_expire() -> None:
    now = int(time.time())
    header = signing.sign("s3cret", now, b"{}")
    assert signing.verify("s3cret", header, b"{}", now)
    assert not signing.verify("other", header, b"{}", now)
    assert not signing.verify("s3cret", header, b"{ }", now)
    assert not signing.verify("s3cret", header, b"{}", now + 3600)


def _defn(*steps: dict) -> PipelineDefinition:  # type: ignore[type-arg]
    return PipelineDefinition.model_validate({"name": "d", "steps": list(steps)})


def test_diff_summary_and_unified() -> None:
    old = _defn({"id": "a", "type": "wait", "seconds": 1}, {"id": "b", "type": "wait", "seconds": 2})
    new = _defn(
        {"id": "b", "type": "wait", "seconds": 3}, {"id": "c", "type": "transform", "expression": "`1`"}
    )
    summary = diff.summary(old, new)
    assert [c.id for c in summary.added] == ["c"]
    assert [c.id for c in summary.removed] == ["a"]
    assert [(c.id, c.fields) for c in summary.changed] == [("b", ["seconds"])]
    text = diff.unified(diff.canonical_yaml(old), diff.canonical_yaml(new), "v1", "v2")
    assert text.startswith("--- v1\n+++ v2\n")
    assert "+  seconds: 3" in text


def test_run_inputs_are_typed_and_defaulted() -> None:
    defn = PipelineDefinition.model_validate(
        {
            "name": "i",
            "inputs": {
                "n": {"type": "integer"},
                "flag": {"type": "boolean", "required": False, "default": False},
            },
            "steps": [{"id": "w", "type": "wait", "seconds": 1}],
        }
    )
    assert run_inputs(defn, {"n": 2}) == {"n": 2, "flag": False}
    for bad, name in (({}, "n"), ({"n": True}, "n"), ({"n": 1, "x": 1}, "x")):
        with pytest.raises(ValidationFailed) as info:
            run_inputs(defn, bad)
        assert name in [e["input"] for e in info.value.extra["errors"]]


def test_retry_needs_a_failed_uncompensated_run() -> None:
    defn = _defn({"id": "a", "type": "wait", "seconds": 1}, {"id": "b", "type": "wait", "seconds": 1})
    result = {"failed_step": "b", "steps": {"a": {"value": {"waited_s": 1}}}}
    step, prior = retry_outputs(defn, result, "failed")
    assert step == "b"
    assert prior["a"].value == {"waited_s": 1}
    with pytest.raises(Conflict):
        retry_outputs(defn, result, "compensated")
