"""Subtask and synthesis prompts, the one-subtask shortcut, and citation extraction."""

from __future__ import annotations

from core.orchestration.contracts import Citation, Plan, Subtask, SubtaskCapability
from core.orchestration.synthesis import (
    MISSING_ANSWER,
    build_citations,
    extract_citations,
    single_subtask_answer,
    subtask_messages,
    synthesis_messages,
)

TASK = "By how much did ACME's revenue grow from 2023 to 2024?"
PLAN = Plan(
    subtasks=[
        Subtask(id="s1", instruction="ACME revenue in 2023?", capability=SubtaskCapability.retrieval),
        Subtask(id="s2", instruction="ACME revenue in 2024?", capability=SubtaskCapability.retrieval),
        Subtask(
            id="s3",
            instruction="Compute the growth in percent.",
            capability=SubtaskCapability.math,
            depends_on=["s1", "s2"],
            answer_type="short",
        ),
    ]
)


def test_subtask_prompt_carries_task_instruction_and_dependency_answers() -> None:
    messages = subtask_messages(TASK, PLAN.subtasks[2], {"s2": "$12M", "s1": "$10M"})
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[1]["content"]
    assert TASK in user
    assert "Compute the growth in percent." in user
    assert "[S:s1]\n$10M" in user
    assert "[S:s2]\n$12M" in user
    assert user.index("[S:s1]") < user.index("[S:s2]") < user.index("Compute the growth")
    assert "just the answer" in messages[0]["content"]


def test_open_subtask_has_no_short_answer_instruction() -> None:
    messages = subtask_messages(TASK, PLAN.subtasks[0], {})
    assert "just the answer" not in messages[0]["content"]
    assert "Results of earlier steps" not in messages[1]["content"]
    assert "ACME revenue in 2023?" in messages[1]["content"]


def test_missing_dependency_answer_is_marked() -> None:
    user = subtask_messages(TASK, PLAN.subtasks[2], {"s1": "$10M"})[1]["content"]
    assert f"[S:s2]\n{MISSING_ANSWER}" in user


def test_code_hint_and_trivial_instruction_equal_to_the_task() -> None:
    task = "Write a Python function that reverses a string."
    subtask = Subtask(id="answer", instruction=task, capability=SubtaskCapability.code)
    messages = subtask_messages(task, subtask, {})
    assert "fenced code blocks" in messages[0]["content"]
    assert messages[1]["content"].count(task) == 1


def test_synthesis_prompt_labels_answers_and_models() -> None:
    answers = {"s1": "$10M", "s3": "20%"}
    models = {"s1": ["oa/mini", "an/haiku"], "s3": ["gg/flash"]}
    messages = synthesis_messages(TASK, PLAN, answers, models)
    system, user = messages[0]["content"], messages[1]["content"]
    assert "[S:" in system
    assert TASK in user
    assert "[S:s1] ACME revenue in 2023? (agreed by oa/mini, an/haiku)\nResult:\n$10M" in user
    assert f"[S:s2] ACME revenue in 2024?\nResult:\n{MISSING_ANSWER}" in user
    assert "[S:s3]" in user
    assert "20%" in user


def test_single_subtask_answer() -> None:
    one = Plan(subtasks=[Subtask(id="answer", instruction="2+2?")])
    assert single_subtask_answer(one, {"answer": "4"}) == "4"
    assert single_subtask_answer(one, {}) is None
    assert single_subtask_answer(PLAN, {"s1": "a", "s2": "b", "s3": "c"}) is None


def test_extract_citations() -> None:
    text = (
        "Revenue rose 20% [S:s3], from $10M [S: s1] to $12M [S:s2][S:s1]. "
        "Combined [S:s1, S:s2] and [s:s3,s2]; ignore [S:zz], [S:] and [Source: s1]."
    )
    assert extract_citations(text, PLAN) == ["s3", "s1", "s2"]
    assert extract_citations("no citations here", PLAN) == []


def test_build_citations() -> None:
    models = {"s1": ["a"], "s2": ["b", "c"], "s3": []}
    assert build_citations("x [S:s2] y [S:s1]", PLAN, models) == [
        Citation(subtask_id="s2", models=["b", "c"]),
        Citation(subtask_id="s1", models=["a"]),
    ]
    assert build_citations("uncited", PLAN, models) == [
        Citation(subtask_id="s1", models=["a"]),
        Citation(subtask_id="s2", models=["b", "c"]),
    ]
