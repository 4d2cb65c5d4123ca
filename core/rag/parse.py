"""Parse uploads into text: plain text, Markdown, HTML (bs4), PDF (pypdf) and DOCX (python-docx).

HTML and DOCX headings become Markdown headings, so the chunker can split on structure. Every
parser refuses oversized or malformed input with :class:`UnsupportedDocument` (a 422 for the API,
a non-retryable failure for the ingestion workflow).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from typing import Any

from core.errors import ValidationFailed

TEXT_TYPES = {"text/plain": "text", "text/markdown": "markdown", "text/html": "html"}
BINARY_TYPES = {
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
}
SUPPORTED_TYPES = {**TEXT_TYPES, **BINARY_TYPES}
_EXTENSIONS = {
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".pdf": "application/pdf",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}
_HEADINGS = {"h1": "#", "h2": "##", "h3": "###", "h4": "####"}


class UnsupportedDocument(ValidationFailed):
    """The upload is of an unsupported type, too large, or cannot be parsed."""

    code = "unsupported_document"
    title = "Unsupported or malformed document"


@dataclass
class ParsedDocument:
    """The extracted text; ``structure`` is ``markdown`` when headings are marked with ``#``."""

    text: str
    structure: str
    metadata: dict[str, Any] = field(default_factory=dict)


def resolve_content_type(content_type: str | None, filename: str | None) -> str:
    """The supported MIME type of an upload (declared type first, then the file extension)."""
    declared = (content_type or "").split(";")[0].strip().lower()
    if declared in SUPPORTED_TYPES:
        return declared
    suffix = "." + filename.rsplit(".", 1)[-1].lower() if filename and "." in filename else ""
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]
    raise UnsupportedDocument("supported types: text/plain, text/markdown, text/html, PDF and DOCX")


def check_upload(data: bytes, content_type: str, max_bytes: int) -> None:
    """Size and magic-number checks done before anything is stored."""
    if not data:
        raise UnsupportedDocument("the document is empty")
    if len(data) > max_bytes:
        raise UnsupportedDocument(f"the document exceeds the limit of {max_bytes} bytes")
    kind = SUPPORTED_TYPES.get(content_type)
    if kind == "pdf" and not data.startswith(b"%PDF-"):
        raise UnsupportedDocument("the document is not a PDF file")
    if kind == "docx" and not data.startswith(b"PK\x03\x04"):
        raise UnsupportedDocument("the document is not a DOCX file")
    if kind in ("text", "markdown", "html"):
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            raise UnsupportedDocument("text documents must be UTF-8") from None


def parse(data: bytes, content_type: str, max_chars: int = 2_000_000) -> ParsedDocument:
    """Extract the text of ``data``; raises :class:`UnsupportedDocument` when it cannot."""
    kind = SUPPORTED_TYPES.get(content_type)
    if kind is None:
        raise UnsupportedDocument("unsupported content type")
    try:
        doc = _PARSERS[kind](data)
    except UnsupportedDocument:
        raise
    except Exception:  # parsers raise many types on malformed input; the message stays generic
        raise UnsupportedDocument(f"the {kind} document could not be parsed") from None
    doc.text = _tidy(doc.text)
    if not doc.text.strip():
        raise UnsupportedDocument("the document contains no extractable text")
    if len(doc.text) > max_chars:
        raise UnsupportedDocument(f"the extracted text exceeds {max_chars} characters")
    return doc


def _tidy(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _parse_text(data: bytes) -> ParsedDocument:
    return ParsedDocument(text=data.decode("utf-8"), structure="text")


def _parse_markdown(data: bytes) -> ParsedDocument:
    return ParsedDocument(text=data.decode("utf-8"), structure="markdown")


def _parse_html(data: bytes) -> ParsedDocument:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(data.decode("utf-8"), "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    body = soup.body or soup
    blocks: list[str] = []
    for el in body.find_all(["h1", "h2", "h3", "h4", "p", "li", "pre", "td", "blockquote"]):
        if el.find_parent(["p", "li", "pre", "td", "blockquote"]) is not None:
            continue  # nested block: its text is part of the parent's
        text = " ".join(el.get_text(" ", strip=True).split())
        if not text:
            continue
        prefix = _HEADINGS.get(el.name)
        blocks.append(f"{prefix} {text}" if prefix else f"- {text}" if el.name == "li" else text)
    if not blocks:  # no block elements at all: fall back to the raw text
        blocks = [body.get_text("\n", strip=True)]
    return ParsedDocument(text="\n\n".join(blocks), structure="markdown", metadata={"title": title})


def _parse_pdf(data: bytes) -> ParsedDocument:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data), strict=False)
    if reader.is_encrypted:
        raise UnsupportedDocument("encrypted PDF documents are not supported")
    pages = [page.extract_text() or "" for page in reader.pages]
    return ParsedDocument(text="\n\n".join(pages), structure="text", metadata={"pages": len(pages)})


def _parse_docx(data: bytes) -> ParsedDocument:
    import docx

    document = docx.Document(io.BytesIO(data))
    blocks: list[str] = []
    for para in document.paragraphs:
        text = para.text.strip()
        if not text:
            continue
        style = (para.style.name if para.style is not None else "") or ""
        match = re.match(r"Heading (\d)", style)
        if match and int(match.group(1)) <= 4:
            blocks.append("#" * int(match.group(1)) + " " + text)
        elif style == "Title":
            blocks.append("# " + text)
        else:
            blocks.append(text)
    for table in document.tables:
        for row in table.rows:
            blocks.append(" | ".join(cell.text.strip() for cell in row.cells))
    title = document.core_properties.title or ""
    return ParsedDocument(text="\n\n".join(blocks), structure="markdown", metadata={"title": title})


_PARSERS = {
    "text": _parse_text,
    "markdown": _parse_markdown,
    "html": _parse_html,
    "pdf": _parse_pdf,
    "docx": _parse_docx,
}
