"""taskq's metric instruments (OpenTelemetry API; no-ops until an SDK is configured).

Attributes are low-cardinality only: task name, queue, outcome, dead-letter reason;
never a task id. The worker feeds the observable gauges (queue depths, loop lag) through
`Gauges`.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable
from importlib.metadata import version

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Histogram, Observation

from taskq.telemetry import semconv as sc

_meter = metrics.get_meter("taskq", version("taskq"), schema_url=sc.SCHEMA_URL)


def _instrument(spec: tuple[str, str, str]) -> dict[str, str]:
    name, unit, description = spec
    return {"name": name, "unit": unit, "description": description}


submitted = _meter.create_counter(**_instrument(sc.TASKS_SUBMITTED))
duration = _meter.create_histogram(
    **_instrument(sc.TASK_DURATION), explicit_bucket_boundaries_advisory=sc.DURATION_BUCKETS
)
queue_time = _meter.create_histogram(
    **_instrument(sc.TASK_QUEUE_TIME), explicit_bucket_boundaries_advisory=sc.DURATION_BUCKETS
)
retried = _meter.create_counter(**_instrument(sc.TASKS_RETRIED))
dead_lettered = _meter.create_counter(**_instrument(sc.TASKS_DEAD_LETTERED))
rate_limited = _meter.create_counter(**_instrument(sc.RATE_LIMITED))


class BatchedRecords:
    """Histogram measurements recorded into the SDK a few hundred at a time, when enabled.

    The same `record` calls made back to back cost a busy worker about half as much CPU as
    one per task between everything else (the SDK's code and data stay in the CPU's caches),
    and leave the task's own path. Any collection (a Prometheus scrape, an OTLP export)
    first records what is held, so no reading misses a finished task. Off unless `taskq
    worker` turned it on: it does so when exemplars are off, since a measurement recorded
    later would no longer see the trace it belongs to.
    """

    SIZE = 256

    def __init__(self) -> None:
        self.enabled = False
        self._held: collections.deque[tuple[Histogram, float, dict[str, str]]] = collections.deque()

    def record(self, histogram: Histogram, value: float, attributes: dict[str, str]) -> None:
        if not self.enabled:
            histogram.record(value, attributes)
            return
        self._held.append((histogram, value, attributes))
        if len(self._held) >= self.SIZE:
            self.flush()

    def flush(self) -> None:
        """Record what is held (from any thread: each measurement is taken once)."""
        held = self._held
        while held:
            try:
                histogram, value, attributes = held.popleft()
            except IndexError:
                return  # another thread took the last one
            histogram.record(value, attributes)


batched = BatchedRecords()


def task_attributes(name: str, queue: str) -> dict[str, str]:
    return {sc.TASK_NAME: name, sc.MESSAGING_DESTINATION_NAME: queue}


@dataclasses.dataclass
class Gauges:
    """Latest values for the observable gauges, refreshed by the worker's loops."""

    # (task name, queue) → tasks running now: a plain count the executor keeps, read only
    # when metrics are collected (cheaper per task than an up-down counter's two adds).
    active: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)
    queue_depth: dict[str, int] = dataclasses.field(default_factory=dict)
    dlq_depth: dict[str, int] = dataclasses.field(default_factory=dict)
    loop_lag: float | None = None
    # task name → concurrency slots its running tasks hold here (summed across workers:
    # the cluster's use of its limit).
    slots: dict[str, int] = dataclasses.field(default_factory=dict)


gauges = Gauges()


def _active(_options: CallbackOptions) -> Iterable[Observation]:
    batched.flush()  # a collection is starting: what it reads should be complete
    for (name, queue), running in list(gauges.active.items()):
        yield Observation(running, task_attributes(name, queue))


def _queue_depths(_options: CallbackOptions) -> Iterable[Observation]:
    for queue, depth in list(gauges.queue_depth.items()):
        yield Observation(depth, {sc.MESSAGING_DESTINATION_NAME: queue})


def _dlq_depths(_options: CallbackOptions) -> Iterable[Observation]:
    for queue, depth in list(gauges.dlq_depth.items()):
        yield Observation(depth, {sc.MESSAGING_DESTINATION_NAME: queue})


def _slots(_options: CallbackOptions) -> Iterable[Observation]:
    for name, held in list(gauges.slots.items()):
        yield Observation(held, {sc.TASK_NAME: name})


def _loop_lag(_options: CallbackOptions) -> Iterable[Observation]:
    if gauges.loop_lag is not None:
        yield Observation(gauges.loop_lag)


_meter.create_observable_up_down_counter(**_instrument(sc.TASKS_ACTIVE), callbacks=[_active])
_meter.create_observable_gauge(**_instrument(sc.QUEUE_DEPTH), callbacks=[_queue_depths])
_meter.create_observable_gauge(**_instrument(sc.DLQ_DEPTH), callbacks=[_dlq_depths])
_meter.create_observable_gauge(**_instrument(sc.LOOP_LAG), callbacks=[_loop_lag])
_meter.create_observable_up_down_counter(**_instrument(sc.SLOTS_IN_USE), callbacks=[_slots])
