"""Sandboxed Jinja2 templates of pipeline steps: ``{{ inputs.x }}``, ``{{ steps.<id>.output.y }}``.

The environment is Jinja2's :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` (no access to
Python internals, no mutation of the context) with :class:`~jinja2.StrictUndefined` (a missing
variable is an error, never an empty string). The context holds only ``inputs`` and ``steps``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, meta, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOTS = frozenset({"inputs", "steps"})
_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


class TemplateFailed(ValueError):
    """A template does not parse or does not render; the message names no secret values."""


def is_template(text: str) -> bool:
    """Whether ``text`` contains Jinja2 markup."""
    return "{{" in text or "{%" in text or "{#" in text


@lru_cache(maxsize=2048)
def _parse(source: str) -> nodes.Template:
    try:
        return _ENV.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateFailed(f"template syntax error: {exc.message}") from None


def references(source: str, *, unknown_names: bool = True) -> tuple[set[str], set[str], set[str]]:
    """(input names, step ids, unknown root names) a template refers to.

    Only ``inputs.<name>`` / ``inputs['name']`` and ``steps.<id>`` forms are recognised; a
    dynamic subscript such as ``steps[name]`` counts as an unknown reference. Finding unknown
    names runs Jinja2's code generator; ``unknown_names=False`` skips it (the workflow only
    needs the step ids and must not trigger the generator's lazy imports).
    """
    if not is_template(source):
        return set(), set(), set()
    tree = _parse(source)
    found: dict[str, set[str]] = {"inputs": set(), "steps": set()}
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        base = getattr(node, "node", None)
        if not isinstance(base, nodes.Name) or base.name not in ROOTS:
            continue
        if isinstance(node, nodes.Getattr):
            found[base.name].add(node.attr)
            continue
        arg = getattr(node, "arg", None)
        if isinstance(arg, nodes.Const) and isinstance(arg.value, str):
            found[base.name].add(arg.value)
        else:
            found[base.name].add("<dynamic>")
    unknown = set(meta.find_undeclared_variables(tree)) - ROOTS if unknown_names else set()
    return found["inputs"], found["steps"], unknown


def check(source: str) -> None:
    """Raise :class:`TemplateFailed` when ``source`` does not parse."""
    if is_template(source):
        _parse(source)


def render(source: str, context: dict[str, Any]) -> str:
    """Render ``source`` over ``{"inputs": …, "steps": …}`` (other keys are dropped)."""
    if not is_template(source):
        return source
    scope = {k: context.get(k, {}) for k in ROOTS}
    try:
        return _ENV.from_string(_parse(source)).render(scope)
    except UndefinedError as exc:
        raise TemplateFailed(f"template refers to something that does not exist: {exc.message}") from None
    except SecurityError:
        raise TemplateFailed("template tried an operation the sandbox forbids") from None
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise TemplateFailed(f"template failed: {type(exc).__name__}") from None


def render_value(value: Any, context: dict[str, Any]) -> Any:
    """Render every string inside a JSON-like value (dict keys stay as written)."""
    if isinstance(value, str):
        return render(value, context)
    if isinstance(value, list):
        return [render_value(v, context) for v in value]
    if isinstance(value, dict):
        return {k: render_value(v, context) for k, v in value.items()}
    return value


def strings_of(value: Any) -> list[str]:
    """Every string inside a JSON-like value (for validation)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for v in value for s in strings_of(v)]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings_of(v)]
    return []
