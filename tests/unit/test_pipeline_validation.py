"""Definition checks: each kind of mistake is refused and names the offending step."""

from __future__ import annotations

from typing import Any

import pytest

from core.pipelines.validate import PipelineInvalid, validate_document


def doc(*steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": "t", "inputs": {"topic": {"type": "string"}}, "steps": list(steps), **extra}


def issues(raw: dict[str, Any], **kwargs: Any) -> list[dict[str, Any]]:
    with pytest.raises(PipelineInvalid) as info:
        validate_document(raw, **kwargs)
    return [i.model_dump() for i in info.value.issues]


def test_a_valid_definition_passes() -> None:
    defn = validate_document(
        doc(
            {"id": "draft", "type": "llm", "model": "m", "prompt": "Write about {{ inputs.topic }}"},
            {
                "id": "fan",
                "type": "parallel",
                "branches": [
                    [{"id": "a", "type": "transform", "expression": "steps.draft.output"}],
                    [{"id": "b", "type": "transform", "expression": "inputs.topic"}],
                ],
            },
            {"id": "after", "type": "transform", "expression": "[steps.a.output, steps.b.output]"},
            {
                "id": "send",
                "type": "http",
                "url": "https://example.com/hook",
                "body": {"text": "{{ steps.after.output[0] }}"},
                "compensation": {
                    "id": "unsend",
                    "type": "http",
                    "method": "DELETE",
                    "url": "https://example.com/hook/{{ steps.send.output.body.id }}",
                },
            },
        )
    )
    assert [s.id for s in defn.steps] == ["draft", "fan", "after", "send"]


def test_unknown_step_type_names_the_step() -> None:
    found = issues(doc({"id": "ok", "type": "wait", "seconds": 1}, {"id": "odd", "type": "teleport"}))
    assert found[0]["step"] == "odd"
    assert "unknown step type" in found[0]["message"]
    assert found[0]["path"] == "steps[1]"


def test_nested_shape_errors_name_the_nested_step() -> None:
    raw = doc({"id": "fan", "type": "parallel", "branches": [[{"id": "inner", "type": "http"}]]})
    found = issues(raw)
    assert found[0]["step"] == "inner"
    assert found[0]["path"].endswith("url")


def test_forward_reference_and_self_reference_are_cycles() -> None:
    found = issues(
        doc(
            {"id": "one", "type": "transform", "expression": "steps.two.output"},
            {"id": "two", "type": "transform", "expression": "steps.two.output"},
        )
    )
    assert [(i["step"], "cycle" in i["message"]) for i in found] == [("one", True), ("two", True)]


def test_sub_pipeline_running_itself_is_a_cycle() -> None:
    found = issues(doc({"id": "again", "type": "sub_pipeline", "pipeline": "me"}), pipeline_id="me")
    assert found[0]["step"] == "again"
    assert "cycle" in found[0]["message"]


def test_missing_variables() -> None:
    found = issues(
        doc(
            {
                "id": "x",
                "type": "llm",
                "model": "m",
                "prompt": "{{ inputs.nope }} {{ steps.ghost.output }} {{ os }}",
            }
        )
    )
    messages = sorted(i["message"] for i in found)
    assert all(i["step"] == "x" for i in found)
    assert any("input 'nope' is not declared" in m for m in messages)
    assert any("unknown step 'ghost'" in m for m in messages)
    assert any("unknown variable 'os'" in m for m in messages)


def test_branch_case_steps_are_not_visible_after_the_branch() -> None:
    found = issues(
        doc(
            {
                "id": "pick",
                "type": "branch",
                "cases": [
                    {
                        "when": "inputs.topic",
                        "steps": [{"id": "inner", "type": "transform", "expression": "`1`"}],
                    }
                ],
            },
            {"id": "later", "type": "transform", "expression": "steps.inner.output"},
        )
    )
    assert found[0]["step"] == "later"


def test_bad_expressions_and_templates() -> None:
    found = issues(
        doc(
            {"id": "expr", "type": "transform", "expression": "a[?"},
            {"id": "cond", "type": "branch", "cases": [{"when": "==", "steps": []}]},
            {"id": "tmpl", "type": "llm", "model": "m", "prompt": "{{ inputs.topic "},
        )
    )
    assert [i["step"] for i in found] == ["expr", "cond", "tmpl"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://localhost:8080/x",
        "http://169.254.169.254/latest",
        "http://[::1]/x",
        "http://10.0.0.8/x",
        "http://192.168.1.1/x",
        "http://metadata.google.internal/x",
        "file:///etc/passwd",
        "http://user:pw@example.com/x",
    ],
)
def test_ssrf_literals_are_refused(url: str) -> None:
    found = issues(doc({"id": "call", "type": "http", "url": url}))
    assert found[0]["step"] == "call"
    assert found[0]["path"] == "steps[0].url"


def test_allowlisted_private_host_is_accepted() -> None:
    validate_document(
        doc({"id": "call", "type": "http", "url": "http://10.0.0.8/x"}), allowlist=["10.0.0.0/8"]
    )


def test_duplicate_ids_across_the_tree_and_unknown_secret() -> None:
    found = issues(
        doc(
            {"id": "same", "type": "wait", "seconds": 1},
            {"id": "p", "type": "parallel", "branches": [[{"id": "same", "type": "wait", "seconds": 1}]]},
            {"id": "signed", "type": "http", "url": "https://example.com", "sign_with": "nope"},
        ),
        secrets={"hook"},
    )
    assert any(i["step"] == "same" and "duplicate" in i["message"] for i in found)
    assert any(i["step"] == "signed" and "signing secret" in i["message"] for i in found)


def test_wait_needs_one_of_seconds_or_until_and_compensations_are_single_steps() -> None:
    found = issues(
        doc(
            {"id": "w", "type": "wait"},
            {
                "id": "s",
                "type": "wait",
                "seconds": 1,
                "compensation": {"id": "c", "type": "parallel", "branches": [[]]},
            },
        )
    )
    assert {i["step"] for i in found} == {"w", "c"}
