"""The `taskq.tasks.submitted` counter, read from an SDK meter of the test's own.

taskq's instrument (`taskq.telemetry.metrics.submitted`) is swapped, for each test, for a
counter on a private `MeterProvider` with an `InMemoryMetricReader`: the process-wide
provider is never set.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from taskq.telemetry import metrics, prometheus, semconv
from tests.conftest import Backend


@pytest.fixture
def reader(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemoryMetricReader]:
    memory = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[memory])
    name, unit, description = semconv.TASKS_SUBMITTED
    counter = provider.get_meter("taskq").create_counter(name, unit=unit, description=description)
    monkeypatch.setattr(metrics, "submitted", counter)
    yield memory
    provider.shutdown()


@pytest.fixture
def embedded(sqlite_url: str) -> Backend:
    return Backend("embedded", "memory://", sqlite_url)


def submitted(reader: InMemoryMetricReader, task: str) -> int:
    taken = prometheus.snapshot(reader).get(semconv.TASKS_SUBMITTED[0], {"points": []})
    return sum(
        point["value"] for point in taken["points"] if point["labels"]["taskq.task.name"] == task
    )


async def test_each_new_task_is_counted_once(
    embedded: Backend, reader: InMemoryMetricReader
) -> None:
    app = embedded.app()

    @app.task(name="counted.job")
    async def job(n: int) -> int:
        return n

    async with app:
        # When one task is submitted, then a batch of three
        await job.submit(1)
        await job.submit_many([(2,), (3,), (4,)])

    # Then four are counted, under the task's name and queue
    assert submitted(reader, "counted.job") == 4
    (point,) = prometheus.snapshot(reader)[semconv.TASKS_SUBMITTED[0]]["points"]
    assert point["labels"] == {
        "taskq.task.name": "counted.job",
        "messaging.destination.name": "default",
    }


async def test_repeated_idempotent_submit_is_not_counted_again(
    embedded: Backend, reader: InMemoryMetricReader
) -> None:
    app = embedded.app()

    @app.task(name="counted.charge")
    async def charge() -> int:
        return 1

    async with app:
        # When the same idempotency key is submitted three times: one task
        handles = [await charge.options(idempotency_key="order-7").submit() for _ in range(3)]
        assert len({handle.id for handle in handles}) == 1

    # Then one task was submitted ("stored and sent"), not three
    assert submitted(reader, "counted.charge") == 1
