"""Flow control on both backends, with in-process workers: rate limits space starts and hold
the rest back as `scheduled` rows, concurrency limits cap running tasks per key, quotas refuse
submits past them. (Several `taskq worker` processes: tests/e2e/test_flow_control_e2e.py.)"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from typer.testing import CliRunner

import taskq
from taskq import protocol
from taskq.cli import app as cli
from taskq.client import rows
from taskq.client import submit as submission
from taskq.telemetry import metrics, prometheus, semconv
from tests.conftest import Backend
from tests.support import eventually


def overlapping(spans: list[tuple[float, float]]) -> int:
    """The most spans open at one moment."""
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def most_in_a_window(starts: list[float], window: float) -> int:
    starts = sorted(starts)
    return max(
        sum(1 for other in starts[index:] if other - start <= window)
        for index, start in enumerate(starts)
    )


async def test_a_rate_limit_spaces_starts_and_holds_the_rest_back(backend: Backend) -> None:
    # Given a task limited to 20 starts a second (burst 1)
    app = backend.app()
    starts: list[float] = []

    @app.task(name="call_api", rate_limit="20/s")
    async def call_api() -> None:
        starts.append(time.monotonic())

    async with app, app.worker(concurrency=20, scheduler=True):
        # When 40 are submitted at once
        began = time.monotonic()
        handles = [h async for h in _submitted(call_api, 40)]
        # Then one waits, held back by the rate limit, visible on its row
        held = await eventually(
            lambda: app.list_tasks(state="scheduled", name="call_api"),
            what="tasks held back by the rate limit",
        )
        last = max(held, key=lambda record: record.run_at or record.created_at)
        assert last.held_by == "rate"
        assert last.run_at is not None
        # And `taskq status` says what it waits for
        shown = await asyncio.to_thread(
            CliRunner().invoke,
            cli,
            ["status", last.id],
            env={"TASKQ_BROKER_URL": backend.broker_url, "TASKQ_STORE_URL": backend.store_url},
        )
        assert "waiting   rate limit call_api (its turn at" in shown.output, shown.output
        await app.gather(handles, timeout=20)
        took = time.monotonic() - began

    # Then they ran about 50 ms apart: never more than 20 + burst in a second, in ~2 s
    assert len(starts) == 40
    assert most_in_a_window(starts, 1.0) <= 21
    assert 39 / 20 * 0.9 <= took <= 39 / 20 * 1.5, took


async def test_a_concurrency_limit_per_key_runs_one_per_customer_and_customers_together(
    backend: Backend,
) -> None:
    # Given a task that runs one at a time per customer
    app = backend.app()
    spans: dict[str, list[tuple[float, float]]] = {"a": [], "b": []}

    @app.task(name="sync", concurrency_limit=taskq.ConcurrencyLimit(1, key="customer"))
    async def sync(customer: str) -> None:
        start = time.monotonic()
        await asyncio.sleep(0.2)
        spans[customer].append((start, time.monotonic()))

    async with app, app.worker(concurrency=10, scheduler=True):
        # When 4 for each of two customers are submitted at once
        began = time.monotonic()
        handles = [await sync.submit(c) for c in "abab" * 2]
        await app.gather(handles, timeout=30)
        took = time.monotonic() - began

    # Then each customer's ran one at a time, the two customers side by side
    assert overlapping(spans["a"]) == 1
    assert overlapping(spans["b"]) == 1
    assert overlapping(spans["a"] + spans["b"]) == 2
    assert took < 4 * 0.2 * 2, took  # (one after the other would take 1.6 s)


async def test_a_slot_comes_back_when_its_task_fails_and_retries_take_one_again(
    backend: Backend,
) -> None:
    # Given a task limited to one running at once, which fails once then succeeds
    app = backend.app()
    runs: list[tuple[str, float, float]] = []
    failed: set[int] = set()

    @app.task(name="flaky", concurrency_limit=1, max_retries=1, backoff=taskq.Backoff.fixed(0.05))
    async def flaky(n: int) -> int:
        start = time.monotonic()
        await asyncio.sleep(0.05)
        runs.append((str(n), start, time.monotonic()))
        if n not in failed:
            failed.add(n)
            raise RuntimeError("first attempt fails")
        return n

    async with app, app.worker(concurrency=4, scheduler=True):
        # When three are submitted
        handles = [await flaky.submit(n) for n in range(3)]
        # Then each fails once and then succeeds, never two running at once
        assert sorted(await app.gather(handles, timeout=30)) == [0, 1, 2]
    assert len(runs) == 6
    assert overlapping([(start, end) for _, start, end in runs]) == 1


async def test_limited_tasks_never_slow_unlimited_ones_in_the_same_queue(
    production: Backend,
) -> None:
    # Given a task limited to one start a second and an unlimited one, on one queue
    app = production.app()

    @app.task(name="slow_api", rate_limit="1/s")
    async def slow_api() -> None:
        pass

    @app.task(name="free")
    async def free() -> None:
        pass

    async with app, app.worker(concurrency=2, scheduler=True):
        # When 50 limited ones are submitted, then 200 unlimited ones
        limited = await slow_api.submit_many([()] * 50)
        began = time.monotonic()
        unlimited = await free.submit_many([()] * 200)
        # Then the unlimited ones all finish within a few seconds
        await app.gather(list(unlimited), timeout=10)
        took = time.monotonic() - began
        # While the limited ones wait their turns as scheduled rows, not in the worker
        states = await app.store.get_states([h.id for h in limited])
    assert took < 5, took
    waiting = sum(1 for state in states.values() if state is taskq.TaskStatus.SCHEDULED)
    assert waiting >= 40, states


async def test_a_quota_refuses_submits_past_it_until_tasks_finish(backend: Backend) -> None:
    # Given a task allowing 3 unfinished per tenant
    app = backend.app()
    release = asyncio.Event()

    @app.task(name="job", quota=taskq.Quota(3, key="tenant"))
    async def job(tenant: str) -> None:
        await release.wait()

    async with app:
        # When 3 are submitted for tenant a, and 1 for tenant b
        first = [await job.submit("a") for _ in range(3)]
        await job.submit("b")
        # Then a fourth for tenant a is refused, saying the key, the quota and the count
        with pytest.raises(taskq.QuotaExceeded) as refused:
            await job.submit("a")
        assert (refused.value.key, refused.value.quota, refused.value.unfinished) == (
            "job tenant=a",
            3,
            3,
        )
        assert "3 are unfinished" in str(refused.value)
        # And a batch that would go past it is refused whole: nothing of it is stored
        before = len(await app.list_tasks(name="job"))
        with pytest.raises(taskq.QuotaExceeded):
            await job.submit_many([("b",), ("b",), ("b",)])
        assert len(await app.list_tasks(name="job")) == before
        # And once tenant a's tasks have finished, it may submit again
        async with app.worker(concurrency=4, scheduler=False):
            release.set()
            await app.gather(first, timeout=20)
            await job.submit("a")


async def test_taskq_limits_shows_each_key_in_use(backend: Backend) -> None:
    # Given a task one at a time per customer, two of them running for customer 7
    app = backend.app()
    release = asyncio.Event()

    @app.task(name="sync", concurrency_limit=taskq.ConcurrencyLimit(1, key="customer"))
    async def sync(customer: int) -> None:
        await release.wait()

    async with app, app.worker(concurrency=4, scheduler=True):
        handles = [await sync.submit(7), await sync.submit(7)]
        await eventually(
            lambda: app.list_tasks(state="running", name="sync"), what="a running sync"
        )
        await eventually(
            lambda: app.list_tasks(state="scheduled", name="sync"), what="a waiting sync"
        )
        # When `taskq limits --json` is asked
        result = await asyncio.to_thread(
            CliRunner().invoke,
            cli,
            ["limits", "--json"],
            env={"TASKQ_BROKER_URL": backend.broker_url, "TASKQ_STORE_URL": backend.store_url},
        )
        release.set()
        await app.gather(handles, timeout=20)

    # Then it shows the key with one slot in use of 1 and one task waiting
    assert result.exit_code == 0, result.output
    assert '"key": "sync customer=7"' in result.output
    assert '"in_use": 1' in result.output
    assert '"waiting": 1' in result.output


async def _submitted(
    task: taskq.Task[[], None], count: int
) -> AsyncIterator[taskq.TaskHandle[None]]:
    for _ in range(count):
        yield await task.submit()


async def test_a_message_that_hides_its_limits_is_still_held_by_them(backend: Backend) -> None:
    # Given a task limited to one running, one of which runs
    app = backend.app()
    release = asyncio.Event()

    @app.task(name="alone", concurrency_limit=1)
    async def alone() -> None:
        await release.wait()

    async with app, app.worker(concurrency=4, scheduler=True):
        running = await alone.submit()
        await eventually(running.status, lambda s: s is taskq.TaskStatus.RUNNING, what="a run")
        # When a second is submitted, and a copy of its message without its limits is sent
        second = await alone.submit()
        record = await app.store.get_task(second.id)
        assert record is not None and record.limits is not None
        stripped = dataclasses.replace(rows.envelope_of(record), limits=None)
        body = protocol.encode(stripped, max_bytes=app.settings.max_payload_bytes)
        await submission.publish(app.runtime, record.queue, body, stripped)
        # Then the row's limits hold it back all the same: it waits for the slot
        await eventually(
            second.info, lambda r: r.held_by == "slots", what="the second held for a slot"
        )
        assert await running.status() is taskq.TaskStatus.RUNNING
        release.set()
        await app.gather([running, second], timeout=20)


async def test_rows_of_rate_keys_long_unused_are_deleted(backend: Backend) -> None:
    # Given a rate-limited task that ran once
    app = backend.app()

    @app.task(name="paced", rate_limit="5/s")
    async def paced() -> None:
        pass

    async with app, app.worker(concurrency=2, scheduler=False):
        await (await paced.submit()).result(timeout=20)
        # When rate keys unused for an hour are forgotten, then those unused for 0 s
        kept = await app.store.forget_idle_rates(3600)
        # (its row says the next start may come 0.2 s after the last: idle only after that)
        await eventually(
            lambda: app.store.forget_idle_rates(0), lambda n: n == 1, what="rows deleted"
        )
    # Then only the second call deletes its row
    assert kept == 0
    async with app:
        assert await app.store.limits_in_use() == []


async def test_holds_and_slots_in_use_are_metrics(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given taskq's rate-limited counter on a meter of this test's own
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    name, unit, description = semconv.RATE_LIMITED
    counter = provider.get_meter("taskq").create_counter(name, unit=unit, description=description)
    monkeypatch.setattr(metrics, "rate_limited", counter)
    app = Backend("embedded", "memory://", sqlite_url).app()
    release = asyncio.Event()

    @app.task(name="metered", rate_limit="5/s")
    async def metered() -> None:
        pass

    @app.task(name="slotted", concurrency_limit=2)
    async def slotted() -> None:
        await release.wait()

    async with app, app.worker(concurrency=10, scheduler=True):
        # When 5 rate-limited tasks go at once, and 2 tasks hold slots
        await app.gather([await metered.submit() for _ in range(5)], timeout=20)
        holding = [await slotted.submit() for _ in range(2)]
        in_use = await eventually(
            lambda: _async(metrics.gauges.slots.get("slotted", 0)),
            lambda held: held == 2,
            what="slots in use",
        )
        release.set()
        await app.gather(holding, timeout=20)

    # Then the 4 held back by the rate limit are counted, and the slots were in use
    text = prometheus.render(prometheus.snapshot(reader))
    assert 'taskq_rate_limited_total{taskq_task_name="metered"} 4' in text, text
    assert in_use == 2
    assert prometheus.prometheus_name(*semconv.SLOTS_IN_USE[:2]) == "taskq_concurrency_slots_in_use"
    provider.shutdown()


async def _async(value: int) -> int:
    return value
