"""Scenario validation and the simulator's deterministic content (no server needed)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.simulator.content import AnswerBook, TokenCounter, embedding, schema_instance
from core.simulator.engine import ChatInput, Simulator, ToolSpec
from core.simulator.scenario import load_scenario, parse_scenario, resolve_profile

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["default.yaml", "consensus.yaml"])
def test_example_scenarios_validate(name: str) -> None:
    scenario = load_scenario(REPO / "core" / "simulator" / "scenarios" / name)
    assert scenario.models


def test_unknown_keys_are_rejected() -> None:
    with pytest.raises(ValidationError, match="latencyy"):
        parse_scenario("defaults: {latencyy: {ttft_ms: 1}}")
    with pytest.raises(ValidationError):
        parse_scenario("models: {m: {latency: {ttft: 1}}}")


def test_failure_rule_needs_exactly_one_trigger() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        parse_scenario("defaults: {failures: [{kind: rate_limit}]}")
    with pytest.raises(ValidationError, match="exactly one"):
        parse_scenario("defaults: {failures: [{kind: rate_limit, every: 2, first: 1}]}")
    with pytest.raises(ValidationError):
        parse_scenario("defaults: {failures: [{kind: explode, every: 2}]}")


def test_bad_regex_is_rejected() -> None:
    with pytest.raises(ValidationError):
        parse_scenario("rules: [{match: '(unclosed', answer: x}]")


def test_profiles_layer_defaults_exact_names_and_globs() -> None:
    scenario = parse_scenario(
        """
defaults: {embedding_dim: 128, latency: {ttft_ms: 5}}
models:
  exact-model: {embedding_dim: 64}
  "claude-*": {latency: {ttft_ms: 99}}
"""
    )
    assert resolve_profile(scenario, "exact-model").embedding_dim == 64
    assert resolve_profile(scenario, "exact-model").latency.ttft_ms == 5
    assert resolve_profile(scenario, "claude-haiku").latency.ttft_ms == 99
    assert resolve_profile(scenario, "claude-haiku").embedding_dim == 128
    assert resolve_profile(scenario, "other").words == (12, 40)
    assert resolve_profile(scenario, "deepseek-reasoner").reasoning
    assert resolve_profile(scenario, "deepseek-r1").reasoning
    assert not resolve_profile(scenario, "gpt-4o").reasoning


def _chat(model: str, prompt: str, **kwargs: object) -> ChatInput:
    return ChatInput(model=model, texts=[prompt], last_user=prompt, **kwargs)  # type: ignore[arg-type]


def test_same_prompt_same_answer_and_models_differ() -> None:
    sim = Simulator(parse_scenario(""))
    first = sim.reply(_chat("m1", "Tell me about queues"), sim.profile("m1"))
    again = Simulator(parse_scenario("")).reply(_chat("m1", "Tell me about queues"), sim.profile("m1"))
    other = sim.reply(_chat("m2", "Tell me about queues"), sim.profile("m2"))
    assert first.text == again.text
    assert first.text != other.text
    assert first.completion_tokens > 0
    assert first.prompt_tokens > 0


def test_rules_tools_json_and_max_tokens() -> None:
    sim = Simulator(
        parse_scenario(
            "rules: [{match: '(?i)capital of france', answer: Paris}, {match: weather, tool: get_weather}]"
        )
    )
    profile = sim.profile("m")
    assert sim.reply(_chat("m", "What is the capital of France?"), profile).text == "Paris"
    tools = [ToolSpec("get_weather", {"type": "object", "properties": {"city": {"type": "string"}}})]
    call = sim.reply(_chat("m", "weather in Oslo", tools=tools), profile)
    assert call.finish == "tool_calls"
    assert call.tool_calls[0].name == "get_weather"
    assert '"city"' in call.tool_calls[0].arguments
    assert sim.reply(_chat("m", "weather in Oslo"), profile).tool_calls == []
    long = sim.reply(_chat("m", "hello", max_tokens=3), profile)
    assert long.finish == "length"
    assert long.completion_tokens <= 3
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "n": {"type": "integer"}}}
    structured = sim.reply(_chat("m", "hello", json_schema=schema), profile)
    assert structured.text.startswith("{")
    assert '"n":' in structured.text


def test_schema_instance_follows_types() -> None:
    schema = {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "kind": {"enum": ["a", "b"]},
            "ok": {"type": "boolean"},
            "GEMINI": {"type": "NUMBER"},
        },
    }
    value = schema_instance(schema, "text", 3)
    assert len(value["tags"]) == 2
    assert value["kind"] in ("a", "b")
    assert isinstance(value["ok"], bool)
    assert isinstance(value["GEMINI"], float)


def test_embeddings_are_deterministic_unit_vectors() -> None:
    vector = embedding("hello world", 384)
    assert len(vector) == 384
    assert math.isclose(sum(v * v for v in vector), 1.0, rel_tol=1e-9)
    assert vector == embedding("hello world", 384)
    assert vector != embedding("hello world!", 384)

    def cos(a: tuple[float, ...], b: tuple[float, ...]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    near = cos(embedding("the cat sat", 64, "words"), embedding("the cat sat down", 64, "words"))
    far = cos(embedding("the cat sat", 64, "words"), embedding("quantum tax law", 64, "words"))
    assert near > far


def test_token_counter_uses_offline_tiktoken() -> None:
    counter = TokenCounter("tiktoken")
    assert counter.exact
    assert counter.count("hello world") == 2
    assert TokenCounter("words").count("one two three four") == 5


def _answer_key_scenario(accuracy: dict[str, float], group: bool) -> str:
    lines = ["models:"]
    for name, acc in accuracy.items():
        extra = ", correlation_group: g, correlation: 1.0" if group else ""
        lines.append(f"  {name}: {{accuracy: {acc}{extra}}}")
    lines.append("answer_key:\n  questions:")
    for i in range(400):
        lines.append(f"    - {{id: q{i:04d}, answer: right{i}, wrong: [w{i}a, w{i}b, w{i}c]}}")
    return "\n".join(lines)


def test_answer_key_accuracy_matches_configuration() -> None:
    scenario = parse_scenario(_answer_key_scenario({"good": 0.9, "fair": 0.6}, group=False))
    book = AnswerBook(scenario.answer_key)
    for name, target in (("good", 0.9), ("fair", 0.6)):
        profile = resolve_profile(scenario, name)
        right = sum(book.decide(profile, f"q{i:04d}") == f"right{i}" for i in range(400))
        assert abs(right / 400 - target) < 0.06, (name, right)


def test_correlated_models_err_together() -> None:
    grouped = parse_scenario(_answer_key_scenario({"a": 0.6, "b": 0.8}, group=True))
    free = parse_scenario(_answer_key_scenario({"a": 0.6, "b": 0.8}, group=False))

    def answers(scenario_text: object, name: str) -> list[str]:
        scenario = grouped if scenario_text == "g" else free
        book = AnswerBook(scenario.answer_key)
        return [book.decide(resolve_profile(scenario, name), f"q{i:04d}") for i in range(400)]

    ga, gb = answers("g", "a"), answers("g", "b")
    wrong_b = {i for i, x in enumerate(gb) if not x.startswith("right")}
    wrong_a = {i for i, x in enumerate(ga) if not x.startswith("right")}
    assert wrong_b <= wrong_a  # one shared draw: the weaker model errs wherever the stronger does
    assert all(ga[i] == gb[i] for i in wrong_b)  # and gives the same wrong answer
    fa, fb = answers("f", "a"), answers("f", "b")
    both_wrong = [i for i in range(400) if not fa[i].startswith("right") and not fb[i].startswith("right")]
    assert len(both_wrong) < len(wrong_b)  # independent models overlap less
