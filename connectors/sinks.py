"""Sinks of connector jobs beyond the records table: knowledge bases and datasets.

- **Knowledge base** (``connectors.sinks_kb``): each record (or, for Microsoft 365
  ``drive_items``, the downloaded file) becomes a knowledge-base document.
  :meth:`KnowledgeBaseSink.prepare` renders or downloads the documents *before* the page's
  transaction; :meth:`KnowledgeBaseSink.write` stores them inside it (payload + ``kb_documents``
  row + the ``connector_documents`` link), so the page, its documents and the checkpoint commit
  together. The link is keyed by (knowledge base, connection, object, external id): an updated
  record moves it to a new document (its version + 1) and the previous document is erased once
  no other record links to it. Documents are deduplicated by content hash like uploads. The
  ingestion runs are started after the commit under the document's deterministic workflow id,
  so a retried page never ingests twice (and a page killed between its commit and its starts is
  swept later: ``activities/connector_sinks``).
- **Dataset** (``connectors.sinks_dataset``): pages go to ``connector_records`` (as the records
  sink); a completed run then snapshots them into one immutable eval dataset version (see
  ``activities/connector_sinks``).

This module holds what both share: the record templates and the check of a job's sink options.
Templates are sandboxed Jinja2 (immutable sandbox, strict undefined) over ``record``,
``external_id``, ``object`` and ``modified_at``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import ValidationError

from connectors.base import SyncRecord, validation_summary
from core.connector_contracts import DatasetSinkOptions, KnowledgeBaseSinkOptions, SinkType
from core.errors import ValidationFailed

_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
_MAX_RENDERED = 1_000_000


class TemplateError(ValueError):
    """A sink template does not parse or does not render (the message names no values)."""


@lru_cache(maxsize=512)
def _compile(source: str) -> Template:
    try:
        return _ENV.from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax error: {exc.message}") from None


def render(source: str, record: SyncRecord, obj: str) -> str:
    """Render a sink template over one record."""
    scope = {
        "record": record.data,
        "external_id": record.external_id,
        "object": obj,
        "modified_at": record.modified_at.isoformat(),
    }
    try:
        text = _compile(source).render(scope)
    except UndefinedError as exc:
        raise TemplateError(f"template refers to something that does not exist: {exc.message}") from None
    except SecurityError:
        raise TemplateError("template uses something the sandbox does not allow") from None
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise TemplateError(f"template failed: {type(exc).__name__}") from None
    return text[:_MAX_RENDERED]


def check_options(sink: SinkType, options: dict[str, Any]) -> dict[str, Any]:
    """Validate a job's sink options (shape and template syntax); the normalised options."""
    model: KnowledgeBaseSinkOptions | DatasetSinkOptions
    try:
        if sink is SinkType.knowledge_base:
            model = KnowledgeBaseSinkOptions.model_validate(options)
            sources = [model.title, model.text, *model.metadata.values()]
        elif sink is SinkType.dataset:
            model = DatasetSinkOptions.model_validate(options)
            sources = [model.input, model.expected, model.id, *model.contexts, *model.tags]
        else:
            if options:
                raise ValidationFailed("the records sink takes no options")
            return {}
    except ValidationError as exc:
        raise ValidationFailed(f"invalid sink options: {validation_summary(exc)}") from None
    for source in sources:
        if source is not None:
            try:
                _compile(source)
            except TemplateError as exc:
                raise ValidationFailed(f"invalid sink options: {exc}") from None
    return model.model_dump(exclude_none=True)
