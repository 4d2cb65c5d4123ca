"""Planning: the prompts that ask a model for a plan, and strict parsing of its answer.

Pure and deterministic (no I/O), so the ``Orchestration`` workflow and its activities can both
use it. A planner model answers :func:`planner_messages` with a JSON plan; :func:`parse_plan`
turns the text into a validated :class:`~core.orchestration.contracts.Plan` or raises
:class:`PlanError` with a message precise enough to send back through :func:`repair_messages`.
Short single-question tasks skip the planner entirely (:func:`is_trivial`, :func:`trivial_plan`).
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import ValidationError

from core.orchestration.contracts import Plan, Subtask, SubtaskCapability

MAX_SUBTASKS = 12  # Plan.subtasks' own upper bound
MAX_INSTRUCTION_CHARS = 4000  # Subtask.instruction's upper bound
TRIVIAL_MAX_CHARS = 240
REPAIR_ECHO_CHARS = 6000  # how much of a bad answer is echoed back to the model
TRIVIAL_ID = "answer"


class PlanError(ValueError):
    """A planner answer is not a valid plan; the message says exactly what is wrong."""


# --------------------------------------------------------------------------- prompts

_CAPABILITY_HELP = {
    SubtaskCapability.reasoning: "analysis, comparison, judgement, multi-step logic",
    SubtaskCapability.code: "writing, reviewing or explaining code",
    SubtaskCapability.math: "calculation, arithmetic, algebra, statistics",
    SubtaskCapability.writing: "drafting or rewriting prose (emails, summaries, reports)",
    SubtaskCapability.retrieval: "recalling facts, definitions or references",
    SubtaskCapability.extraction: "pulling structured fields or lists out of given text",
    SubtaskCapability.general: "anything else",
}


def _system_prompt(max_subtasks: int) -> str:
    capabilities = "\n".join(f'  - "{c.value}": {_CAPABILITY_HELP[c]}' for c in SubtaskCapability)
    return (
        "You are the planner of a multi-model AI system. Decompose the user's task into subtasks "
        "that other models will answer independently; a final step combines their answers.\n\n"
        "Reply with ONLY a JSON object, no prose, in exactly this shape:\n"
        '{"subtasks": [{"id": "s1", "instruction": "...", "capability": "reasoning", '
        '"depends_on": [], "answer_type": "open"}]}\n\n'
        "Rules:\n"
        f"- At most {max_subtasks} subtasks. A simple task gets exactly ONE subtask; only split when "
        "the parts are genuinely different pieces of work.\n"
        "- id: unique, lowercase letters, digits, '-' or '_', at most 40 characters (e.g. s1, s2).\n"
        "- instruction: self-contained; the model answering it sees the original task, this "
        "instruction and the answers of the subtasks it depends on, nothing else.\n"
        "- capability: one of\n"
        f"{capabilities}\n"
        "- depends_on: ids of earlier subtasks whose answers this one needs; no cycles. Subtasks "
        "without dependencies run in parallel.\n"
        '- answer_type: "short" when the answer is a single fact, number, name or label (answers '
        'are compared by vote), otherwise "open".\n'
        "- Do not add a final 'combine' or 'summarise' subtask: synthesis happens automatically."
    )


KNOWLEDGE_BASE_HINT = (
    "\n- This run has knowledge bases (the organisation's own documents). A subtask that needs "
    'facts, policies or references from them gets capability "retrieval": it is answered from '
    "passages searched in the knowledge bases for its instruction, so phrase that instruction as "
    "a focused question."
)


def _system(max_subtasks: int, knowledge_bases: bool) -> str:
    return _system_prompt(max_subtasks) + (KNOWLEDGE_BASE_HINT if knowledge_bases else "")


def planner_messages(
    task: str, *, max_subtasks: int = 6, knowledge_bases: bool = False
) -> list[dict[str, str]]:
    """System + user messages asking a model for a strict JSON plan of ``task``; with
    ``knowledge_bases`` the planner is told it can plan ``retrieval`` subtasks over them."""
    max_subtasks = _check_max(max_subtasks)
    return [
        {"role": "system", "content": _system(max_subtasks, knowledge_bases)},
        {"role": "user", "content": f"Task:\n{task.strip()}\n\nReturn the JSON plan."},
    ]


def repair_messages(
    task: str, bad_output: str, error: str, *, max_subtasks: int = 6, knowledge_bases: bool = False
) -> list[dict[str, str]]:
    """Messages asking the model to correct its previous, invalid plan (``error`` says why)."""
    max_subtasks = _check_max(max_subtasks)
    echoed = bad_output.strip()
    if len(echoed) > REPAIR_ECHO_CHARS:
        echoed = echoed[:REPAIR_ECHO_CHARS] + "\n…(truncated)"
    return [
        {"role": "system", "content": _system(max_subtasks, knowledge_bases)},
        {"role": "user", "content": f"Task:\n{task.strip()}\n\nReturn the JSON plan."},
        {"role": "assistant", "content": echoed or "(empty answer)"},
        {
            "role": "user",
            "content": (
                f"That plan is invalid: {error}\n"
                "Fix it and reply with ONLY the corrected JSON object, following every rule above."
            ),
        },
    ]


def _check_max(max_subtasks: int) -> int:
    if not 1 <= max_subtasks <= MAX_SUBTASKS:
        raise ValueError(f"max_subtasks must be between 1 and {MAX_SUBTASKS}, got {max_subtasks}")
    return max_subtasks


# --------------------------------------------------------------------------- parsing

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_-]*)[ \t]*\r?\n(.*?)```", re.DOTALL)


def _extract_json(text: str) -> Any:
    """The JSON value in ``text``: the whole text, else a fenced block, else the first object
    embedded in prose (one with a ``subtasks`` key wins over other objects)."""
    stripped = text.strip()
    if not stripped:
        raise PlanError("the answer is empty; expected a JSON object with a 'subtasks' array")
    try:
        return json.loads(stripped)
    except json.JSONDecodeError as exc:
        whole_error = exc
    fenced = sorted(_FENCE.findall(stripped), key=lambda m: m[0].lower() != "json")
    for _, body in fenced:
        try:
            return json.loads(body.strip())
        except json.JSONDecodeError as exc:
            if body.lstrip().startswith(("{", "[")):
                raise PlanError(f"the fenced JSON block is not valid JSON: {_describe(exc)}") from None
    decoder = json.JSONDecoder()
    found: list[Any] = []
    for match in re.finditer(r"[{\[]", stripped):
        try:
            value, _ = decoder.raw_decode(stripped, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict) and "subtasks" in value:
            return value
        if isinstance(value, dict | list) and value:
            found.append(value)
    if found:
        return found[0]
    raise PlanError(f"no JSON object found in the answer ({_describe(whole_error)})")


def _describe(exc: json.JSONDecodeError) -> str:
    return f"{exc.msg} at line {exc.lineno} column {exc.colno}"


def _normalise(raw: Any) -> Any:
    """Forgive harmless shape slips: integer ids, capability/answer_type case, a bare id string
    in ``depends_on``. Anything else is left for validation to reject."""
    if not isinstance(raw, dict):
        return raw
    out = dict(raw)
    if isinstance(out.get("id"), int) and not isinstance(out.get("id"), bool):
        out["id"] = str(out["id"])
    for key in ("capability", "answer_type"):
        if isinstance(out.get(key), str):
            out[key] = out[key].strip().lower()
    deps = out.get("depends_on")
    if isinstance(deps, str | int) and not isinstance(deps, bool):
        deps = [deps]
    if isinstance(deps, list):
        out["depends_on"] = [str(d) if isinstance(d, int) and not isinstance(d, bool) else d for d in deps]
    elif deps is None and "depends_on" in out:
        out["depends_on"] = []
    return out


def _field_errors(index: int, raw: Any, exc: ValidationError) -> list[str]:
    label = f"subtasks[{index}]"
    if isinstance(raw, dict) and isinstance(raw.get("id"), str):
        label += f" (id {raw['id']!r})"
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = "unknown field (allowed: id, instruction, capability, depends_on, answer_type)"
        if err["type"] != "extra_forbidden":
            msg = err["msg"]
        problems.append(f"{label}.{loc}: {msg}" if loc else f"{label}: {msg}")
    return problems


def _find_cycle(subtasks: list[Subtask]) -> list[str] | None:
    """One dependency cycle as a path ``[a, b, …, a]``, or None (iterative DFS, stable order)."""
    deps = {s.id: s.depends_on for s in subtasks}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    for root in deps:
        if root in state:
            continue
        path = [root]
        stack = [iter(deps[root])]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(deps[nxt]))
    return None


def parse_plan(text: str, *, max_subtasks: int = MAX_SUBTASKS) -> Plan:
    """Parse a planner answer into a :class:`Plan`.

    Accepts raw JSON, a fenced ```json block, or a JSON object embedded in prose; a bare array
    of subtasks is accepted too. Raises :class:`PlanError` naming the problem: invalid JSON,
    a missing or empty ``subtasks`` array, too many subtasks, a field violating the schema,
    duplicate ids, unknown dependencies or a dependency cycle (with its path).
    """
    max_subtasks = _check_max(max_subtasks)
    data = _extract_json(text)
    if isinstance(data, list):
        data = {"subtasks": data}
    if not isinstance(data, dict):
        raise PlanError(f"expected a JSON object with a 'subtasks' array, got {type(data).__name__}")
    raw_subtasks = data.get("subtasks")
    if not isinstance(raw_subtasks, list):
        raise PlanError("the JSON object has no 'subtasks' array")
    if not raw_subtasks:
        raise PlanError("the plan has no subtasks; a simple task needs exactly one")
    if len(raw_subtasks) > max_subtasks:
        raise PlanError(f"the plan has {len(raw_subtasks)} subtasks; at most {max_subtasks} are allowed")

    subtasks: list[Subtask] = []
    problems: list[str] = []
    for index, raw in enumerate(raw_subtasks):
        if not isinstance(raw, dict):
            problems.append(f"subtasks[{index}]: expected an object, got {type(raw).__name__}")
            continue
        normalised = _normalise(raw)
        try:
            subtasks.append(Subtask.model_validate(normalised))
        except ValidationError as exc:
            problems.extend(_field_errors(index, normalised, exc))
    if problems:
        raise PlanError("; ".join(problems))

    ids = [s.id for s in subtasks]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise PlanError(f"duplicate subtask ids {duplicates}; every id must be unique")
    known = set(ids)
    for s in subtasks:
        if s.id in s.depends_on:
            raise PlanError(f"subtask {s.id!r} depends on itself")
        unknown = [d for d in s.depends_on if d not in known]
        if unknown:
            raise PlanError(f"subtask {s.id!r} depends on unknown subtask ids {unknown}; known ids: {ids}")
    cycle = _find_cycle(subtasks)
    if cycle is not None:
        raise PlanError(f"dependency cycle {' -> '.join(cycle)}; the plan must be acyclic")
    try:
        return Plan(subtasks=subtasks)
    except ValidationError as exc:  # pragma: no cover - the checks above mirror Plan's validator
        raise PlanError("; ".join(e["msg"] for e in exc.errors())) from None


# --------------------------------------------------------------------------- trivial tasks

_CAPABILITY_PATTERNS: list[tuple[SubtaskCapability, re.Pattern[str]]] = [
    (
        SubtaskCapability.code,
        re.compile(
            r"```|\bfunctions? (that|which|to|in|for)\b|\b(code|python|javascript|typescript|java|rust|"
            r"golang|c\+\+|sql|regex|script|bug|debug|compile|refactor|implement|unit tests?|"
            r"stack trace)\b",
            re.I,
        ),
    ),
    (
        SubtaskCapability.math,
        re.compile(
            r"\d\s*[-+*/^×÷%]\s*\d|\b(calculate|compute|solve|equation|integral|derivative|sum of|"
            r"product of|square root|percent(age)?|probability|average|median|arithmetic|"
            r"multiply|divide|divided)\b",
            re.I,
        ),
    ),
    (
        SubtaskCapability.extraction,
        re.compile(r"\b(extract|parse|pull out|list all|find all|fields?|entities)\b", re.I),
    ),
    (
        SubtaskCapability.writing,
        re.compile(
            r"\b(write|draft|rewrite|rephrase|essay|email|letter|poem|story|blog|summari[sz]e|"
            r"translate|proofread)\b",
            re.I,
        ),
    ),
    (
        SubtaskCapability.reasoning,
        re.compile(
            r"\b(why|explain|prove|compare|contrast|reason|analy[sz]e|evaluate|pros and cons|"
            r"trade-?offs?|should (i|we)|implications?)\b",
            re.I,
        ),
    ),
    (
        SubtaskCapability.retrieval,
        re.compile(r"^\s*(who|when|where|which|what)\b|\b(define|definition|look up|capital of)\b", re.I),
    ),
]

_SHORT_ANSWER = re.compile(
    r"^\s*(what is|what's|what are|who|when|where|which|how many|how much|in what year|"
    r"is|are|does|do|did|can|calculate|compute)\b",
    re.I,
)
_OPEN_HINT = re.compile(r"\b(explain|why|describe|write|draft|discuss|list|steps?|essay|compare)\b", re.I)
_MULTI_STEP = re.compile(
    r"\b(then|after that|afterwards|finally|additionally|and also|for each|step by step|"
    r"as well as)\b|\b(first|second|next),|^\s*(\d+[.)]|[-*•])\s",
    re.I | re.M,
)


def infer_capability(task: str) -> SubtaskCapability:
    """A capability guessed from keywords (code beats math beats extraction beats writing …)."""
    for capability, pattern in _CAPABILITY_PATTERNS:
        if pattern.search(task):
            return capability
    return SubtaskCapability.general


def infer_answer_type(task: str) -> Literal["short", "open"]:
    """``short`` for a short factual or numeric question, else ``open``."""
    text = task.strip()
    if len(text) <= TRIVIAL_MAX_CHARS and _SHORT_ANSWER.search(text) and not _OPEN_HINT.search(text):
        return "short"
    return "open"


def is_trivial(task: str) -> bool:
    """Whether ``task`` is one short question or instruction, not worth a planner call:
    at most ``TRIVIAL_MAX_CHARS`` characters, one line, one sentence or question, and no
    multi-step wording (then, first, for each, a numbered or bulleted list …)."""
    text = task.strip()
    if not text or len(text) > TRIVIAL_MAX_CHARS or "\n" in text:
        return False
    if text.count("?") > 1 or _MULTI_STEP.search(text):
        return False
    # More than one sentence (a terminator followed by more text) means more than one ask.
    sentences = [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", text) if s.strip()]
    return len(sentences) == 1


def trivial_plan(task: str) -> Plan:
    """A one-subtask plan (id ``answer``) for ``task``, capability and answer type guessed
    from keywords. The instruction is the task itself (or a pointer to it when the task is
    longer than an instruction may be: subtask prompts always carry the task)."""
    text = task.strip()
    if not text:
        raise PlanError("the task is empty")
    instruction = text if len(text) <= MAX_INSTRUCTION_CHARS else "Complete the task above in full."
    subtask = Subtask(
        id=TRIVIAL_ID,
        instruction=instruction,
        capability=infer_capability(text),
        answer_type=infer_answer_type(text),
    )
    return Plan(subtasks=[subtask])
