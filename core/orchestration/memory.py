"""Conversation memory for NEXUS chat: recent turns verbatim, older ones summarised.

The summary is extractive (each older turn shrinks to its question and the start of its
answer), so building memory costs no model call and is deterministic; the whole memory is
capped, newest turns kept first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

RECENT_TURNS = 6
RECENT_ANSWER_CHARS = 2_000
SUMMARY_CHARS = 200
MEMORY_CHARS = 12_000


@dataclass(frozen=True)
class Turn:
    question: str
    answer: str | None  # None while the turn's run has not finished


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def build_task(history: Sequence[Turn], question: str) -> str:
    """The task text of a new turn: the conversation so far, then the new question."""
    if not history:
        return question
    recent = list(history[-RECENT_TURNS:])
    older = list(history[:-RECENT_TURNS])
    lines: list[str] = []
    if older:
        lines.append("Earlier in this conversation (summarised):")
        for turn in older:
            answer = _clip(turn.answer, SUMMARY_CHARS) if turn.answer else "(no answer)"
            lines.append(f"- Q: {_clip(turn.question, SUMMARY_CHARS)} → A: {answer}")
        lines.append("")
    lines.append("Recent turns:")
    for turn in recent:
        lines.append(f"User: {turn.question.strip()}")
        answer = turn.answer.strip() if turn.answer else "(no answer)"
        lines.append(f"Assistant: {_clip(answer, RECENT_ANSWER_CHARS)}")
    memory = "\n".join(lines)
    if len(memory) > MEMORY_CHARS:
        memory = "…" + memory[-(MEMORY_CHARS - 1) :]
    return (
        "You are continuing a conversation. Use it as context; answer only the new message.\n\n"
        f"{memory}\n\nNew message from the user:\n{question}"
    )
