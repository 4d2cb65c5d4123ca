"""The protocol-neutral core of the simulator: one normalised chat request in, one reply out,
plus which failure (if any) a request gets and how long it takes.
"""

from __future__ import annotations

import fnmatch
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

from core.simulator.content import (
    AnswerBook,
    TokenCounter,
    first_rule,
    generated_text,
    schema_instance,
    stable_hash,
    tool_arguments,
)
from core.simulator.scenario import (
    HEADER_FAILURES,
    FailureKind,
    FailureRule,
    Profile,
    Scenario,
    resolve_profile,
)


class ErrorKind(StrEnum):
    """Errors every protocol can render in its own shape."""

    BAD_REQUEST = "bad_request"
    AUTH = "auth"
    PERMISSION = "permission"
    NOT_FOUND = "not_found"
    CONTEXT_LENGTH = "context_length"
    RATE_LIMIT = "rate_limit"
    SERVER_ERROR = "server_error"
    OVERLOADED = "overloaded"
    TIMEOUT = "timeout"


FAILURE_ERRORS = {
    FailureKind.RATE_LIMIT: ErrorKind.RATE_LIMIT,
    FailureKind.SERVER_ERROR: ErrorKind.SERVER_ERROR,
    FailureKind.OVERLOADED: ErrorKind.OVERLOADED,
    FailureKind.BAD_REQUEST: ErrorKind.BAD_REQUEST,
    FailureKind.AUTH: ErrorKind.AUTH,
    FailureKind.PERMISSION: ErrorKind.PERMISSION,
    FailureKind.NOT_FOUND: ErrorKind.NOT_FOUND,
    FailureKind.CONTEXT_LENGTH: ErrorKind.CONTEXT_LENGTH,
}

FAILURE_MESSAGES = {
    ErrorKind.RATE_LIMIT: "Rate limit reached (simulated). Please retry after a short wait.",
    ErrorKind.SERVER_ERROR: "The server had an error while processing your request (simulated).",
    ErrorKind.OVERLOADED: "The model is overloaded (simulated). Please try again later.",
    ErrorKind.BAD_REQUEST: "Invalid request (simulated).",
    ErrorKind.AUTH: "Invalid API key (simulated).",
    ErrorKind.PERMISSION: "This key may not use this model (simulated).",
    ErrorKind.NOT_FOUND: "The model does not exist (simulated).",
    ErrorKind.CONTEXT_LENGTH: "This model's maximum context length was exceeded (simulated).",
}


class SimError(Exception):
    """A client-visible error, rendered by the protocol that received the request."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


# What a handler catches around parsing: its own errors, and malformed field types in a body.
REQUEST_ERRORS = (SimError, TypeError, ValueError, AttributeError, KeyError, IndexError)


def request_error(exc: Exception) -> SimError:
    """The client-visible error for an exception raised while reading a request."""
    if isinstance(exc, SimError):
        return exc
    return SimError(ErrorKind.BAD_REQUEST, f"Invalid request body: {type(exc).__name__}: {exc}")


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool offered by the request: its name and JSON-schema parameters."""

    name: str
    parameters: Any


@dataclass(slots=True)
class ChatInput:
    """A chat request in any protocol, normalised."""

    model: str
    texts: list[str]
    last_user: str
    stream: bool = False
    tools: list[ToolSpec] = field(default_factory=list)
    tool_choice: str = "auto"  # auto | none | required | <tool name>
    after_tool_result: bool = False
    json_mode: bool = False
    json_schema: Any = None
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    include_usage: bool = False
    n: int = 1
    extra_prompt_text: str = ""
    reasoning: bool | None = None  # None: the model profile decides (DeepSeek-style by name)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call the simulated model makes; ``arguments`` is a JSON string."""

    id: str
    name: str
    arguments: str


@dataclass(slots=True)
class Reply:
    """What the model answers, with token counts. ``finish`` is stop | length | tool_calls."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish: str = "stop"
    stop_sequence: str | None = None
    reasoning: str = ""
    reasoning_tokens: int = 0
    tool_calls: list[ToolCall] = field(default_factory=list)


def new_id(prefix: str) -> str:
    """A random id in the style of the providers (``chatcmpl-…``, ``msg_…``)."""
    return prefix + os.urandom(12).hex()


class Simulator:
    """State shared by all requests of one server: scenario, counters, tokenizer, answer key."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.tokens = TokenCounter(scenario.tokenizer)
        self.book = AnswerBook(scenario.answer_key)
        self._rng = random.Random(scenario.seed)
        self._server = resolve_profile(scenario, "")
        self._profiles: dict[str, Profile] = {}
        self.requests: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self._forced = {
            name: FailureRule(kind=kind, every=1, after_tokens=3 if kind is FailureKind.CUT else 0)
            for name, kind in HEADER_FAILURES.items()
        }

    def reset(self) -> None:
        """Forget request counters (so "first N" rules fire again) and reseed randomness."""
        self.requests.clear()
        self.injected.clear()
        self._rng.seed(self.scenario.seed)

    def profile(self, model: str) -> Profile:
        """The resolved profile of a model name (cached); 404 for unknown models if strict."""
        found = self._profiles.get(model)
        if found is None:
            if self.scenario.strict_models and not self.known(model):
                raise SimError(ErrorKind.NOT_FOUND, f"The model `{model}` does not exist.")
            found = self._profiles[model] = resolve_profile(self.scenario, model)
        return found

    def server_profile(self) -> Profile:
        """The profile of calls that name no model (model lists): the scenario defaults."""
        return self._server

    def known(self, model: str) -> bool:
        """Whether the scenario has a ``models`` entry (name or pattern) for ``model``."""
        return model in self.scenario.models or any(
            fnmatch.fnmatchcase(model, pattern) for pattern in self.scenario.models
        )

    def display_model(self, model: str) -> str:
        """The model id shown in responses, with the scenario's prefix."""
        prefix = self.scenario.model_prefix
        return model if not prefix or model.startswith(prefix) else prefix + model

    def pick_failure(
        self, profile: Profile, endpoint: str, stream: bool, forced: str | None
    ) -> FailureRule | None:
        """Count the request and decide which failure it gets (``x-sim-fail`` wins)."""
        self.requests[profile.name] += 1
        number = self.requests[profile.name]
        chosen: FailureRule | None = None
        if forced:
            chosen = self._forced.get(forced.strip().lower())
            if chosen is None:
                raise SimError(ErrorKind.BAD_REQUEST, f"unknown x-sim-fail value {forced!r}")
        else:
            for rule in profile.failures:
                if endpoint not in rule.endpoints or (rule.stream_only and not stream):
                    continue
                if rule.every is not None:
                    hit = number % rule.every == 0
                elif rule.first is not None:
                    hit = number <= rule.first
                else:
                    hit = self._rng.random() < (rule.probability or 0.0)
                if hit:
                    chosen = rule
                    break
        if chosen is not None:
            self.injected[chosen.kind.value] += 1
        return chosen

    def timing(self, profile: Profile) -> tuple[float, float]:
        """Seconds to the first token and seconds per further token (with jitter)."""
        lat = profile.latency
        ttft = lat.ttft_ms / 1000.0
        per_token = 1.0 / lat.tokens_per_s if lat.tokens_per_s > 0 else 0.0
        if lat.jitter:
            ttft *= 1.0 + self._rng.uniform(-lat.jitter, lat.jitter)
            per_token *= 1.0 + self._rng.uniform(-lat.jitter, lat.jitter)
        return ttft, per_token

    def prompt_tokens(self, inp: ChatInput) -> int:
        """Prompt tokens as OpenAI counts them: content plus ~4 per message and 3 for priming."""
        count = self.tokens.count
        total = sum(count(text) + 4 for text in inp.texts) + 3
        if inp.extra_prompt_text:
            total += count(inp.extra_prompt_text)
        return total

    def reply(self, inp: ChatInput, profile: Profile, index: int = 0) -> Reply:
        """The model's deterministic answer to a normalised request."""
        prompt_tokens = self.prompt_tokens(inp)
        if prompt_tokens > profile.context_window:
            raise SimError(
                ErrorKind.CONTEXT_LENGTH,
                f"This model's maximum context length is {profile.context_window} tokens. "
                f"However, your messages resulted in {prompt_tokens} tokens.",
            )
        seed = stable_hash(inp.model, "\x1e".join(inp.texts), str(index))
        calls = self._tool_calls(inp, profile, seed)
        if calls:
            completion = sum(self.tokens.count(c.name) + self.tokens.count(c.arguments) for c in calls)
            return Reply("", prompt_tokens, completion, "tool_calls", tool_calls=calls)
        text = self._text(inp, profile, seed)
        if inp.json_mode or inp.json_schema is not None:
            schema = inp.json_schema if inp.json_schema is not None else {"properties": {"answer": {}}}
            text = orjson.dumps(schema_instance(schema, text, seed)).decode()
        reply = Reply(text, prompt_tokens, 0)
        for stop in inp.stop:
            cut = text.find(stop) if stop else -1
            if cut >= 0:
                reply.text, reply.stop_sequence = text[:cut], stop
                text = reply.text
        reasoning_budget = inp.max_tokens
        if inp.reasoning if inp.reasoning is not None else profile.reasoning:
            reply.reasoning = "Let me think about this. " + generated_text(seed ^ 0x5EED, 20, 40)
            reply.reasoning_tokens = self.tokens.count(reply.reasoning)
            if reasoning_budget is not None:
                reasoning_budget = max(1, reasoning_budget - reply.reasoning_tokens)
        reply.completion_tokens = self.tokens.count(text)
        if reasoning_budget is not None and reply.completion_tokens > reasoning_budget:
            reply.text = self.tokens.truncate(text, reasoning_budget)
            reply.completion_tokens = self.tokens.count(reply.text)
            reply.finish, reply.stop_sequence = "length", None
        reply.completion_tokens += reply.reasoning_tokens
        return reply

    def _text(self, inp: ChatInput, profile: Profile, seed: int) -> str:
        prompt = inp.last_user
        if not inp.after_tool_result:
            rule = first_rule(profile.rules, prompt)
            if rule is not None and rule.answer is not None:
                return rule.answer.replace("{model}", inp.model)
            answer = self.book.answer(profile, prompt)
            if answer is not None:
                return answer
        low, high = profile.words
        text = generated_text(seed, low, high)
        return "Based on the tool result: " + text if inp.after_tool_result else text

    def _tool_calls(self, inp: ChatInput, profile: Profile, seed: int) -> list[ToolCall]:
        if not inp.tools or inp.tool_choice == "none" or inp.after_tool_result:
            return []
        by_name = {tool.name: tool for tool in inp.tools}
        rule = first_rule(profile.rules, inp.last_user)
        tool: ToolSpec | None = None
        arguments: dict[str, Any] | None = None
        if rule is not None and rule.tool is not None:
            tool = by_name.get(rule.tool, inp.tools[0])
            arguments = rule.arguments
        elif inp.tool_choice == "required":
            tool = inp.tools[0]
        elif inp.tool_choice in by_name:
            tool = by_name[inp.tool_choice]
        if tool is None:
            return []
        if arguments is None:
            arguments = tool_arguments(tool.parameters, inp.last_user, seed)
        call_id = f"call_{seed & 0xFFFFFFFFFFFF:012x}"
        return [ToolCall(call_id, tool.name, orjson.dumps(arguments).decode())]


def now() -> int:
    """Unix seconds, for ``created`` fields."""
    return int(time.time())
