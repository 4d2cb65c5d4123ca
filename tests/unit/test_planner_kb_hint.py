"""The planner is told when a run has knowledge bases, so it can plan ``retrieval`` subtasks."""

from __future__ import annotations

from core.orchestration.planner import KNOWLEDGE_BASE_HINT, planner_messages, repair_messages


def test_the_hint_is_given_only_with_knowledge_bases() -> None:
    plain = planner_messages("Compare our VPN and badge policies")
    grounded = planner_messages("Compare our VPN and badge policies", knowledge_bases=True)
    assert KNOWLEDGE_BASE_HINT.strip() not in plain[0]["content"]
    assert grounded[0]["content"] == plain[0]["content"] + KNOWLEDGE_BASE_HINT
    assert '"retrieval"' in KNOWLEDGE_BASE_HINT
    assert grounded[1] == plain[1]


def test_the_repair_prompt_keeps_the_hint() -> None:
    repaired = repair_messages("t", "{bad", "not JSON", knowledge_bases=True)
    assert repaired[0]["content"].endswith(KNOWLEDGE_BASE_HINT)
    assert not repair_messages("t", "{bad", "not JSON")[0]["content"].endswith(KNOWLEDGE_BASE_HINT)
