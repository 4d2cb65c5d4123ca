"""The retrieval capability's pure parts: which subtasks are grounded, prompts, provenance."""

from __future__ import annotations

from core.orchestration.contracts import Citation, KbSource, Subtask, SubtaskCapability
from core.rag.grounding import (
    SYSTEM_HINT,
    cited_labels,
    ground_messages,
    grounded,
    parse_kb_ids,
    sources_of,
    with_sources,
)
from core.rag.search import Result
from core.rag.store import Hit


def _found(chunk_id: int, title: str) -> tuple[str, Result]:
    hit = Hit(chunk_id, "d1", title, 0, f"text of {chunk_id}", 0, 9, {}, 0.8)
    return "kb1", Result(hit=hit, score=0.03)


def test_retrieval_and_root_subtasks_are_grounded() -> None:
    assert grounded(Subtask(id="a", instruction="x"))
    assert grounded(
        Subtask(id="b", instruction="x", capability=SubtaskCapability.retrieval, depends_on=["a"])
    )
    assert not grounded(
        Subtask(id="c", instruction="x", capability=SubtaskCapability.writing, depends_on=["a"])
    )


def test_passages_join_the_user_turn_with_chunk_labels() -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q?"}]
    out = ground_messages(messages, [_found(12, "VPN guide"), _found(7, "Badge")])
    assert messages[1]["content"] == "Q?"  # the input is not modified
    assert out[0]["content"].startswith("Be brief. ")
    assert out[0]["content"].endswith(SYSTEM_HINT)
    assert out[1]["content"].startswith("Q?\n\nKnowledge-base passages:")
    assert "[K:12] (VPN guide) text of 12" in out[1]["content"]
    assert out[1]["content"].index("[K:12]") < out[1]["content"].index("[K:7]")


def test_citations_carry_sources_marked_when_the_answer_cites_them() -> None:
    sources = {"s1": sources_of([_found(12, "VPN guide"), _found(7, "Badge")])}
    citations = [Citation(subtask_id="s1", models=["m"]), Citation(subtask_id="s2", models=["m"])]
    out = with_sources(citations, sources, "Install the client [K:12][S:s1].")
    assert [(s.label, s.cited) for s in out[0].sources] == [("[K:12]", True), ("[K:7]", False)]
    assert out[1].sources == []
    assert isinstance(out[0].sources[0], KbSource)
    assert cited_labels("a [K:1] b [K:22] [K:x]") == {"[K:1]", "[K:22]"}


def test_knowledge_base_ids_must_be_uuids() -> None:
    import pytest

    from core.errors import NotFound

    kb = "5f0c8e0e-3f7a-4a53-9a43-0f8f1f3b8f11"
    assert parse_kb_ids([kb.upper(), kb]) == [kb]
    with pytest.raises(NotFound):
        parse_kb_ids(["../etc"])
