"""Prompts for answering one subtask and for synthesising the final answer, and citations.

Pure and deterministic. Subtask results are shown to the synthesiser labelled ``[S:<id>]``
and it is asked to cite them the same way; :func:`extract_citations` reads those labels
back, :func:`build_citations` turns them into the result's provenance.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from core.orchestration.contracts import Citation, Plan, Subtask, SubtaskCapability

MISSING_ANSWER = "(no answer: this step failed or was skipped)"

_CAPABILITY_HINTS: dict[SubtaskCapability, str] = {
    SubtaskCapability.code: "Put code in fenced code blocks with the language named.",
    SubtaskCapability.math: "Work carefully; check the arithmetic before answering.",
    SubtaskCapability.extraction: "Take only what the given text supports; do not invent values.",
    SubtaskCapability.retrieval: "State facts plainly; say so when you are not sure.",
}


def label(subtask_id: str) -> str:
    """How a subtask is labelled in prompts and cited in answers: ``[S:<id>]``."""
    return f"[S:{subtask_id}]"


def subtask_messages(
    task: str, subtask: Subtask, dependency_answers: Mapping[str, str]
) -> list[dict[str, str]]:
    """Messages asking one panel model to answer ``subtask`` of ``task``.

    The answers of earlier subtasks are included, labelled by id (the subtask's own
    dependencies first, a missing one marked as failed). A ``short`` subtask is told to
    answer with just the answer, so votes compare like with like.
    """
    system = [
        "You are one expert on a panel of models working on part of a larger task. "
        "Answer only the subtask you are given; other steps are handled separately."
    ]
    if subtask.answer_type == "short":
        system.append(
            "Answer with just the answer: the number, name, label or short phrase asked for, "
            "with no explanation, no full sentence and no trailing punctuation."
        )
    hint = _CAPABILITY_HINTS.get(subtask.capability)
    if hint and subtask.answer_type != "short":
        system.append(hint)

    ordered = list(dict.fromkeys([*subtask.depends_on, *sorted(dependency_answers)]))
    parts = [f"Overall task:\n{task.strip()}"]
    if ordered:
        earlier = "\n\n".join(
            f"{label(i)}\n{dependency_answers.get(i, MISSING_ANSWER).strip()}" for i in ordered
        )
        parts.append(f"Results of earlier steps:\n{earlier}")
    if subtask.instruction.strip() != task.strip():
        parts.append(f"Your subtask {label(subtask.id)}:\n{subtask.instruction.strip()}")
    else:
        parts.append("Your subtask: answer the task above.")
    return [
        {"role": "system", "content": " ".join(system)},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


def synthesis_messages(
    task: str,
    plan: Plan,
    answers: Mapping[str, str],
    models_by_subtask: Mapping[str, list[str]],
) -> list[dict[str, str]]:
    """Messages asking a model to combine the subtask answers into the final answer, citing
    the subtasks it relies on as ``[S:<id>]``. Steps without an answer are shown as failed,
    so the synthesiser can say what is missing instead of inventing it."""
    system = (
        "You write the final answer to a task from the results of its steps, each produced and "
        "cross-checked by several models. Answer the task directly and completely, in the form "
        "the task asks for. After each statement that relies on a step, cite it with its label, "
        "e.g. [S:s1] or [S:s1][S:s2]. Use only the labels given. Do not describe the steps or "
        "the process. If a step failed and the task needs it, say what could not be determined."
    )
    blocks = []
    for subtask in plan.subtasks:
        models = models_by_subtask.get(subtask.id, [])
        by = f" (agreed by {', '.join(models)})" if models else ""
        answer = answers.get(subtask.id, MISSING_ANSWER).strip()
        blocks.append(f"{label(subtask.id)} {subtask.instruction.strip()}{by}\nResult:\n{answer}")
    user = f"Task:\n{task.strip()}\n\nStep results:\n\n" + "\n\n".join(blocks) + "\n\nWrite the final answer."
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def single_subtask_answer(plan: Plan, answers: Mapping[str, str]) -> str | None:
    """The final answer without a synthesis call: the consensus answer of a one-subtask plan
    (None when the plan has several subtasks or the only one has no answer)."""
    if len(plan.subtasks) != 1:
        return None
    return answers.get(plan.subtasks[0].id)


_CITATION = re.compile(r"\[\s*S\s*:\s*([^\]\n]{1,200})\]", re.IGNORECASE)
_ID_SPLIT = re.compile(r"\s*[,;]\s*|\s+and\s+|\s+")


def extract_citations(text: str, plan: Plan) -> list[str]:
    """Ids of the plan's subtasks cited in ``text`` (``[S:a]``, ``[S: a]``, ``[S:a, S:b]``,
    ``[S:a,b]``), in order of first citation, without duplicates or unknown ids."""
    known = {s.id for s in plan.subtasks}
    cited: dict[str, None] = {}
    for match in _CITATION.finditer(text):
        for token in _ID_SPLIT.split(match.group(1).strip()):
            sid = re.sub(r"^S\s*:\s*", "", token.strip(), flags=re.IGNORECASE)
            if sid in known:
                cited.setdefault(sid, None)
    return list(cited)


def build_citations(text: str, plan: Plan, models_by_subtask: Mapping[str, list[str]]) -> list[Citation]:
    """The result's provenance: each cited subtask with the models behind its answer. When the
    text cites nothing (e.g. a one-subtask plan answered without synthesis), every subtask that
    has models is listed, in plan order."""
    ids = extract_citations(text, plan) or [s.id for s in plan.subtasks if models_by_subtask.get(s.id)]
    return [Citation(subtask_id=i, models=list(models_by_subtask.get(i, []))) for i in ids]
