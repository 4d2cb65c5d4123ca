"""Parsers on the committed fixtures, size/type checks, and chunk boundaries."""

from __future__ import annotations

import pytest

from core.rag.chunk import chunk_text, heading_path
from core.rag.parse import UnsupportedDocument, check_upload, parse, resolve_content_type
from core.rag.tokenizer import count_tokens
from tests.conftest import FIXTURES

RAG = FIXTURES / "rag"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


@pytest.mark.parametrize(
    ("name", "content_type", "expected", "structure"),
    [
        ("sample.txt", "text/plain", "Second line with café.", "text"),
        ("sample.md", "text/markdown", "## Accounts", "markdown"),
        ("sample.html", "text/html", "# Holidays", "markdown"),
        ("sample.pdf", "application/pdf", "full disk encryption", "text"),
        ("sample.docx", DOCX, "## Expenses", "markdown"),
    ],
)
def test_each_format_parses(name: str, content_type: str, expected: str, structure: str) -> None:
    data = (RAG / name).read_bytes()
    check_upload(data, content_type, 1_000_000)
    doc = parse(data, content_type)
    assert expected in doc.text
    assert doc.structure == structure
    assert "\r" not in doc.text


def test_html_drops_scripts_and_styles_and_keeps_title() -> None:
    doc = parse((RAG / "sample.html").read_bytes(), "text/html")
    assert "var x" not in doc.text
    assert "color:red" not in doc.text
    assert doc.metadata["title"] == "Holiday calendar"
    assert "- Kings Day in Amsterdam" in doc.text


def test_type_size_and_magic_checks() -> None:
    assert resolve_content_type("application/octet-stream", "a.PDF") == "application/pdf"
    with pytest.raises(UnsupportedDocument):
        resolve_content_type("image/png", "a.png")
    with pytest.raises(UnsupportedDocument):
        check_upload(b"x" * 11, "text/plain", 10)
    with pytest.raises(UnsupportedDocument):
        check_upload(b"not a pdf", "application/pdf", 100)
    with pytest.raises(UnsupportedDocument):
        check_upload(b"\xff\xfe\x00", "text/plain", 100)
    with pytest.raises(UnsupportedDocument):
        check_upload(b"", "text/plain", 100)


def test_malformed_pdf_and_docx_are_refused() -> None:
    with pytest.raises(UnsupportedDocument):
        parse(b"%PDF-1.7 garbage", "application/pdf")
    with pytest.raises(UnsupportedDocument):
        parse(b"PK\x03\x04 garbage", DOCX)


def test_chunks_are_exact_slices_within_the_token_budget() -> None:
    text = "\n\n".join(
        f"Paragraph {i}. " + "The quick brown fox jumps over the lazy dog. " * 12 for i in range(6)
    )
    chunks = chunk_text(text, "text", chunk_tokens=64, overlap=8)
    assert len(chunks) > 6
    assert [c.index for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert text[c.start : c.end] == c.text
        assert c.token_count == count_tokens(c.text) <= 64
    assert chunks[-1].end == len(text.rstrip())


def test_markdown_chunks_start_at_headings_and_carry_the_path() -> None:
    text = (RAG / "sample.md").read_text()
    chunks = chunk_text(text, "markdown", chunk_tokens=20, overlap=0)
    assert [c.text.splitlines()[0] for c in chunks] == ["# Onboarding", "## Accounts", "## Equipment"]
    assert chunks[1].metadata["headers"] == {"h1": "Onboarding", "h2": "Accounts"}
    assert heading_path(text, len(text) - 1) == {"h1": "Onboarding", "h2": "Equipment"}


def test_overlap_must_be_smaller_than_chunk() -> None:
    with pytest.raises(ValueError, match="overlap"):
        chunk_text("x", "text", chunk_tokens=32, overlap=32)
