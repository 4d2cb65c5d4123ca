"""Scenario files for the provider simulator: what the simulated models say, how fast and how they fail.

A scenario is a YAML document validated by the pydantic models below (unknown keys are
rejected, so a typo fails loudly instead of silently doing nothing). Settings come in layers:
built-in defaults, then the scenario's ``defaults`` profile, then the one ``models`` entry that
matches the requested model (an exact name first, else the first matching glob pattern).
"""

from __future__ import annotations

import fnmatch
import re
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

REASONER_NAME = re.compile(r"reasoner|(?:^|[-_/.:])r1(?:[-_/.:]|$)", re.IGNORECASE)


def _check_regex(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regex {pattern!r}: {exc}") from exc
    return pattern


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FailureKind(StrEnum):
    """The failures the simulator can inject (also the values of the ``x-sim-fail`` header)."""

    RATE_LIMIT = "rate_limit"
    SERVER_ERROR = "server_error"
    OVERLOADED = "overloaded"
    TIMEOUT = "timeout"
    MALFORMED = "malformed"
    CUT = "cut"
    CUT_BEFORE_FIRST = "cut_before_first"
    BAD_REQUEST = "bad_request"
    AUTH = "auth"
    PERMISSION = "permission"
    NOT_FOUND = "not_found"
    CONTEXT_LENGTH = "context_length"


HEADER_FAILURES: dict[str, FailureKind] = {
    "429": FailureKind.RATE_LIMIT,
    "500": FailureKind.SERVER_ERROR,
    "529": FailureKind.OVERLOADED,
    "503": FailureKind.OVERLOADED,
    "timeout": FailureKind.TIMEOUT,
    "malformed": FailureKind.MALFORMED,
    "cut": FailureKind.CUT,
    "cut-before-first": FailureKind.CUT_BEFORE_FIRST,
    "400": FailureKind.BAD_REQUEST,
    "401": FailureKind.AUTH,
    "403": FailureKind.PERMISSION,
    "404": FailureKind.NOT_FOUND,
    "context": FailureKind.CONTEXT_LENGTH,
    **{kind.value: kind for kind in FailureKind},
}

Endpoint = str  # "chat" | "embeddings" | "models"
ENDPOINTS = frozenset({"chat", "embeddings", "models"})


class Latency(_Strict):
    """Timing of a response: time to first token, then a steady token rate."""

    ttft_ms: float = Field(0.0, ge=0, description="Milliseconds before the first token (or the body).")
    tokens_per_s: float = Field(0.0, ge=0, description="Output rate after the first token; 0 = instant.")
    jitter: float = Field(0.0, ge=0, le=1, description="Relative random spread of both, e.g. 0.2 = ±20%.")


class FailureRule(_Strict):
    """Inject one kind of failure with a probability, on every Nth request, or on the first N."""

    kind: FailureKind
    probability: float | None = Field(None, ge=0, le=1, description="Chance per request.")
    every: int | None = Field(None, ge=1, description="Fail request number N, 2N, 3N … of the model.")
    first: int | None = Field(None, ge=1, description="Fail the model's first N requests.")
    endpoints: frozenset[Endpoint] = Field(
        ENDPOINTS, description="Which endpoints this rule applies to (chat, embeddings, models)."
    )
    stream_only: bool = Field(False, description="Only for streaming requests.")
    retry_after_s: float = Field(1.0, ge=0, description="Retry-After of rate limits / overloads.")
    after_tokens: int | None = Field(
        None, ge=0, description="cut/timeout in a stream: tokens sent first (default: cut 3, timeout 0)."
    )

    @model_validator(mode="after")
    def _one_trigger(self) -> FailureRule:
        triggers = [t for t in (self.probability, self.every, self.first) if t is not None]
        if len(triggers) != 1:
            raise ValueError("a failure rule needs exactly one of probability, every, first")
        unknown = set(self.endpoints) - ENDPOINTS
        if unknown:
            raise ValueError(f"unknown endpoints {sorted(unknown)}; use {sorted(ENDPOINTS)}")
        return self


class ContentRule(_Strict):
    """A regex on the last user message and what to answer: a text, or a call of a tool."""

    match: str = Field(description="Python regex searched in the last user message.")
    answer: str | None = Field(None, description="Text answered when the regex matches.")
    tool: str | None = Field(None, description="Call this tool (if the request offers tools).")
    arguments: dict[str, Any] | None = Field(None, description="Tool arguments; default from schema.")

    @field_validator("match")
    @classmethod
    def _compiles(cls, value: str) -> str:
        return _check_regex(value)

    @model_validator(mode="after")
    def _says_something(self) -> ContentRule:
        if self.answer is None and self.tool is None:
            raise ValueError("a content rule needs an answer or a tool")
        return self


class Question(_Strict):
    """One question of the answer key: how to recognise it, its right and wrong answers."""

    id: str
    match: str | None = Field(None, description="Regex; default: the literal question id.")
    answer: str
    wrong: list[str] = Field(min_length=1, description="Wrong alternatives a model may give.")

    @field_validator("match")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        return None if value is None else _check_regex(value)


class AnswerKey(_Strict):
    """Questions with known answers, answered correctly with each model's ``accuracy``."""

    template: str = Field("{answer}", description="Reply text; {answer} is replaced.")
    questions: list[Question] = Field(default_factory=list)


class ModelProfile(_Strict):
    """Per-model behaviour. Unset fields inherit from ``defaults`` and then the built-ins."""

    latency: Latency | None = None
    failures: list[FailureRule] | None = Field(None, description="Replaces (not extends) the defaults.")
    rules: list[ContentRule] | None = Field(None, description="Tried before the scenario's rules.")
    words: tuple[int, int] | None = Field(None, description="Min and max words of generated text.")
    embedding_dim: int | None = Field(None, ge=1, le=65536)
    embedding_mode: str | None = Field(None, pattern="^(text|words)$", description="text | words")
    accuracy: float | None = Field(None, ge=0, le=1, description="Answer-key probability of being right.")
    correlation_group: str | None = Field(None, description="Models in a group err together.")
    correlation: float | None = Field(None, ge=0, le=1, description="How strongly (1 = always).")
    reasoning: bool | None = Field(None, description="DeepSeek-style reasoning_content; default by name.")
    context_window: int | None = Field(None, ge=1, description="Prompts above it get a 400.")
    owned_by: str | None = None


class AuthConfig(_Strict):
    """Which API keys the simulator accepts."""

    required: bool = Field(True, description="Reject requests without a key (like the real APIs).")
    keys: list[str] = Field(default_factory=list, description="If not empty, only these keys pass.")


class Scenario(_Strict):
    """A whole scenario file."""

    seed: int = Field(0, description="Seeds probabilistic failures and jitter.")
    model_prefix: str = Field("", description="Prepended to model ids in responses (if missing).")
    tokenizer: str = Field("tiktoken", pattern="^(tiktoken|words)$", description="tiktoken | words")
    strict_models: bool = Field(False, description="Unknown models (no models entry) answer 404.")
    hang_s: float = Field(600.0, gt=0, description="Longest a 'timeout' hangs before a 504.")
    auth: AuthConfig = Field(default_factory=AuthConfig)
    defaults: ModelProfile = Field(default_factory=ModelProfile)
    models: dict[str, ModelProfile] = Field(default_factory=dict, description="Name or glob → profile.")
    rules: list[ContentRule] = Field(default_factory=list)
    answer_key: AnswerKey = Field(default_factory=AnswerKey)


class Profile(BaseModel):
    """The fully resolved behaviour of one model name (no unset fields)."""

    model_config = ConfigDict(frozen=True)

    name: str
    latency: Latency
    failures: list[FailureRule]
    rules: list[ContentRule]
    words: tuple[int, int]
    embedding_dim: int
    embedding_mode: str
    accuracy: float
    correlation_group: str | None
    correlation: float
    reasoning: bool
    context_window: int
    owned_by: str


_BUILTIN: dict[str, Any] = {
    "latency": Latency(),
    "failures": [],
    "rules": [],
    "words": (12, 40),
    "embedding_dim": 384,
    "embedding_mode": "text",
    "accuracy": 1.0,
    "correlation_group": None,
    "correlation": 1.0,
    "context_window": 1_000_000,
    "owned_by": "nexus-sim",
}


def resolve_profile(scenario: Scenario, model: str) -> Profile:
    """Merge built-ins, the scenario defaults and the matching ``models`` entry for ``model``."""
    entry = scenario.models.get(model)
    if entry is None:
        entry = next(
            (prof for pattern, prof in scenario.models.items() if fnmatch.fnmatchcase(model, pattern)),
            None,
        )
    merged = dict(_BUILTIN)
    for layer in (scenario.defaults, entry):
        if layer is not None:
            merged.update(
                {k: getattr(layer, k) for k in layer.model_fields_set if getattr(layer, k) is not None}
            )
    model_rules = entry.rules if entry is not None and entry.rules is not None else []
    merged["rules"] = [*model_rules, *(scenario.defaults.rules or []), *scenario.rules]
    if merged.get("reasoning") is None:
        merged["reasoning"] = bool(REASONER_NAME.search(model))
    return Profile(name=model, **merged)


def listed_models(scenario: Scenario) -> list[str]:
    """Model names of the scenario that are not glob patterns (what ``GET /v1/models`` lists)."""
    return [name for name in scenario.models if not any(ch in name for ch in "*?[")]


def parse_scenario(text: str) -> Scenario:
    """Validate a scenario from YAML text (an empty document is the default scenario)."""
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ValueError("a scenario file must be a YAML mapping")
    return Scenario.model_validate(data)


def load_scenario(path: str | Path | None) -> Scenario:
    """Read and validate a scenario file; ``None`` gives the built-in default scenario."""
    if path is None:
        return Scenario()
    return parse_scenario(Path(path).read_text(encoding="utf-8"))
