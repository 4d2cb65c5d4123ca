"""Semantic checks of a pipeline definition, each naming the offending step.

:func:`parse_definition` turns a raw YAML/JSON document into a :class:`PipelineDefinition`
(shape errors such as an unknown step type are mapped back to the step's id);
:func:`check_definition` then refuses duplicate ids anywhere in the tree, references to steps
that do not run before the referring step (forward references and cycles, including a
``sub_pipeline`` that names its own pipeline), variables that are not declared inputs,
templates and JMESPath expressions that do not parse, and URL literals the outbound guard
refuses. Both raise :class:`PipelineInvalid` (HTTP 422) with ``errors: [{step, path, message}]``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from core.errors import ValidationFailed
from core.pipelines import expressions, ssrf, templating
from core.pipelines.definition import (
    ApprovalStep,
    BranchStep,
    ConnectorStep,
    HttpStep,
    LlmStep,
    NexusStep,
    ParallelStep,
    PipelineDefinition,
    RagStep,
    Step,
    SubPipelineStep,
    TransformStep,
    WaitStep,
)

STEP_ADAPTER: TypeAdapter[Step] = TypeAdapter(Step)


class Issue(BaseModel):
    """One problem of a definition: the step it concerns (None for pipeline-level), where, what."""

    step: str | None
    path: str
    message: str


class PipelineInvalid(ValidationFailed):
    """A definition was refused; ``errors`` lists every issue found."""

    def __init__(self, issues: list[Issue]) -> None:
        first = issues[0]
        where = f"step {first.step!r}" if first.step else first.path
        super().__init__(
            f"invalid pipeline definition: {where}: {first.message}",
            errors=[i.model_dump() for i in issues],
        )
        self.issues = issues


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _step_of(raw: Any, loc: tuple[int | str, ...]) -> tuple[str | None, tuple[int | str, ...]]:
    """The id of the innermost step a pydantic error location points into, and the clean loc."""
    node, step, clean = raw, None, []
    for part in loc:
        if isinstance(node, dict) and part == node.get("type") and part not in node:
            continue  # a discriminator tag ("http") inserted by pydantic
        clean.append(part)
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            node = None
        if isinstance(node, dict) and "type" in node and isinstance(node.get("id"), str):
            step = node["id"]
    return step, tuple(clean)


def parse_definition(raw: Any) -> PipelineDefinition:
    """Validate the shape of a raw document; :class:`PipelineInvalid` names the offending steps."""
    if not isinstance(raw, dict):
        raise PipelineInvalid([Issue(step=None, path="", message="a pipeline definition is an object")])
    try:
        return PipelineDefinition.model_validate(raw)
    except PydanticValidationError as exc:
        issues = []
        for err in exc.errors(include_url=False, include_input=False):
            step, loc = _step_of(raw, tuple(err["loc"]))
            message = err["msg"]
            if err["type"] == "union_tag_invalid":
                message = "unknown step type (expected one of: " + err["ctx"]["expected_tags"] + ")"
            issues.append(Issue(step=step, path=_path(loc), message=message))
        raise PipelineInvalid(issues) from None


# --- what each step refers to ---------------------------------------------------------------


def template_fields(step: BaseModel) -> list[tuple[str, str]]:
    """(field path, template) pairs of a step's own fields (not nested steps)."""
    out: list[tuple[str, str]] = []
    if isinstance(step, LlmStep):
        out += [("prompt", step.prompt)] + ([("system", step.system)] if step.system else [])
    elif isinstance(step, NexusStep):
        out.append(("task", step.task))
    elif isinstance(step, RagStep):
        out.append(("query", step.query))
    elif isinstance(step, ConnectorStep):
        out += [(f"input.{k}", s) for k, v in step.input.items() for s in templating.strings_of(v)]
    elif isinstance(step, HttpStep):
        out.append(("url", step.url))
        out += [(f"headers.{k}", v) for k, v in step.headers.items()]
        out += [("body", s) for s in templating.strings_of(step.body)]
    elif isinstance(step, ApprovalStep):
        out += [("title", step.title), ("context", step.context)]
    elif isinstance(step, WaitStep) and step.until:
        out.append(("until", step.until))
    elif isinstance(step, SubPipelineStep):
        out += [(f"inputs.{k}", s) for k, v in step.inputs.items() for s in templating.strings_of(v)]
    return out


def expression_fields(step: BaseModel) -> list[tuple[str, str]]:
    """(field path, JMESPath) pairs of a step's own fields."""
    if isinstance(step, TransformStep):
        return [("expression", step.expression)]
    if isinstance(step, BranchStep):
        return [(f"cases[{i}].when", c.when) for i, c in enumerate(step.cases)]
    return []


def referenced(step: BaseModel) -> tuple[set[str], set[str], set[str]]:
    """(inputs, step ids, unknown names) a step's own fields refer to; parse errors propagate."""
    inputs: set[str] = set()
    steps: set[str] = set()
    unknown: set[str] = set()
    for _, text in template_fields(step):
        i, s, u = templating.references(text)
        inputs |= i
        steps |= s
        unknown |= u
    for _, expr in expression_fields(step):
        i, s, u = expressions.references(expr)
        inputs |= i
        steps |= s
        unknown |= u
    return inputs, steps, unknown


def referenced_steps(step: BaseModel) -> set[str]:
    """Step ids a step's own fields refer to (the workflow passes only those outputs along)."""
    steps: set[str] = set()
    try:
        for _, text in template_fields(step):
            steps |= templating.references(text, unknown_names=False)[1]
        for _, expr in expression_fields(step):
            steps |= expressions.references(expr)[1]
    except (templating.TemplateFailed, expressions.ExpressionFailed):
        return set()
    return steps


def walk_steps(steps: list[Step]) -> Iterator[Step]:
    """Every step of a tree, depth first, including compensations and nested steps."""
    for step in steps:
        yield step
        if step.compensation is not None:
            yield from walk_steps([step.compensation])
        if isinstance(step, ParallelStep):
            for branch in step.branches:
                yield from walk_steps(branch)
        elif isinstance(step, BranchStep):
            for case in step.cases:
                yield from walk_steps(case.steps)
            yield from walk_steps(step.otherwise)


def sequence_ids(steps: list[Step]) -> set[str]:
    """Ids that have certainly run once a sequence finished (parallel branches included)."""
    out: set[str] = set()
    for step in steps:
        out.add(step.id)
        if isinstance(step, ParallelStep):
            for branch in step.branches:
                out |= sequence_ids(branch)
    return out


# --- the semantic checks --------------------------------------------------------------------


class _Checker:
    def __init__(self, defn: PipelineDefinition, pipeline_id: str | None, allowlist: list[str]) -> None:
        self.defn = defn
        self.pipeline_id = pipeline_id
        self.allowlist = allowlist
        self.secrets: set[str] | None = None
        self.issues: list[Issue] = []
        self.all_ids = [s.id for s in walk_steps(defn.steps)]

    def add(self, step: str | None, path: str, message: str) -> None:
        self.issues.append(Issue(step=step, path=path, message=message))

    def run(self) -> list[Issue]:
        seen: set[str] = set()
        for sid in self.all_ids:
            if sid in seen:
                self.add(sid, "id", f"duplicate step id {sid!r} (ids are unique across the whole pipeline)")
            seen.add(sid)
        visible = self.sequence(self.defn.steps, set(), "steps")
        for name, spec in self.defn.outputs.items():
            self.refs(None, f"outputs.{name}", spec, visible, expression=spec.startswith("="))
        return self.issues

    def sequence(self, steps: list[Step], visible: set[str], path: str) -> set[str]:
        visible = set(visible)
        for index, step in enumerate(steps):
            self.step(step, visible, f"{path}[{index}]")
            if isinstance(step, ParallelStep):
                for b, branch in enumerate(step.branches):
                    self.sequence(branch, visible, f"{path}[{index}].branches[{b}]")
                    visible |= sequence_ids(branch)
            elif isinstance(step, BranchStep):
                for c, case in enumerate(step.cases):
                    self.sequence(case.steps, visible, f"{path}[{index}].cases[{c}].steps")
                self.sequence(step.otherwise, visible, f"{path}[{index}].otherwise")
            visible.add(step.id)
        return visible

    def step(self, step: Step, visible: set[str], path: str) -> None:
        for field, text in template_fields(step):
            self.refs(step.id, f"{path}.{field}", text, visible, expression=False)
        for field, expr in expression_fields(step):
            self.refs(step.id, f"{path}.{field}", "=" + expr, visible, expression=True)
        if isinstance(step, HttpStep):
            self.http(step, path)
        if isinstance(step, WaitStep) and (step.seconds is None) == (step.until is None):
            self.add(step.id, f"{path}", "a wait step needs exactly one of seconds or until")
        if isinstance(step, SubPipelineStep) and self.pipeline_id and step.pipeline == self.pipeline_id:
            self.add(step.id, f"{path}.pipeline", "cycle: a sub_pipeline step runs its own pipeline")
        comp = step.compensation
        if comp is not None:
            cpath = f"{path}.compensation"
            if isinstance(comp, ParallelStep | BranchStep) or comp.compensation is not None:
                self.add(comp.id, cpath, "a compensation is a single step without its own compensation")
            self.step(comp, visible | {step.id}, cpath)

    def http(self, step: HttpStep, path: str) -> None:
        if not templating.is_template(step.url):
            try:
                ssrf.check_literal(step.url, self.allowlist)
            except ssrf.UrlRefused as exc:
                self.add(step.id, f"{path}.url", str(exc))
        if step.sign_with and self.secrets is not None and step.sign_with not in self.secrets:
            self.add(
                step.id, f"{path}.sign_with", f"no signing secret named {step.sign_with!r} is configured"
            )

    def refs(self, sid: str | None, path: str, text: str, visible: set[str], *, expression: bool) -> None:
        try:
            if expression:
                inputs, steps, unknown = expressions.references(text[1:])
            else:
                inputs, steps, unknown = templating.references(text)
        except (templating.TemplateFailed, expressions.ExpressionFailed) as exc:
            self.add(sid, path, str(exc))
            return
        for name in sorted(unknown):
            self.add(sid, path, f"unknown variable {name!r} (templates see only inputs and steps)")
        for name in sorted(inputs - set(self.defn.inputs)):
            self.add(sid, path, f"missing variable: input {name!r} is not declared")
        for ref in sorted(steps - visible):
            if ref == sid:
                self.add(sid, path, "cycle: a step refers to its own output")
            elif ref in self.all_ids:
                self.add(sid, path, f"cycle: step {ref!r} does not run before this step")
            else:
                self.add(sid, path, f"missing variable: unknown step {ref!r}")


def check_definition(
    defn: PipelineDefinition,
    *,
    pipeline_id: str | None = None,
    allowlist: list[str] | None = None,
    secrets: set[str] | None = None,
) -> None:
    """Raise :class:`PipelineInvalid` listing every semantic problem of ``defn``."""
    checker = _Checker(defn, pipeline_id, allowlist or [])
    checker.secrets = secrets
    issues = checker.run()
    if issues:
        raise PipelineInvalid(issues)


def validate_document(
    raw: Any,
    *,
    pipeline_id: str | None = None,
    allowlist: list[str] | None = None,
    secrets: set[str] | None = None,
) -> PipelineDefinition:
    """Parse and check a raw document in one call."""
    defn = parse_definition(raw)
    check_definition(defn, pipeline_id=pipeline_id, allowlist=allowlist, secrets=secrets)
    return defn


def parse_step(raw: dict[str, Any]) -> Step:
    """A single step from its JSON form (activities receive steps as plain dicts)."""
    return STEP_ADAPTER.validate_python(raw)
