"""Planner: prompts, strict plan parsing with precise errors, trivial-task detection."""

from __future__ import annotations

import json

import pytest

from core.orchestration.contracts import SubtaskCapability
from core.orchestration.planner import (
    PlanError,
    is_trivial,
    parse_plan,
    planner_messages,
    repair_messages,
    trivial_plan,
)

GOOD = {
    "subtasks": [
        {
            "id": "s1",
            "instruction": "Find the 2023 revenue.",
            "capability": "retrieval",
            "answer_type": "short",
        },
        {
            "id": "s2",
            "instruction": "Find the 2024 revenue.",
            "capability": "retrieval",
            "answer_type": "short",
        },
        {
            "id": "s3",
            "instruction": "Compute the growth rate.",
            "capability": "math",
            "depends_on": ["s1", "s2"],
        },
    ]
}


def _plan_text(subtasks: list[dict[str, object]]) -> str:
    return json.dumps({"subtasks": subtasks})


def test_planner_messages_ask_for_strict_json_with_capabilities() -> None:
    messages = planner_messages("Compare A and B", max_subtasks=4)
    assert [m["role"] for m in messages] == ["system", "user"]
    system = messages[0]["content"]
    assert '"subtasks"' in system
    for capability in SubtaskCapability:
        assert f'"{capability.value}"' in system
    assert "At most 4 subtasks" in system
    assert "exactly ONE subtask" in system
    assert "Compare A and B" in messages[1]["content"]


def test_planner_messages_reject_impossible_limits() -> None:
    with pytest.raises(ValueError, match="max_subtasks"):
        planner_messages("x", max_subtasks=0)
    with pytest.raises(ValueError, match="max_subtasks"):
        planner_messages("x", max_subtasks=13)


def test_repair_messages_echo_the_bad_output_and_the_error() -> None:
    messages = repair_messages("the task", "{not json", "the answer is not valid JSON")
    assert messages[0]["role"] == "system"
    assert messages[2] == {"role": "assistant", "content": "{not json"}
    assert "the answer is not valid JSON" in messages[3]["content"]
    assert "the task" in messages[1]["content"]
    long = repair_messages("t", "x" * 20_000, "e")
    assert len(long[2]["content"]) < 7000


def test_parse_good_plan() -> None:
    plan = parse_plan(json.dumps(GOOD))
    assert [s.id for s in plan.subtasks] == ["s1", "s2", "s3"]
    assert plan.subtasks[2].capability is SubtaskCapability.math
    assert plan.subtasks[2].depends_on == ["s1", "s2"]
    assert plan.subtasks[0].answer_type == "short"
    assert [[s.id for s in layer] for layer in plan.layers()] == [["s1", "s2"], ["s3"]]


def test_parse_fenced_block() -> None:
    text = "```json\n" + json.dumps(GOOD, indent=2) + "\n```"
    assert len(parse_plan(text).subtasks) == 3


def test_parse_prose_wrapped_json() -> None:
    text = (
        "Sure! I considered {a few options} first. Here is the plan:\n"
        + json.dumps(GOOD)
        + "\nLet me know if you need changes."
    )
    assert [s.id for s in parse_plan(text).subtasks] == ["s1", "s2", "s3"]


def test_parse_prefers_the_json_fence_over_other_fences() -> None:
    text = "```text\nnot a plan\n```\nand\n```json\n" + json.dumps(GOOD) + "\n```"
    assert len(parse_plan(text).subtasks) == 3


def test_parse_forgives_int_ids_and_capability_case() -> None:
    text = _plan_text(
        [
            {"id": 1, "instruction": "a", "capability": "Code"},
            {"id": 2, "instruction": "b", "depends_on": 1, "answer_type": "SHORT"},
        ]
    )
    plan = parse_plan(text)
    assert plan.subtasks[0].id == "1"
    assert plan.subtasks[0].capability is SubtaskCapability.code
    assert plan.subtasks[1].depends_on == ["1"]
    assert plan.subtasks[1].answer_type == "short"


def test_parse_accepts_a_bare_array_and_ignores_top_level_extras() -> None:
    assert len(parse_plan(json.dumps(GOOD["subtasks"])).subtasks) == 3
    assert len(parse_plan(json.dumps({**GOOD, "rationale": "because"})).subtasks) == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("I cannot do that.", "no JSON object found"),
        ('{"subtasks": [', "no JSON object found"),
        ('```json\n{"subtasks": [}\n```', "fenced JSON block is not valid JSON"),
        ('"just a string"', "expected a JSON object"),
        ('{"steps": []}', "no 'subtasks' array"),
        ('{"subtasks": []}', "no subtasks"),
        ('{"subtasks": ["do it"]}', r"subtasks\[0\]: expected an object, got str"),
    ],
)
def test_parse_rejects_invalid_json_and_shapes(text: str, message: str) -> None:
    with pytest.raises(PlanError, match=message):
        parse_plan(text)


def test_schema_violations_name_the_subtask_and_field() -> None:
    text = _plan_text(
        [
            {"id": "s1", "instruction": "ok"},
            {"id": "s2", "instruction": "", "capability": "magic", "depends": ["s1"]},
        ]
    )
    with pytest.raises(PlanError) as info:
        parse_plan(text)
    message = str(info.value)
    assert "subtasks[1] (id 's2').instruction" in message
    assert "subtasks[1] (id 's2').capability" in message
    assert "'reasoning'" in message
    assert "subtasks[1] (id 's2').depends: unknown field" in message
    assert "subtasks[0]" not in message


def test_bad_id_is_rejected() -> None:
    with pytest.raises(PlanError, match=r"subtasks\[0\] \(id 'Step One'\)\.id"):
        parse_plan(_plan_text([{"id": "Step One", "instruction": "x"}]))


def test_unknown_dependency() -> None:
    text = _plan_text([{"id": "a", "instruction": "x", "depends_on": ["zz"]}])
    with pytest.raises(PlanError, match=r"subtask 'a' depends on unknown subtask ids \['zz'\]"):
        parse_plan(text)


def test_self_dependency() -> None:
    with pytest.raises(PlanError, match="depends on itself"):
        parse_plan(_plan_text([{"id": "a", "instruction": "x", "depends_on": ["a"]}]))


def test_cycle_is_reported_with_its_path() -> None:
    text = _plan_text(
        [
            {"id": "root", "instruction": "x"},
            {"id": "a", "instruction": "x", "depends_on": ["root", "c"]},
            {"id": "b", "instruction": "x", "depends_on": ["a"]},
            {"id": "c", "instruction": "x", "depends_on": ["b"]},
        ]
    )
    with pytest.raises(PlanError, match="dependency cycle a -> c -> b -> a"):
        parse_plan(text)


def test_duplicate_ids() -> None:
    text = _plan_text([{"id": "a", "instruction": "x"}, {"id": "a", "instruction": "y"}])
    with pytest.raises(PlanError, match=r"duplicate subtask ids \['a'\]"):
        parse_plan(text)


def test_too_many_subtasks() -> None:
    subtasks: list[dict[str, object]] = [{"id": f"s{i}", "instruction": "x"} for i in range(13)]
    with pytest.raises(PlanError, match="13 subtasks; at most 12"):
        parse_plan(_plan_text(subtasks))
    with pytest.raises(PlanError, match="5 subtasks; at most 4"):
        parse_plan(_plan_text(subtasks[:5]), max_subtasks=4)
    assert len(parse_plan(_plan_text(subtasks[:4]), max_subtasks=4).subtasks) == 4


def test_plan_error_is_a_value_error() -> None:
    assert issubclass(PlanError, ValueError)


@pytest.mark.parametrize(
    "task",
    [
        "What is the capital of France?",
        "What is 17 * 23?",
        "Write a Python function that reverses a string.",
        "Translate 'good morning' into German.",
    ],
)
def test_trivial_tasks(task: str) -> None:
    assert is_trivial(task)


@pytest.mark.parametrize(
    "task",
    [
        "",
        "Research the EV market in Europe, then write a report and draft an email to the board.",
        "Compare Postgres and MySQL for analytics. Recommend one.",
        "What is X? And what is Y?",
        "Do these:\n1. summarise the memo\n2. list the risks",
        "Summarise the attached contract. " * 10,
        "For each country in the EU, give the capital.",
    ],
)
def test_non_trivial_tasks(task: str) -> None:
    assert not is_trivial(task)


@pytest.mark.parametrize(
    ("task", "capability", "answer_type"),
    [
        ("What is the capital of France?", SubtaskCapability.retrieval, "short"),
        ("What is 17 * 23?", SubtaskCapability.math, "short"),
        ("Calculate the square root of 144", SubtaskCapability.math, "short"),
        ("Write a Python function that reverses a string.", SubtaskCapability.code, "open"),
        ("Fix this bug: ```x = [1, 2```", SubtaskCapability.code, "open"),
        ("Draft an email declining the meeting.", SubtaskCapability.writing, "open"),
        ("Explain why the sky is blue.", SubtaskCapability.reasoning, "open"),
        ("Extract the invoice number from: INV-42 due May 1", SubtaskCapability.extraction, "open"),
        ("Hello there", SubtaskCapability.general, "open"),
    ],
)
def test_trivial_plan_infers_capability(task: str, capability: SubtaskCapability, answer_type: str) -> None:
    plan = trivial_plan(task)
    assert len(plan.subtasks) == 1
    subtask = plan.subtasks[0]
    assert subtask.id == "answer"
    assert subtask.instruction == task.strip()
    assert subtask.capability is capability
    assert subtask.answer_type == answer_type


def test_trivial_plan_of_a_very_long_task_points_at_the_task() -> None:
    plan = trivial_plan("Summarise this: " + "word " * 2000)
    assert plan.subtasks[0].instruction == "Complete the task above in full."


def test_trivial_plan_of_an_empty_task() -> None:
    with pytest.raises(PlanError, match="empty"):
        trivial_plan("   ")
