"""A small SOQL subset for the Salesforce simulator.

``SELECT f1, f2 FROM Obj [WHERE expr] [ORDER BY f [ASC|DESC], ...] [LIMIT n]`` where ``expr``
combines ``field op literal`` (``= != < > <= >= LIKE``) with AND / OR / NOT and parentheses;
literals are 'strings', datetimes (``2024-01-01T00:00:00.000Z``), numbers, true/false/null.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<dt>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}))"
    r"|(?P<num>-?\d+(?:\.\d+)?)|(?P<op><=|>=|!=|<>|=|<|>|\(|\)|,)|(?P<word>[A-Za-z_][\w.]*))"
)


class SoqlError(ValueError):
    """A query the simulator cannot parse (answered as MALFORMED_QUERY)."""


def parse_datetime(value: str) -> datetime:
    """A SOQL/REST datetime (``Z``, ``+0000`` or ``+00:00`` offsets)."""
    value = value.replace("Z", "+00:00")
    if re.search(r"[+-]\d{4}$", value):
        value = value[:-2] + ":" + value[-2:]
    return datetime.fromisoformat(value)


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise SoqlError(f"unexpected token at position {pos}")
        kind = m.lastgroup
        assert kind is not None
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


@dataclass
class Query:
    """A parsed SOQL query."""

    fields: list[str]
    sobject: str
    where: Any = None
    order: list[tuple[str, bool]] = field(default_factory=list)
    limit: int | None = None


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self, offset: int = 0) -> tuple[str, str]:
        j = self.i + offset
        return self.toks[j] if j < len(self.toks) else ("eof", "")

    def word(self, *expected: str) -> bool:
        kind, value = self.peek()
        if kind == "word" and value.upper() in expected:
            self.i += 1
            return True
        return False

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok[0] == "eof":
            raise SoqlError("unexpected end of query")
        self.i += 1
        return tok

    def query(self) -> Query:
        if not self.word("SELECT"):
            raise SoqlError("expected SELECT")
        fields = [self.take()[1]]
        while self.peek() == ("op", ","):
            self.i += 1
            fields.append(self.take()[1])
        if not self.word("FROM"):
            raise SoqlError("expected FROM")
        q = Query(fields, self.take()[1])
        if self.word("WHERE"):
            q.where = self.or_expr()
        if self.word("ORDER"):
            if not self.word("BY"):
                raise SoqlError("expected BY")
            while True:
                name = self.take()[1]
                desc = self.word("DESC")
                if not desc:
                    self.word("ASC")
                q.order.append((name, desc))
                if self.peek() != ("op", ","):
                    break
                self.i += 1
        if self.word("LIMIT"):
            q.limit = int(self.take()[1])
        if self.peek()[0] != "eof":
            raise SoqlError(f"unexpected {self.peek()[1]!r}")
        return q

    def or_expr(self) -> Any:
        left = self.and_expr()
        while self.word("OR"):
            left = ("or", left, self.and_expr())
        return left

    def and_expr(self) -> Any:
        left = self.not_expr()
        while self.word("AND"):
            left = ("and", left, self.not_expr())
        return left

    def not_expr(self) -> Any:
        if self.word("NOT"):
            return ("not", self.not_expr())
        if self.peek() == ("op", "("):
            self.i += 1
            inner = self.or_expr()
            if self.take() != ("op", ")"):
                raise SoqlError("expected )")
            return inner
        name = self.take()[1]
        if self.word("LIKE"):
            op = "like"
        else:
            kind, op = self.take()
            if kind != "op":
                raise SoqlError("expected an operator")
        kind, raw = self.take()
        value: Any
        if kind == "str":
            value = raw[1:-1].replace("\\'", "'")
        elif kind == "dt":
            value = parse_datetime(raw)
        elif kind == "num":
            value = float(raw)
        elif raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        elif raw.lower() == "null":
            value = None
        else:
            raise SoqlError(f"unexpected {raw!r}")
        return ("cmp", name, op, value)


def parse(text: str) -> Query:
    """Parse a SOQL query (``SoqlError`` when malformed)."""
    return _Parser(text).query()


def _compare(actual: Any, op: str, value: Any) -> bool:
    if isinstance(value, datetime):
        if not actual:
            return False
        actual = parse_datetime(str(actual))
    elif isinstance(value, float) and actual is not None:
        actual = float(actual)
    if op == "=":
        return bool(actual == value)
    if op in ("!=", "<>"):
        return bool(actual != value)
    if op == "like":
        pattern = "^" + re.escape(str(value)).replace("%", ".*").replace("_", ".") + "$"
        return re.match(pattern, str(actual or ""), re.I) is not None
    if actual is None or value is None:
        return False
    if op == "<":
        return bool(actual < value)
    if op == ">":
        return bool(actual > value)
    if op == "<=":
        return bool(actual <= value)
    return bool(actual >= value)


def matches(record: dict[str, Any], expr: Any) -> bool:
    """Whether ``record`` satisfies a parsed WHERE expression."""
    if expr is None:
        return True
    tag = expr[0]
    if tag == "and":
        return matches(record, expr[1]) and matches(record, expr[2])
    if tag == "or":
        return matches(record, expr[1]) or matches(record, expr[2])
    if tag == "not":
        return not matches(record, expr[1])
    _, name, op, value = expr
    return _compare(record.get(name), op, value)


def execute(query: Query, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Filter, order and limit ``records`` (full records; projection is the caller's)."""
    selected = [r for r in records if matches(r, query.where)]
    for name, desc in reversed(query.order):
        selected.sort(key=lambda r: (r.get(name) is None, str(r.get(name) or "")), reverse=desc)
    return selected[: query.limit] if query.limit is not None else selected
