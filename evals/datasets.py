"""Parsing uploaded golden datasets (JSONL or CSV) into :class:`~evals.contracts.EvalCase` lists.

Every problem is reported as a :class:`DatasetFormatError` naming the 1-based line of the file;
nothing is skipped or truncated silently.

JSONL: one JSON object per line (blank lines are ignored) with the keys ``input`` (required),
``expected`` or its alias ``reference``, ``contexts`` (list of strings), ``tags`` (list of
strings), ``metadata`` (object) and ``id`` (optional; default ``case-{n}``, n = 1-based ordinal of
the case). A non-string ``input``/``expected`` is stored as its JSON text. Unknown keys are errors.

CSV: a header row naming the same columns (``metadata`` holds a JSON object); ``contexts`` and
``tags`` cells are a JSON array (cell starting with ``[``) or ``|``-separated values. An empty
``expected`` cell means no expected output. Unknown columns are errors.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import ValidationError

from evals.contracts import EvalCase

FIELDS = ("id", "input", "expected", "reference", "contexts", "tags", "metadata")
MAX_ID_LENGTH = 200


class DatasetFormatError(ValueError):
    """An uploaded dataset is malformed; ``line`` is the 1-based line in the file (None: whole file)."""

    def __init__(self, message: str, line: int | None = None) -> None:
        self.line = line
        self.message = message
        super().__init__(f"line {line}: {message}" if line is not None else message)


def case_hash(case: EvalCase) -> str:
    """Stable SHA-256 hex digest of a case's content (id included), for dataset version digests."""
    canonical = json.dumps(
        case.model_dump(mode="json"), sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def parse_cases(
    data: bytes, fmt: Literal["jsonl", "csv"], *, max_cases: int, max_bytes: int
) -> list[EvalCase]:
    """Parse an uploaded dataset; raises :class:`DatasetFormatError` on any problem."""
    if len(data) > max_bytes:
        raise DatasetFormatError(f"dataset is {len(data)} bytes, the limit is {max_bytes}")
    text = _decode(data)
    if fmt == "jsonl":
        rows = _jsonl_rows(text)
    elif fmt == "csv":
        rows = _csv_rows(text)
    else:
        raise DatasetFormatError(f"unknown dataset format {fmt!r} (use jsonl or csv)")
    cases: list[EvalCase] = []
    seen: dict[str, int] = {}
    for line, raw in rows:
        if len(cases) >= max_cases:
            raise DatasetFormatError(f"more than {max_cases} cases (the limit)", line)
        case = _build_case(raw, line, ordinal=len(cases) + 1)
        if case.id in seen:
            raise DatasetFormatError(f"duplicate id {case.id!r} (first on line {seen[case.id]})", line)
        seen[case.id] = line
        cases.append(case)
    if not cases:
        raise DatasetFormatError("dataset has no cases")
    return cases


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DatasetFormatError(f"invalid UTF-8 at byte {exc.start}", line) from None


def _jsonl_rows(text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetFormatError(f"invalid JSON: {exc.msg} (column {exc.colno})", number) from None
        if not isinstance(obj, dict):
            raise DatasetFormatError("each line must be a JSON object", number)
        yield number, obj


def _csv_rows(text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            return
        columns = [name.strip() for name in header]
        unknown = [name for name in columns if name not in FIELDS]
        if unknown:
            raise DatasetFormatError(
                f"unknown column(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(FIELDS)}", 1
            )
        duplicated = sorted({name for name in columns if columns.count(name) > 1})
        if duplicated:
            raise DatasetFormatError(f"duplicate column(s) {', '.join(duplicated)}", 1)
        if "input" not in columns:
            raise DatasetFormatError("the header has no 'input' column", 1)
        start = reader.line_num + 1
        for row in reader:
            line, start = start, reader.line_num + 1
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(columns):
                raise DatasetFormatError(f"expected {len(columns)} cells, found {len(row)}", line)
            yield line, _csv_cells(dict(zip(columns, row, strict=True)), line)
    except csv.Error as exc:
        raise DatasetFormatError(f"malformed CSV: {exc}", reader.line_num) from None


def _csv_cells(row: dict[str, str], line: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, cell in row.items():
        if key in ("contexts", "tags"):
            out[key] = _csv_list(cell, key, line)
        elif key == "metadata":
            if cell.strip():
                try:
                    out[key] = json.loads(cell)
                except json.JSONDecodeError:
                    raise DatasetFormatError("metadata must be a JSON object", line) from None
        elif key in ("expected", "reference", "id"):
            if cell != "":
                out[key] = cell
        else:
            out[key] = cell
    return out


def _csv_list(cell: str, key: str, line: int) -> list[str]:
    stripped = cell.strip()
    if not stripped:
        return []
    if stripped.startswith("["):
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError:
            raise DatasetFormatError(f"{key} looks like a JSON array but is not valid JSON", line) from None
        return _string_list(value, key, line)
    return [part.strip() for part in stripped.split("|") if part.strip()]


def _string_list(value: Any, key: str, line: int) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise DatasetFormatError(f"{key} must be a list of strings", line)
    return list(value)


def _text(value: Any, key: str, line: int) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        raise DatasetFormatError(f"{key} is null", line)
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _build_case(raw: dict[str, Any], line: int, *, ordinal: int) -> EvalCase:
    unknown = [key for key in raw if key not in FIELDS]
    if unknown:
        raise DatasetFormatError(
            f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(FIELDS)}", line
        )
    if "input" not in raw:
        raise DatasetFormatError("missing 'input'", line)
    text_input = _text(raw["input"], "input", line)
    if not text_input.strip():
        raise DatasetFormatError("empty input", line)
    expected = _expected(raw, line)
    case_id = raw.get("id")
    if case_id is None:
        case_id = f"case-{ordinal}"
    elif isinstance(case_id, int) and not isinstance(case_id, bool):
        case_id = str(case_id)
    if not isinstance(case_id, str) or not case_id.strip():
        raise DatasetFormatError("id must be a non-empty string", line)
    if len(case_id) > MAX_ID_LENGTH:
        raise DatasetFormatError(f"id is longer than {MAX_ID_LENGTH} characters", line)
    metadata = raw.get("metadata", {})
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise DatasetFormatError("metadata must be a JSON object", line)
    try:
        return EvalCase(
            id=case_id,
            input=text_input,
            expected=expected,
            contexts=_string_list(raw.get("contexts") or [], "contexts", line),
            tags=_string_list(raw.get("tags") or [], "tags", line),
            metadata=metadata,
        )
    except ValidationError as exc:  # defensive: the checks above should cover every field
        raise DatasetFormatError(f"invalid case: {exc.errors()[0]['msg']}", line) from None


def _expected(raw: dict[str, Any], line: int) -> str | None:
    values = [raw[key] for key in ("expected", "reference") if raw.get(key) is not None]
    if not values:
        return None
    texts = [_text(value, "expected", line) for value in values]
    if len(texts) == 2 and texts[0] != texts[1]:
        raise DatasetFormatError("both 'expected' and 'reference' are given and they differ", line)
    return texts[0]
