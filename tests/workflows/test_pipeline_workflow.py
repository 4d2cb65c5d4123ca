"""The Pipeline workflow against the real dev server, Postgres, Valkey and a local receiver."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowFailureError

from core.config import Settings
from core.pipelines import signing
from core.pipelines.contracts import PipelineResult
from tests.workflows.pipeline_support import (
    SECRET,
    definition,
    http_step,
    new_wid,
    pipeline_worker,
    receiver,
    run_input,
    run_rows,
)
from workflows.pipeline import PipelineWorkflow


@pytest.fixture
def deps(
    temporal_client: Client,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    redis_client: Redis,
    task_queue: str,
) -> tuple[Client, Settings, async_sessionmaker[AsyncSession], Redis, str]:
    return temporal_client, settings, sessions, redis_client, task_queue


async def test_steps_run_in_order_with_templates_signing_and_outputs(deps, tenant: str) -> None:  # type: ignore[no-untyped-def]
    client, settings, sessions, redis, queue = deps
    async with receiver() as recv, pipeline_worker(client, settings, sessions, redis, queue):
        raw = {
            "name": "hello",
            "inputs": {"who": {"type": "string"}},
            "steps": [
                {"id": "greet", "type": "transform", "expression": "{text: join(' ', ['hi', inputs.who])}"},
                http_step(
                    "notify",
                    recv.url + "/hook",
                    body={"message": "{{ steps.greet.output.text }}"},
                    sign_with="hook",
                ),
                {
                    "id": "big",
                    "type": "transform",
                    "expression": "[steps.greet.output.text, steps.greet.output.text]",
                },
            ],
            "outputs": {"greeting": "{{ steps.greet.output.text }}", "status": "=steps.notify.output.status"},
        }
        wid = new_wid(tenant)
        result = await client.execute_workflow(
            PipelineWorkflow.run,
            run_input(tenant, raw, {"who": "ada"}),
            id=wid,
            task_queue=queue,
            result_type=PipelineResult,
        )
    assert result.status == "completed"
    assert result.outputs == {"greeting": "hi ada", "status": 200}
    [call] = recv.calls
    assert call.body == b'{"message":"hi ada"}'
    assert call.headers["idempotency-key"] == f"{wid}:notify"
    assert signing.verify(SECRET, call.headers["x-nexus-signature"], call.body, int(time.time()))
    run, events = await run_rows(sessions, wid)
    assert run is not None
    assert run.status == "completed"
    assert run.result is not None
    assert run.result["progress"] == {
        "greet": "completed",
        "notify": "completed",
        "big": "completed",
    }
    types = [e.type for e in events]
    assert types[0] == "run.started"
    assert types[-1] == "run.completed"
    assert types.count("step.started") == 3
    assert types.count("step.completed") == 3
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


def saga_definition(url: str, third: str = "/three") -> dict:  # type: ignore[type-arg]
    fast = {"initial_interval_s": 0.05, "max_attempts": 5}
    return {
        "name": "saga",
        "steps": [
            http_step("one", url + "/one", compensation=http_step("undo_one", url + "/undo-one", retry=fast)),
            http_step(
                "two",
                url + "/two",
                compensation=http_step(
                    "undo_two",
                    url + "/undo-two",
                    retry=fast,
                    body={"undo": "{{ steps.two.idempotency_key }}"},
                ),
            ),
            http_step("three", url + third),
            http_step("four", url + "/four"),
        ],
    }


async def test_third_step_failing_compensates_two_then_one_exactly_once(deps, tenant: str) -> None:  # type: ignore[no-untyped-def]
    client, settings, sessions, redis, queue = deps
    async with (
        receiver(reject={"/three"}, fail_first={"/undo-two": 1}) as recv,
        pipeline_worker(client, settings, sessions, redis, queue),
    ):
        wid = new_wid(tenant)
        with pytest.raises(WorkflowFailureError):
            await client.execute_workflow(
                PipelineWorkflow.run, run_input(tenant, saga_definition(recv.url)), id=wid, task_queue=queue
            )
    # The undo of two failed once (500) and was retried; then one was undone. Four never ran.
    assert recv.paths() == ["/one", "/two", "/three", "/undo-two", "/undo-two", "/undo-one"]
    assert recv.paths(ok_only=True) == ["/one", "/two", "/undo-two", "/undo-one"]
    assert recv.effects["/undo-two"] == [f"{wid}:comp:two"]
    assert recv.effects["/undo-one"] == [f"{wid}:comp:one"]
    undo_two = [c for c in recv.calls if c.path == "/undo-two"]
    assert {c.headers["idempotency-key"] for c in undo_two} == {f"{wid}:comp:two"}
    assert undo_two[-1].body == f'{{"undo":"{wid}:two"}}'.encode()
    run, events = await run_rows(sessions, wid)
    assert run is not None
    assert run.status == "compensated"
    assert run.result is not None
    assert run.result["failed_step"] == "three"
    assert [c["step_id"] for c in run.result["compensations"]] == ["two", "one"]
    assert all(c["ok"] for c in run.result["compensations"])
    assert run.result["progress"]["one"] == "compensated"
    assert run.result["progress"]["three"] == "failed"
    types = [(e.type, e.data.get("step")) for e in events]
    assert ("step.failed", "three") in types
    comp = [t for t in types if t[0].startswith("compensation.")]
    assert comp == [
        ("compensation.started", "two"),
        ("compensation.completed", "two"),
        ("compensation.started", "one"),
        ("compensation.completed", "one"),
    ]
    assert events[-1].type == "run.failed"
    assert events[-1].data["status"] == "compensated"


async def test_a_compensation_failing_for_good_is_reported_and_alerted(deps, tenant: str) -> None:  # type: ignore[no-untyped-def]
    client, settings, sessions, redis, queue = deps
    async with (
        receiver(reject={"/three", "/undo-two"}) as recv,
        pipeline_worker(client, settings, sessions, redis, queue),
    ):
        wid = new_wid(tenant)
        with pytest.raises(WorkflowFailureError):
            await client.execute_workflow(
                PipelineWorkflow.run, run_input(tenant, saga_definition(recv.url)), id=wid, task_queue=queue
            )
    assert recv.paths(ok_only=True) == ["/one", "/two", "/undo-one"]
    run, events = await run_rows(sessions, wid)
    assert run is not None
    assert run.status == "compensation_failed"
    assert run.result is not None
    assert run.result["left_undone"] == ["two"]
    alert = [e for e in events if e.type == "run.compensation_failed"]
    assert len(alert) == 1
    assert alert[0].data["left_undone"] == ["two"]


async def test_cancel_runs_the_compensations(deps, tenant: str) -> None:  # type: ignore[no-untyped-def]
    client, settings, sessions, redis, queue = deps
    async with receiver() as recv, pipeline_worker(client, settings, sessions, redis, queue):
        raw = {
            "name": "cancel",
            "steps": [
                http_step("book", recv.url + "/book", compensation=http_step("unbook", recv.url + "/unbook")),
                {"id": "pause", "type": "wait", "seconds": 600},
            ],
        }
        wid = new_wid(tenant)
        handle = await client.start_workflow(
            PipelineWorkflow.run, run_input(tenant, raw), id=wid, task_queue=queue
        )
        for _ in range(100):
            run, _events = await run_rows(sessions, wid)
            if run is None and recv.paths() == ["/book"]:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    assert recv.paths() == ["/book", "/unbook"]
    run, events = await run_rows(sessions, wid)
    assert run is not None
    assert run.status == "compensated"
    assert events[-1].type == "run.cancelled"


async def test_parallel_branch_and_large_outputs(deps, tenant: str) -> None:  # type: ignore[no-untyped-def]
    client, settings, sessions, redis, queue = deps
    async with pipeline_worker(client, settings, sessions, redis, queue):
        raw = {
            "name": "shapes",
            "inputs": {"n": {"type": "integer"}},
            "steps": [
                {
                    "id": "fan",
                    "type": "parallel",
                    "branches": [
                        [{"id": f"b{i}", "type": "transform", "expression": f"`{i}`"}] for i in range(5)
                    ],
                },
                {
                    "id": "big",
                    "type": "transform",
                    "expression": "join('', [`\"" + "x" * 500 + '"`, `"' + "y" * 2000 + '"`])',
                },
                {
                    "id": "pick",
                    "type": "branch",
                    "cases": [
                        {
                            "when": "inputs.n > `10`",
                            "steps": [{"id": "large", "type": "transform", "expression": "'large'"}],
                        },
                    ],
                    "otherwise": [
                        {"id": "small", "type": "transform", "expression": "length(steps.big.output)"}
                    ],
                },
            ],
            "outputs": {
                "sum": "=sum([steps.b0.output, steps.b1.output, steps.b4.output])",
                "pick": "=steps.pick.output",
            },
        }
        result = await client.execute_workflow(
            PipelineWorkflow.run,
            run_input(tenant, raw, {"n": 3}),
            id=new_wid(tenant),
            task_queue=queue,
            result_type=PipelineResult,
        )
    assert result.outputs["sum"] == 5
    assert result.outputs["pick"] == {"case": "otherwise", "output": 2500}
    assert result.steps["big"].ref is not None
    assert result.steps["big"].value is None


async def test_unavailable_step_kinds_fail_clearly(deps, tenant: str) -> None:  # type: ignore[no-untyped-def]
    client, settings, sessions, redis, queue = deps
    async with pipeline_worker(client, settings, sessions, redis, queue):
        raw = {
            "name": "connector",
            "steps": [{"id": "sync", "type": "connector", "connection": "sf", "action": "create_case"}],
        }
        wid = new_wid(tenant)
        with pytest.raises(WorkflowFailureError) as info:
            await client.execute_workflow(
                PipelineWorkflow.run, run_input(tenant, raw), id=wid, task_queue=queue
            )
        # A rag step over a knowledge base the tenant does not have fails at once, by name.
        raw_rag = {
            "name": "rag",
            "steps": [{"id": "ask", "type": "rag", "knowledge_base": "kb", "query": "q"}],
        }
        with pytest.raises(WorkflowFailureError) as rag_info:
            await client.execute_workflow(
                PipelineWorkflow.run, run_input(tenant, raw_rag), id=new_wid(tenant), task_queue=queue
            )
    # A connector step naming a connection the tenant does not have fails at once, by name.
    assert "connection not found" in str(info.value.cause)
    assert "knowledge base 'kb' not found" in str(rag_info.value.cause)
    run, _ = await run_rows(sessions, wid)
    assert run is not None
    assert run.status == "failed"


async def test_llm_step_and_sub_pipeline(deps, tenant: str) -> None:  # type: ignore[no-untyped-def]
    from core.pipelines.repository import PipelineRepository

    client, settings, sessions, redis, queue = deps
    child = {
        "name": "child",
        "inputs": {"topic": {"type": "string"}},
        "steps": [
            {
                "id": "ask",
                "type": "llm",
                "model": "sim-openai/gpt-4o-mini",
                "prompt": "One word about {{ inputs.topic }}",
            }
        ],
        "outputs": {"answer": "{{ steps.ask.output }}"},
    }
    async with sessions() as session, session.begin():
        await PipelineRepository.from_session(session).create(
            tenant, "child", definition(child), created_by="test"
        )
    parent = {
        "name": "parent",
        "steps": [
            {"id": "topic", "type": "transform", "expression": "'tea'"},
            {
                "id": "sub",
                "type": "sub_pipeline",
                "pipeline": "child",
                "inputs": {"topic": "{{ steps.topic.output }}"},
            },
        ],
        "outputs": {"answer": "=steps.sub.output.outputs.answer"},
    }
    async with pipeline_worker(client, settings, sessions, redis, queue):
        wid = new_wid(tenant)
        result = await client.execute_workflow(
            PipelineWorkflow.run,
            run_input(tenant, parent),
            id=wid,
            task_queue=queue,
            result_type=PipelineResult,
        )
    assert result.status == "completed"
    assert isinstance(result.outputs["answer"], str)
    assert result.outputs["answer"]
    child_run, _ = await run_rows(sessions, f"{wid}:sub:sub")
    assert child_run is not None
    assert child_run.status == "completed"
    assert child_run.cost_usd > 0
