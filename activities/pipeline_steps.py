"""Activities of the ``Pipeline`` workflow: one per step kind, each idempotent by its key.

Every step activity receives the step (JSON form), the outputs of the steps its templates name
and its idempotency key (``workflow_id:step_id``; ``workflow_id:comp:step_id`` for an undo). It
stores its own ``step.started`` / ``step.completed`` events under seqs the workflow reserved
(so a step costs one activity, not three), and outputs larger than the inline limit go to the
payload store. ``http`` calls are check-then-act against ``pipeline_effects``: a retry after
the call was recorded returns the recorded response; a retry after a crash between the call and
the record sends the same ``Idempotency-Key`` header again, so the receiver can drop it.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.llm import LlmActivities
from activities.runs import require_own_workflow
from core import events
from core.config import Settings
from core.errors import NotFound
from core.payloads import PayloadStore
from core.pipelines import expressions, progress, signing, ssrf, templating
from core.pipelines.contracts import (
    BranchChoice,
    LoadedVersion,
    LoadVersionInput,
    OutputsCall,
    ProgressInput,
    RenderCall,
    Rendered,
    StepCall,
    StepContext,
    StepOutput,
)
from core.pipelines.definition import (
    BranchStep,
    HttpStep,
    LlmStep,
    PipelineDefinition,
    RagStep,
    TransformStep,
)
from core.pipelines.repository import EffectRepository, PipelineRepository
from core.pipelines.settings import pipeline_settings
from core.pipelines.validate import parse_step
from core.providers import ChatRequest, Message, ProviderError
from core.providers.types import ResponseFormat

_RESERVED_HEADERS = {"host", "idempotency-key", signing.SIGNATURE_HEADER.lower(), "content-length"}


def failure(message: str, kind: str, *, retryable: bool = False) -> ApplicationError:
    """A step failure; ``kind`` is the error type a RetrySpec may list as non-retryable."""
    return ApplicationError(message, type=kind, non_retryable=not retryable)


class PipelineActivities:
    """Step activities, bound to the worker's database, Redis, HTTP client and LLM activities."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        redis: Redis,
        settings: Settings,
        llm: LlmActivities | None = None,
        http: httpx.AsyncClient | None = None,
        store: PayloadStore | None = None,
    ) -> None:
        self.sessions = sessions
        self.redis = redis
        self.settings = pipeline_settings(settings)
        self.llm = llm
        self.http = http
        self.store = store or PayloadStore()

    # --- shared helpers -----------------------------------------------------------------

    async def context(self, tenant_id: str, ctx: StepContext) -> dict[str, Any]:
        """The template/expression scope ``{inputs, steps: {id: {output, idempotency_key}}}``."""
        steps: dict[str, Any] = {}
        refs = {sid: out.ref for sid, out in ctx.steps.items() if out.ref is not None}
        texts: dict[str, str] = {}
        if refs:
            async with self.sessions() as session:
                values = await self.store.get_many(session, tenant_id, list(refs.values()))
            texts = dict(zip(refs, values, strict=True))
        for sid, out in ctx.steps.items():
            value = out.value
            if sid in texts:
                value = texts[sid] if out.text else json.loads(texts[sid])
            steps[sid] = {"output": value, "idempotency_key": ctx.keys.get(sid, "")}
        return {"inputs": ctx.inputs, "steps": steps}

    async def output(self, session: AsyncSession, tenant_id: str, key: str, value: Any) -> StepOutput:
        """Inline when small, else a JSON payload stored once under ``{key}:output``."""
        text = json.dumps(value, default=str, separators=(",", ":"))
        if len(text.encode()) <= self.settings.inline_output_bytes:
            return StepOutput(value=json.loads(text))
        ref = await self.store.put(
            session, tenant_id, text, idempotency_key=f"{key}:output", content_type="application/json"
        )
        return StepOutput(ref=ref)

    async def started(self, inp: StepCall) -> None:
        """Store and announce the step's ``*.started`` event (idempotent on its reserved seq)."""
        if inp.events is None:
            return
        sid = inp.events.parent or str(inp.step.get("id"))
        comp = inp.events.kind == "compensation"
        async with self.sessions() as session, session.begin():
            event = await progress.record(
                session,
                tenant_id=inp.tenant_id,
                workflow_id=inp.workflow_id,
                seq=inp.events.started,
                type="compensation.started" if comp else "step.started",
                data={"step": sid, "type": inp.step.get("type"), "attempt": activity.info().attempt},
                step_id=sid,
                state="compensating" if comp else "running",
            )
        await events.announce(self.redis, inp.workflow_id, event)

    async def finished(self, inp: StepCall, make: Any) -> StepOutput:
        """Run ``make(session)`` → output value and store it with the ``*.completed`` event."""
        sid = inp.events.parent if inp.events and inp.events.parent else str(inp.step.get("id"))
        event = None
        async with self.sessions() as session, session.begin():
            out = await self.output(session, inp.tenant_id, inp.idempotency_key, await make(session))
            if inp.events is not None:
                comp = inp.events.kind == "compensation"
                event = await progress.record(
                    session,
                    tenant_id=inp.tenant_id,
                    workflow_id=inp.workflow_id,
                    seq=inp.events.completed,
                    type="compensation.completed" if comp else "step.completed",
                    data={"step": sid, "stored": out.ref is not None},
                    step_id=sid,
                    state="compensated" if comp else "completed",
                )
        if event is not None:
            await events.announce(self.redis, inp.workflow_id, event)
        return out

    # --- step kinds ---------------------------------------------------------------------

    @activity.defn(name="pipeline_transform")
    async def pipeline_transform(self, inp: StepCall) -> StepOutput:
        """A ``transform`` step: JMESPath over the step's context (pure)."""
        require_own_workflow(inp.workflow_id, inp.tenant_id)
        step = parse_step(inp.step)
        if not isinstance(step, TransformStep):
            raise failure("pipeline_transform needs a transform step", "BadInput")
        await self.started(inp)
        scope = await self.context(inp.tenant_id, inp.context)
        try:
            value = expressions.search(step.expression, scope)
        except expressions.ExpressionFailed as exc:
            raise failure(str(exc), "ExpressionFailed") from None

        async def make(_: AsyncSession) -> Any:
            return value

        return await self.finished(inp, make)

    @activity.defn(name="pipeline_branch")
    async def pipeline_branch(self, inp: StepCall) -> BranchChoice:
        """A ``branch`` step's choice: the first case whose condition is truthy, else -1."""
        require_own_workflow(inp.workflow_id, inp.tenant_id)
        step = parse_step(inp.step)
        if not isinstance(step, BranchStep):
            raise failure("pipeline_branch needs a branch step", "BadInput")
        scope = await self.context(inp.tenant_id, inp.context)
        for index, case in enumerate(step.cases):
            try:
                if expressions.truthy(expressions.search(case.when, scope)):
                    return BranchChoice(case=index)
            except expressions.ExpressionFailed as exc:
                raise failure(str(exc), "ExpressionFailed") from None
        return BranchChoice(case=-1)

    @activity.defn(name="pipeline_http")
    async def pipeline_http(self, inp: StepCall) -> StepOutput:
        """An outbound call: SSRF-guarded, HMAC-signed, ``Idempotency-Key``, check-then-act."""
        require_own_workflow(inp.workflow_id, inp.tenant_id)
        step = parse_step(inp.step)
        if not isinstance(step, HttpStep):
            raise failure("pipeline_http needs an http step", "BadInput")
        await self.started(inp)
        async with self.sessions() as session:
            recorded = await EffectRepository(session).find(inp.tenant_id, inp.idempotency_key)
        if recorded is not None:
            response = recorded.response

            async def replay(_: AsyncSession) -> Any:
                return response

            return await self.finished(inp, replay)
        scope = await self.context(inp.tenant_id, inp.context)
        try:
            url = templating.render(step.url, scope)
            headers = {k: templating.render(v, scope) for k, v in step.headers.items()}
            body = templating.render_value(step.body, scope)
        except templating.TemplateFailed as exc:
            raise failure(str(exc), "TemplateFailed") from None
        try:  # one lookup: the connection goes to exactly the addresses vetted here
            vetted = await ssrf.check_resolved(url, self.settings.allow_private_hosts)
        except ssrf.UrlRefused as exc:
            raise failure(str(exc), "UrlRefused") from None
        content = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        sent = {k: v for k, v in headers.items() if k.lower() not in _RESERVED_HEADERS}
        if body is not None:
            sent.setdefault("Content-Type", "application/json")
        sent["Idempotency-Key"] = inp.idempotency_key
        if step.sign_with:
            secret = self.settings.signing_secrets.get(step.sign_with)
            if secret is None:
                raise failure(f"no signing secret named {step.sign_with!r}", "BadInput")
            sent[signing.SIGNATURE_HEADER] = signing.sign(
                secret.get_secret_value(), int(time.time()), content
            )
        response = await self._send(step, url, sent, content, vetted)

        async def record(session: AsyncSession) -> Any:
            await EffectRepository(session).record(
                inp.tenant_id, inp.workflow_id, inp.idempotency_key, int(response["status"]), response
            )
            return response

        return await self.finished(inp, record)

    async def _send(
        self, step: HttpStep, url: str, headers: dict[str, str], content: bytes, vetted: ssrf.Vetted
    ) -> dict[str, Any]:
        timeout = min(step.timeout_s, self.settings.http_timeout_s)
        client = self.http or ssrf.guarded_client(self.settings.allow_private_hosts, pinned=vetted)
        try:
            resp = await client.request(
                step.method, url, headers=headers, content=content, timeout=timeout, follow_redirects=False
            )
        except ssrf.UrlRefused as exc:  # only if the client's host differed from the vetted one
            raise failure(str(exc), "UrlRefused") from None
        except httpx.TimeoutException:
            raise failure("the call timed out", "timeout", retryable=True) from None
        except httpx.TransportError as exc:
            raise failure(f"the call failed: {type(exc).__name__}", "unreachable", retryable=True) from None
        finally:
            if self.http is None:
                await client.aclose()
        code = resp.status_code
        if code == 429 or code >= 500:
            kind = "rate_limited" if code == 429 else "server_error"
            raise failure(f"the endpoint answered {code}", kind, retryable=True)
        if code >= 300:
            raise failure(f"the endpoint answered {code}", "bad_request" if code >= 400 else "redirect")
        raw = resp.content[: self.settings.max_response_bytes]
        body: Any = raw.decode("utf-8", errors="replace")
        if "json" in resp.headers.get("content-type", ""):
            try:
                body = json.loads(raw)
            except ValueError:
                pass
        return {"status": code, "body": body}

    @activity.defn(name="pipeline_llm")
    async def pipeline_llm(self, inp: StepCall) -> StepOutput:
        """An ``llm`` step through ``LlmActivities.billed_chat`` (billed once by the step's key)."""
        require_own_workflow(inp.workflow_id, inp.tenant_id)
        step = parse_step(inp.step)
        if not isinstance(step, LlmStep):
            raise failure("pipeline_llm needs an llm step", "BadInput")
        if self.llm is None:
            raise failure("llm steps need the worker's provider registry", "BadInput")
        await self.started(inp)
        scope = await self.context(inp.tenant_id, inp.context)
        try:
            messages = [Message(role="user", content=templating.render(step.prompt, scope))]
            if step.system:
                messages.insert(0, Message(role="system", content=templating.render(step.system, scope)))
        except templating.TemplateFailed as exc:
            raise failure(str(exc), "TemplateFailed") from None
        request = ChatRequest(
            model=step.model,
            messages=messages,
            max_tokens=step.max_tokens,
            temperature=step.temperature,
            response_format=ResponseFormat(type="json_object") if step.json_output else None,
        )
        try:
            call = await self.llm.billed_chat(
                tenant_id=inp.tenant_id,
                workflow_id=inp.workflow_id,
                call_key=inp.idempotency_key,
                request=request,
            )
        except ProviderError as err:
            raise err.to_application_error() from err
        async with self.sessions() as session:
            text = await self.store.get(session, inp.tenant_id, call.answer)
        value: Any = text
        if step.json_output:
            try:
                value = json.loads(text)
            except ValueError:
                raise failure("the model did not answer valid JSON", "bad_output", retryable=True) from None
        large = len(text.encode()) > self.settings.inline_output_bytes

        async def make(_: AsyncSession) -> Any:
            return None if large and not step.json_output else value

        out = await self.finished(inp, make)
        if large and not step.json_output:  # the answer is already stored: hand over its reference
            out = StepOutput(ref=call.answer, text=True)
        out.cost_usd = float(call.cost_usd)
        return out

    @activity.defn(name="pipeline_rag")
    async def pipeline_rag(self, inp: StepCall) -> StepOutput:
        """A ``rag`` step: hybrid search of one of the tenant's knowledge bases (by id or name)."""
        from core.errors import NotFound
        from core.rag.embed import embedder_for
        from core.rag.search import SearchMode, search
        from core.rag.store import RagRepository

        require_own_workflow(inp.workflow_id, inp.tenant_id)
        step = parse_step(inp.step)
        if not isinstance(step, RagStep):
            raise failure("pipeline_rag needs a rag step", "BadInput")
        await self.started(inp)
        scope = await self.context(inp.tenant_id, inp.context)
        try:
            query = templating.render(step.query, scope)
        except templating.TemplateFailed as exc:
            raise failure(str(exc), "TemplateFailed") from None
        async with self.sessions() as session:
            repo = RagRepository.from_session(session)
            try:
                kb = await repo.kb_by_name(inp.tenant_id, step.knowledge_base)
                if kb is None:
                    kb = await repo.get_kb(inp.tenant_id, step.knowledge_base)
            except NotFound:
                raise failure(f"knowledge base {step.knowledge_base!r} not found", "BadInput") from None
            registry = self.llm.registry if self.llm is not None else None
            results = await search(
                repo,
                embedder_for(kb.embedding_model, registry),
                tenant_id=inp.tenant_id,
                kb_id=kb.id,
                query=query,
                top_k=step.top_k,
                mode=SearchMode.hybrid,
            )
        value = {
            "query": query,
            "results": [
                {
                    "document_id": r.hit.document_id,
                    "document_title": r.hit.document_title,
                    "chunk_index": r.hit.chunk_index,
                    "text": r.hit.text,
                    "score": r.score,
                }
                for r in results
            ],
        }

        async def make(_: AsyncSession) -> Any:
            return value

        return await self.finished(inp, make)

    # --- workflow helpers ---------------------------------------------------------------

    @activity.defn(name="pipeline_render")
    async def pipeline_render(self, inp: RenderCall) -> Rendered:
        """Render templates for workflow-side steps; names in ``store`` go to the payload store."""
        require_own_workflow(inp.workflow_id, inp.tenant_id)
        scope = await self.context(inp.tenant_id, inp.context)
        try:
            values = {k: templating.render_value(v, scope) for k, v in inp.templates.items()}
        except templating.TemplateFailed as exc:
            raise failure(str(exc), "TemplateFailed") from None
        out = Rendered()
        async with self.sessions() as session, session.begin():
            for name, value in values.items():
                if name in inp.store:
                    out.refs[name] = await self.store.put(
                        session, inp.tenant_id, str(value), idempotency_key=f"{inp.idempotency_key}:{name}"
                    )
                else:
                    out.values[name] = value
        return out

    @activity.defn(name="pipeline_outputs")
    async def pipeline_outputs(self, inp: OutputsCall) -> StepOutput:
        """The run's declared outputs (templates, or JMESPath when prefixed with ``=``)."""
        require_own_workflow(inp.workflow_id, inp.tenant_id)
        scope = await self.context(inp.tenant_id, inp.context)
        values: dict[str, Any] = {}
        try:
            for name, spec in inp.outputs.items():
                values[name] = (
                    expressions.search(spec[1:], scope)
                    if spec.startswith("=")
                    else templating.render(spec, scope)
                )
        except (templating.TemplateFailed, expressions.ExpressionFailed) as exc:
            raise failure(str(exc), "TemplateFailed") from None
        async with self.sessions() as session, session.begin():
            return await self.output(session, inp.tenant_id, f"{inp.workflow_id}:outputs", values)

    @activity.defn(name="pipeline_progress")
    async def pipeline_progress(self, inp: ProgressInput) -> None:
        """Store one progress event and the step's state in one transaction, then publish it."""
        require_own_workflow(inp.workflow_id, inp.tenant_id)
        async with self.sessions() as session, session.begin():
            event = await progress.record(
                session,
                tenant_id=inp.tenant_id,
                workflow_id=inp.workflow_id,
                seq=inp.seq,
                type=inp.type,
                data=inp.data,
                step_id=inp.step_id,
                state=inp.state,
            )
        await events.announce(self.redis, inp.workflow_id, event)

    @activity.defn(name="pipeline_load_version")
    async def pipeline_load_version(self, inp: LoadVersionInput) -> LoadedVersion:
        """A pinned (or the latest) immutable version of one of the tenant's pipelines."""
        async with self.sessions() as session:
            try:
                row = await PipelineRepository.from_session(session).version(
                    inp.tenant_id, inp.pipeline_id, inp.version
                )
            except NotFound:
                raise failure(f"pipeline {inp.pipeline_id!r} version not found", "BadInput") from None
        return LoadedVersion(
            version=row.version, definition=PipelineDefinition.model_validate(row.definition)
        )
