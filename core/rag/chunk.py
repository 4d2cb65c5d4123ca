"""Split parsed text into chunks: structure-aware (Markdown headings) and token-aware (MiniLM).

Markdown (and HTML/DOCX, whose parsers emit Markdown headings) is split with langchain's
Markdown separators first (headings, code fences, rules, paragraphs), so a chunk starts at a
heading whenever one fits; every chunk has at most ``chunk_tokens`` MiniLM tokens (the
embedder's window is 256 with the special tokens). Chunks are verbatim slices of the parsed
text, so ``start``/``end`` are exact offsets, and each carries the heading path it sits under.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from langchain_text_splitters import Language, RecursiveCharacterTextSplitter

from core.rag.tokenizer import count_tokens

PLAIN_SEPARATORS = ["\n\n", "\n", r"(?<=[.?!;])\s+", " ", ""]
_HEADING = re.compile(r"^(#{1,3})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)


@dataclass
class Chunk:
    """One chunk of a document: a slice ``text[start:end]`` of the parsed text."""

    index: int
    text: str
    start: int
    end: int
    token_count: int
    metadata: dict[str, Any] = field(default_factory=dict)


def _splitter(structure: str, chunk_tokens: int, overlap: int) -> RecursiveCharacterTextSplitter:
    separators = (
        RecursiveCharacterTextSplitter.get_separators_for_language(Language.MARKDOWN)
        if structure == "markdown"
        else PLAIN_SEPARATORS
    )
    return RecursiveCharacterTextSplitter(
        chunk_size=chunk_tokens,
        chunk_overlap=overlap,
        length_function=count_tokens,
        separators=separators,
        is_separator_regex=True,
        keep_separator="start" if structure == "markdown" else "end",
        strip_whitespace=True,
        add_start_index=True,
    )


def heading_path(text: str, offset: int) -> dict[str, str]:
    """The ``{"h1": …, "h2": …, "h3": …}`` headings in force at ``offset`` of Markdown ``text``."""
    path: dict[str, str] = {}
    for match in _HEADING.finditer(text):
        if match.start() > offset:
            break
        level = len(match.group(1))
        path = {k: v for k, v in path.items() if int(k[1]) < level}
        path[f"h{level}"] = match.group(2).strip()
    return path


def _only_headings(piece: str) -> bool:
    lines = [line for line in piece.splitlines() if line.strip()]
    return all(_HEADING.fullmatch(line.strip()) for line in lines)


def embedding_text(text: str, metadata: dict[str, Any]) -> str:
    """What is embedded for a chunk: its heading path, then its text (context for short chunks)."""
    headers = metadata.get("headers") or {}
    path = " > ".join(str(headers[k]) for k in ("h1", "h2", "h3") if k in headers)
    return f"{path}\n{text}" if path and not text.lstrip().startswith("#") else text


def chunk_text(text: str, structure: str = "text", chunk_tokens: int = 200, overlap: int = 30) -> list[Chunk]:
    """Chunks of ``text`` in reading order, each at most ``chunk_tokens`` tokens."""
    if overlap >= chunk_tokens:
        raise ValueError("overlap must be smaller than chunk_tokens")
    splitter = _splitter(structure, chunk_tokens, overlap)
    chunks: list[Chunk] = []
    for doc in splitter.create_documents([text]):
        piece = doc.page_content
        start = int(doc.metadata.get("start_index", -1))
        if start < 0 or text[start : start + len(piece)] != piece:
            found = text.find(piece)
            if found < 0:  # the splitter always returns slices; guard anyway
                continue
            start = found
        meta: dict[str, Any] = {}
        if structure == "markdown" and _only_headings(piece):
            continue  # its headings live on in the next chunk's heading path
        if structure == "markdown":
            headers = heading_path(text, start)
            if headers:
                meta["headers"] = headers
        chunks.append(
            Chunk(
                index=len(chunks),
                text=piece,
                start=start,
                end=start + len(piece),
                token_count=count_tokens(piece),
                metadata=meta,
            )
        )
    return chunks
