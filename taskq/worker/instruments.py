"""taskq's own middleware around each attempt: tracing, metrics, task logs and events.

They have the `call_next` shape of `taskq.Middleware.run`, composed by the same function,
but around a wider step: the attempt from its start to its durable outcome (run → decide →
store), which is what they report on (a retry is not a failure; the final event must leave
after the store has the outcome). Users' run middleware sits inside, around the task's code.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry.trace import INVALID_SPAN, Span

from taskq import protocol
from taskq.broker import Delivery
from taskq.client.events import EventBatcher, task_event
from taskq.client.task import Task
from taskq.status import TaskStatus
from taskq.store import Claimed, Outcome
from taskq.telemetry import metrics, semconv, tracing

logger = logging.getLogger("taskq.worker.executor")  # (where these lines always came from)


@dataclasses.dataclass(slots=True, kw_only=True)
class Attempt:
    """One claimed attempt. `runs` is False when the claim already decided its outcome (a
    cancel request, too many deliveries): then nothing is announced as running."""

    envelope: protocol.Envelope
    task: Task[Any, Any]
    claimed: Claimed
    delivery: Delivery
    runs: bool = True
    span: Span = INVALID_SPAN  # the tracing step's, for progress reports
    started: float = dataclasses.field(default_factory=time.monotonic)
    ran: float = 0.0  # seconds from start to the outcome decided (the store write excluded)
    # False when the outcome was not stored: the row had moved on to another attempt (this
    # one's worker was taken for dead), so it is neither announced nor counted as the task's.
    stored: bool = True


AttemptNext = Callable[[Attempt], Awaitable[Outcome]]


class Tracing:
    """The attempt's `process` span, current while the task's code runs, with its outcome."""

    async def __call__(self, attempt: Attempt, call_next: AttemptNext) -> Outcome:
        if not attempt.runs:
            return await call_next(attempt)
        with tracing.processing(attempt.envelope, attempt.claimed.attempt) as span:
            attempt.span = span
            outcome = await call_next(attempt)
            failure = None if outcome.error is None else outcome.error.to_json()
            tracing.outcome(span, _outcome_name(attempt, outcome), failure)
        return outcome


class Metrics:
    """Tasks running now, time in the queue, and each attempt's duration and outcome."""

    async def __call__(self, attempt: Attempt, call_next: AttemptNext) -> Outcome:
        envelope, name = attempt.envelope, attempt.task.name
        attributes = metrics.task_attributes(name, envelope.queue)
        if not attempt.runs:
            outcome = await call_next(attempt)
        else:
            if attempt.claimed.attempt == 1 and envelope.created_at:
                waited = max(time.time() - envelope.created_at, 0.0)
                metrics.batched.record(metrics.queue_time, waited, attributes)
            active, key = metrics.gauges.active, (name, envelope.queue)
            active[key] = active.get(key, 0) + 1
            slots = metrics.gauges.slots if attempt.claimed.slot_key else {}
            slots[name] = slots.get(name, 0) + 1
            try:
                outcome = await call_next(attempt)
            finally:
                active[key] -= 1
                slots[name] -= 1
        outcome_attributes = {**attributes, semconv.TASK_OUTCOME: _outcome_name(attempt, outcome)}
        metrics.batched.record(metrics.duration, attempt.ran, outcome_attributes)
        if not attempt.stored:
            return outcome
        if outcome.state is TaskStatus.SCHEDULED:
            metrics.retried.add(1, attributes)
        if outcome.dead_reason is not None:
            reason = {**attributes, semconv.DEAD_LETTER_REASON: outcome.dead_reason}
            metrics.dead_lettered.add(1, reason)
        return outcome


class Events:
    """`running` before the task's code starts (its progress events follow), and the final
    state once it is durable, with a small result riding along."""

    def __init__(self, events: EventBatcher) -> None:
        self._events = events

    async def __call__(self, attempt: Attempt, call_next: AttemptNext) -> Outcome:
        envelope, number = attempt.envelope, attempt.claimed.attempt
        if attempt.runs:
            self._events.add(task_event(envelope, TaskStatus.RUNNING, attempt=number))
        outcome = await call_next(attempt)
        if not attempt.stored:
            return outcome
        result = None
        if outcome.state is TaskStatus.SUCCEEDED:
            result = protocol.result_for_event(outcome.result, outcome.result_size)
        self._events.add(task_event(envelope, outcome.state, attempt=number, result=result))
        return outcome


class TaskLog:
    """One line per attempt: how long it ran, and how it ended."""

    async def __call__(self, attempt: Attempt, call_next: AttemptNext) -> Outcome:
        outcome = await call_next(attempt)
        envelope = attempt.envelope
        succeeded = outcome.state is TaskStatus.SUCCEEDED and attempt.stored
        log = logger.info if succeeded else logger.warning
        log(
            "%6.3fs %s %s[%s] attempt %d → %s%s",
            attempt.ran,
            envelope.queue,
            envelope.task,
            envelope.id,
            outcome.attempt,
            _outcome_name(attempt, outcome),
            "" if attempt.stored else " (not stored: another attempt had taken the task over)",
            extra={
                "action": "task_done",
                "task_id": envelope.id,
                "task_name": envelope.task,
                "attempt": outcome.attempt,
                "queue": envelope.queue,
            },
        )
        return outcome


def _outcome_name(attempt: Attempt, outcome: Outcome) -> str:
    """`succeeded`, `failed`, ..., `retried`, or `superseded` (not stored)."""
    if not attempt.stored:
        return "superseded"
    return "retried" if outcome.state is TaskStatus.SCHEDULED else outcome.state.value


def builtin(events: EventBatcher) -> list[Callable[[Attempt, AttemptNext], Awaitable[Outcome]]]:
    """taskq's own attempt middleware, outermost first: the log line and the counts see the
    final outcome; the span is current while the code runs."""
    return [TaskLog(), Metrics(), Events(events), Tracing()]
