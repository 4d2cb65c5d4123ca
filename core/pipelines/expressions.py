"""JMESPath expressions of ``transform`` steps, ``branch`` conditions and ``=`` outputs.

JMESPath is a query language, not code: evaluating it cannot reach Python objects, files or
the network. Expressions are evaluated over ``{"inputs": …, "steps": …}``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError
from jmespath.parser import ParsedResult


class ExpressionFailed(ValueError):
    """An expression does not compile or does not evaluate."""


@lru_cache(maxsize=2048)
def compile_expression(expression: str) -> ParsedResult:
    """The compiled expression (cached); :class:`ExpressionFailed` when it does not parse."""
    try:
        return jmespath.compile(expression)
    except JMESPathError as exc:
        raise ExpressionFailed(f"invalid JMESPath expression: {type(exc).__name__}") from None


def search(expression: str, data: dict[str, Any]) -> Any:
    """Evaluate ``expression`` over ``data``."""
    try:
        return compile_expression(expression).search(data)
    except ExpressionFailed:
        raise
    except JMESPathError as exc:
        raise ExpressionFailed(f"expression failed: {type(exc).__name__}") from None


def truthy(value: Any) -> bool:
    """JMESPath truthiness: false, null, empty string/list/object are false."""
    return value not in (None, False, "", [], {})


def references(expression: str) -> tuple[set[str], set[str], set[str]]:
    """(input names, step ids, unknown root fields) an expression refers to.

    Roots are the first field of a sub-expression at the top level (``inputs.x``,
    ``steps.a.output``); a bare field other than ``inputs``/``steps`` is unknown. Fields inside
    projections and function arguments that start from ``@`` are relative and not checked.
    """
    ast: dict[str, Any] = compile_expression(expression).parsed
    found: dict[str, set[str]] = {"inputs": set(), "steps": set()}
    unknown: set[str] = set()

    def root_chain(node: dict[str, Any]) -> list[str]:
        if node["type"] == "field":
            return [node["value"]]
        if node["type"] == "subexpression":
            chain: list[str] = []
            for child in node["children"]:
                part = root_chain(child)
                if not part:
                    break
                chain.extend(part)
                if child["type"] != "field" and child["type"] != "subexpression":
                    break
            return chain
        return []

    def walk(node: dict[str, Any], top: bool) -> None:
        kind = node["type"]
        if top and kind in ("field", "subexpression"):
            chain = root_chain(node)
            if chain:
                root = chain[0]
                if root in found:
                    if len(chain) > 1:
                        found[root].add(chain[1])
                else:
                    unknown.add(root)
        # The right-hand side of a projection/pipe/filter is relative to the left result.
        relative_from = {"projection": 1, "value_projection": 1, "flatten": 99, "pipe": 1}
        cutoff = relative_from.get(kind, 99)
        if kind == "filter_projection":
            cutoff = 1
        for index, child in enumerate(node.get("children", [])):
            if isinstance(child, dict):
                walk(child, top and index < cutoff and kind not in ("subexpression", "field"))

    walk(ast, True)
    return found["inputs"], found["steps"], unknown
