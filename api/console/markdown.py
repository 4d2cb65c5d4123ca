"""A tiny, safe Markdown subset for approval context: everything is HTML-escaped first.

Supported: ``#`` headings, paragraphs, ``-``/``*`` lists, fenced code blocks, inline
`` `code` ``, ``**bold**`` and ``*emphasis*``. No links, images or raw HTML: text that looks
like HTML is shown as text, so a request's author cannot inject markup or script.
"""

from __future__ import annotations

import re

from markupsafe import Markup, escape

_BOLD = re.compile(r"\*\*(.+?)\*\*")
_EM = re.compile(r"(?<![*\w])\*(?!\s)(.+?)(?<!\s)\*(?![*\w])")
_CODE = re.compile(r"`([^`]+)`")
_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
_ITEM = re.compile(r"^\s*[-*]\s+(.*)$")


def _inline(text: str) -> str:
    """Escape, then apply inline markup to the escaped text (escaping never creates ``*``/`` ` ``)."""
    out = str(escape(text))
    out = _CODE.sub(r"<code>\1</code>", out)
    out = _BOLD.sub(r"<strong>\1</strong>", out)
    return _EM.sub(r"<em>\1</em>", out)


def render(source: str) -> Markup:
    """Render ``source`` to safe HTML."""
    html: list[str] = []
    paragraph: list[str] = []
    items: list[str] = []
    code: list[str] | None = None

    def flush() -> None:
        if paragraph:
            html.append("<p>" + "<br>".join(_inline(line) for line in paragraph) + "</p>")
            paragraph.clear()
        if items:
            html.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>")
            items.clear()

    for line in source.replace("\r\n", "\n").split("\n"):
        if code is not None:
            if line.strip().startswith("```"):
                html.append("<pre><code>" + str(escape("\n".join(code))) + "</code></pre>")
                code = None
            else:
                code.append(line)
            continue
        if line.strip().startswith("```"):
            flush()
            code = []
            continue
        heading = _HEADING.match(line)
        item = _ITEM.match(line)
        if heading:
            flush()
            level = len(heading.group(1))
            html.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif item:
            if paragraph:
                flush()
            items.append(item.group(1))
        elif not line.strip():
            flush()
        else:
            if items:
                flush()
            paragraph.append(line)
    if code is not None:  # an unclosed fence still renders as code
        html.append("<pre><code>" + str(escape("\n".join(code))) + "</code></pre>")
    flush()
    return Markup("\n".join(html))  # noqa: S704 - every fragment above was escaped
