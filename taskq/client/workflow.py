"""Submitting a workflow: every step checked, then every row in one transaction, then the
steps that wait for nothing published (`taskq.client.canvas` plans it; `store.workflows`
releases the others as their parents end)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from taskq import middleware, protocol
from taskq.client import canvas
from taskq.client.rows import new_task_row
from taskq.client.submit import check_options, make_envelope, publish_batch, start_sends
from taskq.client.workflow_handle import WorkflowHandle
from taskq.exceptions import ConfigurationError, TaskqError
from taskq.store import NewTask, WorkflowPlace
from taskq.telemetry import metrics, tracing

if TYPE_CHECKING:
    from taskq.client.options import TaskOptions
    from taskq.client.runtime import Runtime


async def submit_workflow(runtime: Runtime, node: canvas.Node) -> WorkflowHandle:
    """Plan `node`, check and store every step, publish the first ones; → its handle."""
    plan = canvas.plan(node)
    workflow_id = str(uuid.uuid4())
    max_bytes = runtime.settings.max_payload_bytes
    checked: list[tuple[protocol.Envelope, bytes]] = []

    async def accept(submission: middleware.Submission) -> str:
        # (Stored with the others once every step has come through.)
        where = f"workflow step {len(checked)} (task {submission.name!r})"
        envelope = make_envelope(runtime, submission, where=where)
        try:
            checked.append((envelope, protocol.encode(envelope, max_bytes=max_bytes)))
        except TaskqError as exc:
            raise type(exc)(f"{where}: {exc}") from None
        return envelope.id

    chain = middleware.compose_submit(runtime.middleware, accept)
    for step in plan.steps:
        await chain(_submission(runtime, step))
    children: dict[int, list[int]] = {step.index: [] for step in plan.steps}
    for step in plan.steps:
        for parent in step.after:
            children[parent].append(step.index)
    sends, messages = start_sends(checked, max_bytes)
    try:
        rows = [
            _row(envelope, workflow_id, step, children[step.index])
            for step, (envelope, _) in zip(plan.steps, messages, strict=True)
        ]
        output = _json_shape(plan.output)
        await runtime.store.insert_workflow(workflow_id, datetime.now(UTC), output, rows)
        roots = [message for step, message in zip(plan.steps, messages, strict=True)
                 if not step.after]  # fmt: skip
        await publish_batch(runtime, roots, relay=True)
    except BaseException as exc:
        for span in sends:
            tracing.end(span, exc)
        raise
    for span in sends:
        tracing.end(span)
    for envelope, _ in messages:
        metrics.submitted.add(1, metrics.task_attributes(envelope.task, envelope.queue))
    returns = {step.signature.task.name: getattr(step.signature.task, "returns", Any)
               for step in plan.steps}  # fmt: skip
    return WorkflowHandle(runtime, workflow_id, output, returns)


def _submission(runtime: Runtime, step: canvas.Step) -> middleware.Submission:
    """The step's call (without the value it will receive), its options checked."""
    signature = step.signature
    where = f"workflow step {step.index} (task {signature.task.name!r})"
    options = signature.options or signature.task.default_options
    _check_step_options(options, where)
    check_options(options, runtime.settings.max_priority)
    return middleware.Submission(
        name=signature.task.name,
        args=signature.args,
        kwargs=dict(signature.kwargs),
        options=options,
    )


def _check_step_options(options: TaskOptions, where: str) -> None:
    refused = {
        "idempotency_key": options.idempotency_key,
        "transaction": options.transaction,
        "countdown": options.countdown,
        "eta": options.eta,
    }
    given = [name for name, value in refused.items() if value is not None]
    if options.quota is not None:
        raise ConfigurationError(
            f"{where}: a task with a quota cannot be a workflow step (a workflow's steps are "
            "stored at once; give the quota to the task that submits the workflow instead)"
        )
    if given:
        raise ConfigurationError(
            f"{where}: {', '.join(given)} cannot be given to a workflow step (a step starts "
            "when the steps it waits for have ended)"
        )


def _row(
    envelope: protocol.Envelope, workflow_id: str, step: canvas.Step, children: list[int]
) -> NewTask:
    place = WorkflowPlace(
        workflow_id=workflow_id,
        step=step.index,
        parents=step.after,
        children=children,
        receives=None if step.receives is None else _json_shape(step.receives),
        tolerates_failures=step.tolerate_failures,
    )
    return dataclasses.replace(new_task_row(envelope, scheduled=True), workflow=place)


def _json_shape(shape: canvas.Shape) -> Any:
    """A shape as stored: a step number, or a list of shapes."""
    if isinstance(shape, canvas.Value):
        return shape.step
    return [_json_shape(item) for item in shape.items]
