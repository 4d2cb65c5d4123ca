"""evals.datasets: JSONL / CSV parsing, errors that name the line, content hashes."""

from __future__ import annotations

import json

import pytest

from evals.contracts import EvalCase
from evals.datasets import DatasetFormatError, case_hash, parse_cases

LIMITS = {"max_cases": 100, "max_bytes": 100_000}


def jsonl(*rows: object) -> bytes:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows).encode()


def error(data: bytes, fmt: str = "jsonl", **limits: int) -> DatasetFormatError:
    with pytest.raises(DatasetFormatError) as info:
        parse_cases(data, fmt, **{**LIMITS, **limits})  # type: ignore[arg-type]
    return info.value


def test_jsonl_fields_defaults_and_aliases() -> None:
    data = jsonl(
        {"input": "What is 2+2?", "expected": "4", "tags": ["math"]},
        "",
        {
            "id": "rag-1",
            "input": "Who?",
            "reference": "Ada",
            "contexts": ["Ada wrote it."],
            "metadata": {"k": 1},
        },
        {"input": {"city": "Paris"}, "expected": {"temp": 20}},
        {"id": 7, "input": "x"},
    )
    cases = parse_cases(data, "jsonl", **LIMITS)
    assert [c.id for c in cases] == ["case-1", "rag-1", "case-3", "7"]
    assert cases[0] == EvalCase(id="case-1", input="What is 2+2?", expected="4", tags=["math"])
    assert cases[1].expected == "Ada"
    assert cases[1].contexts == ["Ada wrote it."]
    assert cases[1].metadata == {"k": 1}
    assert cases[2].input == '{"city": "Paris"}'  # structured input kept as JSON text
    assert cases[2].expected == '{"temp": 20}'
    assert cases[3].expected is None


def test_csv_with_json_and_pipe_lists_and_multiline_cells() -> None:
    data = (
        b"id,input,expected,contexts,tags,metadata\r\n"
        b'a,"Line one\nline two",yes,"[""c1"", ""c2""]",x|y ,"{""lang"": ""en""}"\r\n'
        b"b,Plain,,ctx one | ctx two,,\r\n"
    )
    cases = parse_cases(data, "csv", **LIMITS)
    assert cases[0].input == "Line one\nline two"
    assert cases[0].contexts == ["c1", "c2"]
    assert cases[0].tags == ["x", "y"]
    assert cases[0].metadata == {"lang": "en"}
    assert cases[1].expected is None
    assert cases[1].contexts == ["ctx one", "ctx two"]
    assert cases[1].tags == []


def test_utf8_bom_is_accepted() -> None:
    assert parse_cases(b"\xef\xbb\xbfinput\nhello\n", "csv", **LIMITS)[0].input == "hello"


@pytest.mark.parametrize(
    ("data", "line", "message"),
    [
        (jsonl({"input": "a"}, "{not json"), 2, "invalid JSON"),
        (jsonl({"input": "a"}, "[1, 2]"), 2, "JSON object"),
        (jsonl({"input": "a"}, {"expected": "b"}), 2, "missing 'input'"),
        (jsonl({"input": "   "}), 1, "empty input"),
        (
            jsonl({"input": "a", "id": "x"}, {"input": "b", "id": "x"}),
            2,
            "duplicate id 'x' (first on line 1)",
        ),
        (jsonl({"input": "a"}, {"input": "b", "id": "case-1"}), 2, "duplicate id"),
        (jsonl({"input": "a", "answer": "b"}), 1, "unknown field(s) 'answer'"),
        (jsonl({"input": "a", "contexts": "one"}), 1, "contexts must be a list of strings"),
        (jsonl({"input": "a", "tags": [1]}), 1, "tags must be a list of strings"),
        (jsonl({"input": "a", "metadata": [1]}), 1, "metadata must be a JSON object"),
        (jsonl({"input": "a", "expected": "x", "reference": "y"}), 1, "differ"),
        (jsonl({"input": "a", "id": ""}), 1, "id must be a non-empty string"),
        (jsonl({"input": "a"}, {"input": None}), 2, "input is null"),
    ],
)
def test_jsonl_errors_name_the_line(data: bytes, line: int, message: str) -> None:
    exc = error(data)
    assert exc.line == line
    assert message in exc.message
    assert str(exc).startswith(f"line {line}:")


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("input,answer\na,b\n", 1, "unknown column(s) 'answer'"),
        ("id,expected\nx,y\n", 1, "no 'input' column"),
        ("input,input\na,b\n", 1, "duplicate column"),
        ("input,expected\na,b\nc\n", 3, "expected 2 cells, found 1"),
        ("input,expected\na,b\n,c\n", 3, "empty input"),
        ('input,contexts\na,"[""unclosed"\n', 2, "not valid JSON"),
        ('id,input\n1,"two\nlines"\n2,b\n1,c\n', 5, "duplicate id '1' (first on line 2)"),
    ],
)
def test_csv_errors_name_the_line(text: str, line: int, message: str) -> None:
    exc = error(text.encode(), "csv")
    assert exc.line == line
    assert message in exc.message


def test_invalid_utf8_names_the_line() -> None:
    exc = error(b'{"input": "ok"}\n{"input": "caf\xe9"}\n')
    assert exc.line == 2
    assert "UTF-8" in exc.message


def test_limits_are_errors_not_truncation() -> None:
    rows = jsonl(*({"input": f"q{i}"} for i in range(5)))
    exc = error(rows, max_cases=3)
    assert exc.line == 4
    assert "more than 3 cases" in exc.message
    assert len(parse_cases(rows, "jsonl", max_cases=5, max_bytes=10_000)) == 5
    too_big = error(rows, max_bytes=10)
    assert too_big.line is None
    assert "limit is 10" in too_big.message
    assert "no cases" in error(b"\n\n").message
    assert "no cases" in error(b"input,expected\n", "csv").message


def test_case_hash_is_stable_and_content_sensitive() -> None:
    case = EvalCase(id="a", input="q", expected="x", contexts=["c"], tags=["t"], metadata={"b": 1, "a": 2})
    same = EvalCase(id="a", input="q", expected="x", contexts=["c"], tags=["t"], metadata={"a": 2, "b": 1})
    assert case_hash(case) == case_hash(same)
    assert len(case_hash(case)) == 64
    assert case_hash(case) != case_hash(case.model_copy(update={"expected": "y"}))
    assert case_hash(case) != case_hash(case.model_copy(update={"id": "b"}))
    # Pinned: the digest of dataset versions must not change between releases.
    assert case_hash(EvalCase(id="x", input="y")) == case_hash(
        EvalCase(id="x", input="y", contexts=[], tags=[])
    )
