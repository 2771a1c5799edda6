"""`submit_many` batches, and results: waking on events, small results riding in them, queued
events sent together.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import taskq
from taskq import protocol, signing
from taskq.client import batch as batch_module
from taskq.client import waiter as waiter_module
from taskq.store import Outcome
from taskq.store import writer as writer_module
from tests.conftest import Backend
from tests.integration.client.helpers import (
    DEADLINE,
    TAIL_DEADLINE,
    Status,
    queued_messages,
)
from tests.support import eventually

# -- submit_many ------------------------------------------------------------------------------


async def test_submit_many_runs_every_item_and_gathers_the_results_in_order(
    backend: Backend,
) -> None:
    app = backend.app()

    @app.task(name="square")
    async def square(x: int) -> int:
        return x * x

    async with app, app.worker(concurrency=50):
        batch = await square.submit_many([(i,) for i in range(500)])
        assert isinstance(batch, taskq.Batch) and len(batch) == 500
        results = await app.gather(batch, timeout=DEADLINE)
        rows = await app.list_tasks(batch=batch.id, limit=1000)

    # Then every result came back, in item order
    assert results == [i * i for i in range(500)]
    # And every row carries the batch id
    assert len(rows) == 500
    assert {row.batch_id for row in rows} == {batch.id}
    assert {row.id for row in rows} == {handle.id for handle in batch}
    assert {row.state for row in rows} == {Status.SUCCEEDED}


async def test_gather_of_many_tasks_wakes_on_their_events(
    backend: Backend, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Above 16 tasks a wait binds one wildcard instead of a key per task.
    app = backend.app()
    release = asyncio.Event()
    first_read = asyncio.Event()
    finished = batch_module._finished

    async def reading(runtime: Any, task_ids: Any) -> list[str]:
        found = await finished(runtime, task_ids)
        first_read.set()
        return found

    monkeypatch.setattr(batch_module, "_finished", reading)

    @app.task(name="held")
    async def held(i: int) -> int:
        await asyncio.wait_for(release.wait(), DEADLINE)
        return i

    async with app, app.worker(concurrency=20):
        handles = await held.submit_many([(i,) for i in range(20)])
        # Given gather has read the store once, while all 20 were still running
        gathering = asyncio.create_task(app.gather(handles))
        await asyncio.wait_for(first_read.wait(), DEADLINE)
        # When they finish, the events they send wake it: long before the 30 s re-read
        release.set()
        assert await asyncio.wait_for(gathering, TAIL_DEADLINE) == list(range(20))


async def test_results_awaited_one_after_another_bind_the_events_key_once(
    production: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a client whose event subscription counts its binds and unbinds
    app = production.app()
    calls: list[str] = []

    @app.task(name="quick")
    async def quick(i: int) -> int:
        return i

    async with app, app.worker():
        assert await (await quick.submit(0)).result(timeout=DEADLINE) == 0
        subscription = app.waiter._subscription
        assert subscription is not None
        bind, unbind = subscription.bind, subscription.unbind

        async def counted_bind(key: str) -> None:
            calls.append("bind")
            await bind(key)

        async def counted_unbind(key: str) -> None:
            calls.append("unbind")
            await unbind(key)

        monkeypatch.setattr(subscription, "bind", counted_bind)
        monkeypatch.setattr(subscription, "unbind", counted_unbind)
        # When ten results are awaited one after another
        for i in range(1, 11):
            assert await (await quick.submit(i)).result(timeout=DEADLINE) == i
        # Then the binding made for the first was kept for them all
        assert calls == []
        # And it is dropped once nothing has been watched for a while
        monkeypatch.setattr(waiter_module, "UNBIND_AFTER", 0.01)
        assert await (await quick.submit(11)).result(timeout=DEADLINE) == 11

        async def seen() -> list[str]:
            return list(calls)

        await eventually(seen, lambda found: found == ["unbind"], what="the unbind after idling")


async def test_result_of_a_task_that_ended_before_result_was_called_returns_at_once(
    production: Backend,
) -> None:
    # Given a client already listening to events (one result awaited), and a task of its
    # own that has ended before its result is asked for
    app = production.app()

    @app.task(name="ended")
    async def ended(i: int) -> int:
        return i

    async with app, app.worker():
        assert await (await ended.submit(0)).result(timeout=DEADLINE) == 0
        handle = await ended.submit(1)

        async def heard() -> bool:  # its ending event has arrived, before anything watches it
            return handle.id in app.waiter._recent_ends

        await eventually(heard, what="the ending event")
        # When its result is awaited
        started = time.monotonic()
        value = await handle.result(timeout=DEADLINE)
        # Then it comes back at once: the ending event heard before was remembered, so the
        # store was read rather than an event waited for until the timeout
        assert value == 1
        assert time.monotonic() - started < DEADLINE / 2


def counted_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the task rows the client reads from now on, in order."""
    reads: list[str] = []
    info = taskq.TaskHandle.info

    async def counted_info(handle: taskq.TaskHandle[Any]) -> taskq.TaskRecord:
        reads.append(handle.id)
        return await info(handle)

    monkeypatch.setattr(taskq.TaskHandle, "info", counted_info)
    return reads


@pytest.mark.parametrize("signed", [True, False])
async def test_a_small_result_comes_with_its_signed_ending_event_and_others_from_the_store(
    production: Backend, monkeypatch: pytest.MonkeyPatch, signed: bool
) -> None:
    # Given a client that counts its reads of task rows (its events signed by its own key,
    # or by the database's)
    app = production.app(signing_key="s" * 32 if signed else None)
    reads = counted_reads(monkeypatch)

    @app.task(name="sized")
    async def sized(size: int) -> dict[str, Any]:
        return {"text": "x" * size, "raw": b"\x00\xff", "nested": [1.5, None, True]}

    limit = protocol.RESULT_IN_EVENT_MAX_BYTES
    async with app, app.worker():
        await (await sized.submit(0)).result(timeout=DEADLINE)  # (events now bound)
        reads.clear()
        # When a small result and then a large one are awaited
        small = await sized.submit(10)
        assert await small.result(timeout=DEADLINE) == {
            "text": "x" * 10, "raw": b"\x00\xff", "nested": [1.5, None, True]
        }  # fmt: skip
        large = await sized.submit(limit)
        assert (await large.result(timeout=DEADLINE))["text"] == "x" * limit
    # Then the small one came with its signed `succeeded` event, and only the large one was
    # read
    assert reads == [large.id]


async def test_a_result_awaited_after_its_ending_event_arrived_needs_no_read(
    production: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a client that counts its reads of task rows, with its events signed
    app = production.app(signing_key="s" * 32)
    reads = counted_reads(monkeypatch)

    @app.task(name="small")
    async def small() -> str:
        return "carried"

    async with app, app.worker():
        await (await small.submit()).result(timeout=DEADLINE)  # (events now bound)
        handle = await small.submit()
        # When its `succeeded` event has arrived before anyone awaits its result
        async with app.runtime.waiter.watch([handle.id]) as heard:
            await asyncio.wait_for(heard.may_have_ended.wait(), DEADLINE)
        reads.clear()
        # Then result() returns the value the event carried, without reading the store
        assert await handle.result(timeout=DEADLINE) == "carried"
    assert reads == []


async def test_a_result_the_store_refused_is_a_failure_also_for_a_waiting_result(
    production: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a store that refuses to write one task's succeeded outcome (as it would a value
    # it cannot hold)
    app = production.app()
    record = writer_module.Writer.record

    def refusing(self: writer_module.Writer, outcome: Outcome) -> Any:
        if outcome.state is Status.SUCCEEDED and outcome.result == "refused":
            refused: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            refused.set_exception(taskq.StoreError("value too odd to store"))
            return refused
        return record(self, outcome)

    monkeypatch.setattr(writer_module.Writer, "record", refusing)

    @app.task(name="refused")
    async def returns(value: str) -> str:
        return value

    async with app, app.worker():
        assert await (await returns.submit("kept")).result(timeout=DEADLINE) == "kept"
        # When a waiting client awaits the result the store refused
        handle = await returns.submit("refused")
        # Then it fails as the row says, though the value was small enough for an event
        with pytest.raises(taskq.TaskFailed) as failed:
            await handle.result(timeout=DEADLINE)
        assert (await handle.info()).state is Status.FAILED
    assert failed.value.error_type == "ResultNotStored"


async def test_concurrent_submits_send_their_queued_events_together(
    production: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a client whose broker counts the event messages it sends (and the events in each)
    app = production.app()

    @app.task(name="counted")
    async def counted(i: int) -> int:
        return i

    async with app:
        sent: list[int] = []
        publish_event = app.broker.publish_event

        async def counting(key: str, body: bytes) -> None:
            sent.append(len(protocol.decode_events(signing.unwrap(body)[0])))
            await publish_event(key, body)

        monkeypatch.setattr(app.broker, "publish_event", counting)
        # When 20 tasks are submitted at once
        handles = await asyncio.gather(*(counted.submit(i) for i in range(20)))
    # Then their 20 `queued` events went out in far fewer messages than 20
    assert sum(sent) == 20
    assert len(sent) <= 3, sent
    assert len({handle.id for handle in handles}) == 20


async def test_submit_many_refuses_an_unserialisable_item_and_stores_and_sends_nothing(
    backend: Backend,
) -> None:
    app = backend.app()

    @app.task(name="keep")
    async def keep(value: object) -> None:
        pass

    async with app:
        # Given a batch whose item 3 holds a value taskq cannot carry
        items: list[tuple[Any, ...]] = [(0,), (1,), (2,), ({"tags": object()},), (4,)]
        # Then the error names the item and where in it that value is
        with pytest.raises(taskq.SerializationError) as caught:
            await keep.submit_many(items)
        assert "item 3" in str(caught.value)
        assert "argument 0['tags'] has type builtins.object" in str(caught.value)
        # And no item was stored, nor published (not even those before it)
        assert await app.list_tasks() == []
        assert await queued_messages(app) == []


async def test_submit_many_names_the_item_that_is_wrong(backend: Backend) -> None:
    app = backend.app(max_payload_bytes=64 * 1024)

    @app.task(name="pair")
    async def pair(a: int, b: object = None) -> None:
        pass

    async with app:
        # Wrong arity at item 2
        with pytest.raises(taskq.InvalidArguments) as arity:
            await pair.submit_many([(1,), (2, 3), (1, 2, 3), (4,)])
        assert "item 2" in str(arity.value) and "pair" in str(arity.value)
        # An item that is neither a tuple nor a dict (a bare argument) at item 1
        with pytest.raises(TypeError) as bare:
            await pair.submit_many([(1,), 5])  # type: ignore[list-item]
        assert "item 1" in str(bare.value) and "int" in str(bare.value)
        # An item over max_payload_bytes at item 5
        big = [(i,) for i in range(5)] + [(5, b"x" * (100 * 1024))]
        with pytest.raises(taskq.PayloadTooLarge) as oversize:
            await pair.submit_many(big)
        assert "item 5" in str(oversize.value)
        # An idempotency key cannot apply to a batch
        with pytest.raises(taskq.ConfigurationError, match="idempotency_key"):
            await pair.options(idempotency_key="once").submit_many([(1,)])
        # And none of these stored or published anything
        assert await app.list_tasks() == []
        assert await queued_messages(app) == []


async def test_submit_many_dict_items_are_keyword_arguments(backend: Backend) -> None:
    app = backend.app()

    @app.task(name="greet")
    async def greet(name: str, greeting: str = "hello") -> str:
        return f"{greeting} {name}"

    async with app, app.worker():
        batch = await greet.submit_many(
            [{"name": "ada"}, {"name": "bob", "greeting": "hi"}, ("cy", "hey")]
        )
        assert await app.gather(batch, timeout=DEADLINE) == ["hello ada", "hi bob", "hey cy"]
        rows = {row.id: row for row in await app.list_tasks(batch=batch.id)}
    assert (rows[batch[1].id].args, rows[batch[1].id].kwargs) == (
        [],
        {"name": "bob", "greeting": "hi"},
    )


async def test_submit_many_with_countdown_leaves_the_rows_scheduled_until_due(
    backend: Backend,
) -> None:
    app = backend.app()

    @app.task(name="later")
    async def later(i: int) -> int:
        return i

    async with app, app.worker():
        submitted = datetime.now(UTC)
        batch = await later.options(countdown=1.0).submit_many([(i,) for i in range(3)])
        # Then the rows wait `scheduled`, due a second on
        rows = await app.list_tasks(batch=batch.id)
        assert {row.state for row in rows} == {Status.SCHEDULED}
        # And they run once due
        assert await app.gather(batch, timeout=DEADLINE) == [0, 1, 2]
        infos = [await handle.info() for handle in batch]
    for info in infos:
        assert info.run_at is not None and info.started_at is not None
        assert info.run_at >= submitted + timedelta(seconds=1)
        assert info.started_at >= info.run_at
