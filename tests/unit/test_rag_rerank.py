"""Listwise model rerank: deterministic parsing, ordering, and the fused-order fallback."""

from __future__ import annotations

import pytest

from core.providers.types import ChatRequest, ChatResponse, Usage
from core.rag.rerank import RankingUnparseable, apply_ranking, model_rerank, parse_ranking, rerank_messages
from core.rag.search import Result
from core.rag.store import Hit


def _result(i: int) -> Result:
    hit = Hit(
        chunk_id=i,
        document_id=f"d{i}",
        document_title=f"doc {i}",
        chunk_index=0,
        text=f"text {i}",
        start=0,
        end=6,
        metadata={},
        score=0.5,
    )
    return Result(hit=hit, score=1.0 / (60 + i))


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"ranking": [3, 1, 2]}', [3, 1, 2]),
        ('Here you go:\n```json\n{"ranking": [2, 3]}\n```', [2, 3]),
        ("[2, 1]", [2, 1]),
        ('{"note": "x"} then {"ranking": [9, 2, 2, 0, 1]}', [2, 1]),  # out of range, repeats dropped
        ('{"ranking": [true, 3]}', [3]),  # booleans are not passage numbers
    ],
)
def test_parse_ranking(reply: str, expected: list[int]) -> None:
    assert parse_ranking(reply, 3) == expected


@pytest.mark.parametrize("reply", ["Passage two seems best.", '{"ranking": []}', "[7, 8]", "{broken"])
def test_unparseable_replies_raise(reply: str) -> None:
    with pytest.raises(RankingUnparseable):
        parse_ranking(reply, 3)


def test_apply_ranking_puts_left_out_passages_after_in_fused_order() -> None:
    results = [_result(i) for i in range(1, 5)]
    out = apply_ranking(results, [3, 1])
    assert [r.hit.chunk_id for r in out] == [3, 1, 2, 4]
    assert [r.score for r in out] == [1.0, 0.75, 0.5, 0.25]


def test_prompt_numbers_the_passages_and_ends_with_the_query() -> None:
    messages = rerank_messages("where?", [_result(1), _result(2)])
    user = messages[-1].text()
    assert "[1] (doc 1) text 1" in user
    assert "[2] (doc 2) text 2" in user
    assert user.index("Query: where?") > user.index("[2]")


async def test_model_rerank_reorders_the_head_and_keeps_the_tail() -> None:
    seen: list[ChatRequest] = []

    async def chat(req: ChatRequest) -> ChatResponse:
        seen.append(req)
        usage = Usage(input_tokens=100, output_tokens=10)
        return ChatResponse(
            id="r", model=req.model, provider="p", content='{"ranking": [3, 2, 1]}', usage=usage
        )

    results = [_result(i) for i in range(1, 6)]
    out = await model_rerank(chat, "m", "q", results, top_n=3)
    assert out.applied
    assert [r.hit.chunk_id for r in out.results] == [3, 2, 1, 4, 5]
    assert out.usage.input_tokens == 100
    assert len(seen) == 1
    assert seen[0].temperature == 0
    assert "[4]" not in seen[0].messages[-1].text()  # only the top_n are shown


async def test_unparseable_reply_keeps_the_fused_order_and_says_so() -> None:
    async def chat(req: ChatRequest) -> ChatResponse:
        return ChatResponse(id="r", model=req.model, provider="p", content="They are all relevant.")

    results = [_result(i) for i in range(1, 4)]
    out = await model_rerank(chat, "m", "q", results, top_n=3)
    assert not out.applied
    assert out.error is not None
    assert [r.hit.chunk_id for r in out.results] == [1, 2, 3]


async def test_a_single_candidate_needs_no_call() -> None:
    async def chat(req: ChatRequest) -> ChatResponse:
        raise AssertionError("no call expected")

    out = await model_rerank(chat, "m", "q", [_result(1)], top_n=5)
    assert [r.hit.chunk_id for r in out.results] == [1]
    assert not out.applied
