"""Task lifecycle on both backends: timeouts, cancellation, retries, dead letters, expiry.

Each test runs twice (the `backend` fixture): memory:// + SQLite, and RabbitMQ + PostgreSQL,
with an in-process `app.worker()` that also leads (so it publishes retries and sweeps
expired tasks). Waits are on results, on events set by the tasks, or on polls with a
deadline; where a test shows that something did *not* run, a sentinel task queued behind it
on one slot proves that the worker got past it.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

import taskq
from taskq import protocol, signing
from taskq.cli import app as cli
from taskq.client.dlq import DeadLetter, DeadLetters
from tests.conftest import Backend
from tests.support import eventually

DEADLINE = 10.0


async def letters_of(dead: DeadLetters, count: int) -> list[DeadLetter]:
    """The dead letters of a queue once there are `count` (RabbitMQ dead-letters after the
    reject, which follows the row's write, so the queue may lag the row by a moment)."""
    return await eventually(
        dead.list, lambda found: len(found) == count, what=f"{count} letters in {dead.name}"
    )


async def until_cancelled() -> None:
    """A task's work that never ends by itself: only a timeout or a cancel stops it."""
    await asyncio.Event().wait()


async def clock_passes(moment: float) -> None:
    """Poll the wall clock until `moment` (epoch seconds) is past, with a deadline."""
    deadline = time.monotonic() + DEADLINE
    while time.time() <= moment:
        assert time.monotonic() < deadline, "the clock did not reach the moment"
        await asyncio.sleep(0.05)


async def final_state(handle: taskq.TaskHandle[Any]) -> taskq.TaskStatus:
    """Wait until the task has ended, however it ended; → its state."""
    try:
        await handle.result(timeout=DEADLINE)
    except (taskq.TaskFailed, taskq.TaskCancelled, taskq.TaskExpired):
        pass
    return await handle.status()


def gaps(attempts: list[dict[str, Any]]) -> list[float]:
    """Seconds between the starts of consecutive attempts."""
    starts = [attempt["started_at"] for attempt in attempts]
    return [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(starts)]


# -- timeouts ---------------------------------------------------------------------------------


async def test_timeout_fails_with_task_timeout_promptly_and_frees_the_slot(
    backend: Backend,
) -> None:
    # Given a task that sleeps 10 s under a 1 s timeout, and a quick task queued behind it
    app = backend.app()
    started: dict[str, float] = {}
    cleaned_up = asyncio.Event()

    @app.task(name="sleepy", timeout=1)
    async def sleepy() -> None:
        started["sleepy"] = time.monotonic()
        try:
            await until_cancelled()
        finally:
            cleaned_up.set()

    @app.task(name="quick")
    async def quick() -> str:
        started["quick"] = time.monotonic()
        return "ran"

    async with app:
        slow = await sleepy.submit()
        behind = await quick.submit()

        # When a worker with a single slot runs them
        async with app.worker(concurrency=1):
            with pytest.raises(taskq.TaskFailed) as caught:
                await slow.result(timeout=DEADLINE)
            failed_after = time.monotonic() - started["sleepy"]
            assert await behind.result(timeout=DEADLINE) == "ran"
        info = await slow.info()
        attempts = await slow.attempts()

    # Then the sleeper failed with TaskTimeout about 1 s after it started, its code was cancelled
    assert caught.value.error_type == "TaskTimeout"
    assert 1.0 <= failed_after < 1.5, f"failed {failed_after:.3f} s after it started"
    assert cleaned_up.is_set()
    assert info.state is taskq.TaskStatus.FAILED
    assert info.error is not None and info.error.type == "TaskTimeout"
    assert (info.attempts, [a["state"] for a in attempts]) == (1, ["failed"])
    # And the slot was free again at once: the next task started right after the timeout
    assert started["quick"] - started["sleepy"] < 1.5


async def test_timeout_from_options_is_retried_when_retry_for_names_task_timeout(
    backend: Backend,
) -> None:
    # Given a task with no timeout of its own that is slow only on its first attempt
    app = backend.app()

    @app.task(name="slow_once", max_retries=1, retry_for=(taskq.TaskTimeout,))
    async def slow_once() -> int:
        attempt = taskq.context().attempt
        if attempt == 1:
            await until_cancelled()
        return attempt

    async with app, app.worker():
        # When it is submitted with options(timeout=0.3)
        handle = await slow_once.options(timeout=0.3).submit()

        # Then the first attempt timed out, was retried, and the second succeeded
        assert await handle.result(timeout=DEADLINE) == 2
        attempts = await handle.attempts()
    assert [(a["attempt"], a["state"]) for a in attempts] == [(1, "retrying"), (2, "succeeded")]
    assert attempts[0]["error"]["type"] == "TaskTimeout"


async def test_plain_def_task_timeout_leaves_its_thread_running_but_the_slot_free(
    backend: Backend,
) -> None:
    """A thread cannot be killed: past its timeout a plain `def` task's thread runs on, but
    the worker records `failed`/TaskTimeout, frees the slot, and ignores the late return."""
    # Given a blocking `def` task with a 0.5 s timeout, and two tasks queued behind it
    app = backend.app()
    release = threading.Event()
    blocked = threading.Event()
    returned = threading.Event()
    started: dict[str, float] = {}

    @app.task(name="blocking", timeout=0.5)
    def blocking() -> str:
        started["blocking"] = time.monotonic()
        blocked.set()
        release.wait(DEADLINE)
        returned.set()
        return "too late"

    @app.task(name="next_async")
    async def next_async() -> str:
        return "ran"

    @app.task(name="next_in_line")
    def next_in_line() -> str:
        started["next_in_line"] = time.monotonic()
        return "ran"

    async with app:
        stuck = await blocking.submit()
        async_behind = await next_async.submit()
        behind = await next_in_line.submit()
        # When a worker with a single slot runs them
        async with app.worker(concurrency=1):
            try:
                with pytest.raises(taskq.TaskFailed) as caught:
                    await stuck.result(timeout=DEADLINE)
                failed_after = time.monotonic() - started["blocking"]
                # Then the blocking task failed with TaskTimeout while its thread still runs
                assert caught.value.error_type == "TaskTimeout"
                assert 0.5 <= failed_after < 1.0, f"failed {failed_after:.3f} s after it started"
                assert blocked.is_set() and not returned.is_set()

                # And the worker's slot is free: the next tasks, an `async def` and then a
                # `def` (which needs a pool thread), run although that thread has not returned
                assert await async_behind.result(timeout=3) == "ran"
                assert await behind.result(timeout=3) == "ran"
                assert not returned.is_set()
                assert started["next_in_line"] - started["blocking"] < 1.5

                # And when the thread finally returns, its value changes nothing
                release.set()
                await asyncio.to_thread(returned.wait, DEADLINE)
            finally:
                release.set()  # never leave the thread (and the worker's shutdown) hanging
        info = await stuck.info()
    assert info.state is taskq.TaskStatus.FAILED
    assert info.error is not None and info.error.type == "TaskTimeout"
    assert info.result is None


# -- cancellation -----------------------------------------------------------------------------


async def test_cancel_running_task_runs_its_finally_and_ends_cancelled(backend: Backend) -> None:
    # Given a task (with retries left) in a long await, with cleanup in its `finally`
    app = backend.app()
    started = asyncio.Event()
    cleanups: list[str] = []

    @app.task(name="hold", max_retries=3)
    async def hold() -> None:
        started.set()
        try:
            await until_cancelled()
        finally:
            cleanups.append("finally ran")

    async with app, app.worker():
        handle = await hold.submit()
        await asyncio.wait_for(started.wait(), DEADLINE)

        # When it is cancelled through its handle
        begun = time.monotonic()
        assert await handle.cancel() is True

        # Then result() raises TaskCancelled within about a second, and the `finally` ran
        with pytest.raises(taskq.TaskCancelled):
            await handle.result(timeout=DEADLINE)
        took = time.monotonic() - begun
        assert took < 1.0, f"cancelled after {took:.3f} s"
        assert cleanups == ["finally ran"]
        info = await handle.info()
        assert info.state is taskq.TaskStatus.CANCELLED
        # And it was not retried, although it had retries left
        assert info.attempts == 1
        assert [a["state"] for a in await handle.attempts()] == ["cancelled"]

        # When it is cancelled again
        # Then cancel() says it had already finished, and nothing changed
        assert await handle.cancel() is False
        assert await handle.info() == info
    assert cleanups == ["finally ran"]


async def test_cancel_just_after_the_claim_is_not_lost(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task is `running` from its claim's commit; its worker announces that (a publish
    that a busy or blocked broker can make slow) before it starts the task's code. A cancel
    arriving in between must still stop the task."""
    app = backend.app()
    ran: list[str] = []

    @app.task(name="hold")
    async def hold() -> str:
        ran.append("started")
        await until_cancelled()  # had the cancel been lost, the task would stay running
        ran.append("finished")
        return "finished"

    async with app:
        # Given a worker whose `running` announcement is held up (a slow broker, staged)
        claimed = asyncio.Event()
        announce = asyncio.Event()
        publish_event = app.broker.publish_event

        async def slow_publish_event(key: str, body: bytes) -> None:
            states = {event.state for event in protocol.decode_events(signing.unwrap(body)[0])}
            if taskq.TaskStatus.RUNNING.value in states:
                claimed.set()
                await announce.wait()
            await publish_event(key, body)

        monkeypatch.setattr(app.broker, "publish_event", slow_publish_event)
        async with app.worker():
            handle = await hold.submit()
            await asyncio.wait_for(claimed.wait(), DEADLINE)
            assert await handle.status() is taskq.TaskStatus.RUNNING

            # When the task is cancelled in that moment, and the announcement then goes out
            assert await handle.cancel() is True
            announce.set()

            # Then the task ends `cancelled`, and its code did not run to the end
            ended = await final_state(handle)
    assert ended is taskq.TaskStatus.CANCELLED, (
        f"cancel() returned True, yet the task ended {ended} (its code: {ran})"
    )
    assert "finished" not in ran


async def test_cancel_queued_task_never_starts(backend: Backend) -> None:
    # Given a task queued while no worker runs
    app = backend.app()
    ran: list[str] = []

    @app.task(name="victim")
    async def victim() -> None:
        ran.append("victim")

    @app.task(name="sentinel")
    async def sentinel() -> None:
        ran.append("sentinel")

    async with app:
        doomed = await victim.submit()
        assert await doomed.status() is taskq.TaskStatus.QUEUED

        # When it is cancelled, then a sentinel is queued behind it
        assert await doomed.cancel() is True
        assert await doomed.status() is taskq.TaskStatus.CANCELLED
        with pytest.raises(taskq.TaskCancelled):
            await doomed.result(timeout=1)
        behind = await sentinel.submit()

        # And a worker with one slot starts and gets past both messages
        async with app.worker(concurrency=1):
            await behind.result(timeout=DEADLINE)
        info = await doomed.info()

    # Then only the sentinel ran; the cancelled task never started
    assert ran == ["sentinel"]
    assert info.state is taskq.TaskStatus.CANCELLED
    assert (info.attempts, info.started_at) == (0, None)


async def test_cancel_scheduled_task_never_starts(backend: Backend) -> None:
    # Given a worker (which leads) and a task due in 0.5 s
    app = backend.app()
    ran: list[str] = []

    @app.task(name="victim")
    async def victim() -> None:
        ran.append("victim")

    @app.task(name="sentinel")
    async def sentinel() -> None:
        ran.append("sentinel")

    async with app, app.worker(concurrency=1):
        doomed = await victim.options(countdown=0.5).submit()
        assert await doomed.status() is taskq.TaskStatus.SCHEDULED

        # When it is cancelled before it is due, and a sentinel is scheduled after it
        assert await doomed.cancel() is True
        assert await doomed.status() is taskq.TaskStatus.CANCELLED
        behind = await sentinel.options(countdown=0.6).submit()

        # Then once the sentinel has run, past both due times, the cancelled task never ran
        await behind.result(timeout=DEADLINE)
        info = await doomed.info()
        with pytest.raises(taskq.TaskCancelled):
            await doomed.result(timeout=1)
    assert ran == ["sentinel"]
    assert info.state is taskq.TaskStatus.CANCELLED
    assert (info.attempts, info.started_at) == (0, None)


# -- retries ----------------------------------------------------------------------------------


async def test_exponential_backoff_retries_until_success_with_gaps_that_match(
    backend: Backend,
) -> None:
    # Given a task that fails twice, then succeeds, with exponential backoff 0.2 s, 0.4 s
    app = backend.app()
    calls: list[float] = []

    @app.task(name="flaky", max_retries=2, backoff=taskq.Backoff.exponential(0.2, jitter=False))
    async def flaky() -> str:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise ConnectionError(f"try {len(calls)} failed")
        return "ok"

    # When it runs
    async with app, app.worker():
        handle = await flaky.submit()
        assert await handle.result(timeout=DEADLINE) == "ok"
        info = await handle.info()
        attempts = await handle.attempts()

    # Then it succeeded on its third attempt, and each attempt is recorded
    assert info.state is taskq.TaskStatus.SUCCEEDED
    assert (info.attempts, info.retries, len(calls)) == (3, 2, 3)
    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    assert [a["state"] for a in attempts] == ["retrying", "retrying", "succeeded"]
    assert [(a["error"] or {}).get("type") for a in attempts] == [
        "ConnectionError",
        "ConnectionError",
        None,
    ]
    assert attempts[0]["error"]["message"] == "try 1 failed"
    assert all(a["started_at"] <= a["finished_at"] for a in attempts)
    # And the gaps between attempts follow the policy (0.2 s, then 0.4 s), not much later
    first, second = gaps(attempts)
    assert 0.2 <= first < 2.0, f"first retry {first:.3f} s after the first attempt"
    assert 0.4 <= second < 2.0, f"second retry {second:.3f} s after the second attempt"
    assert calls[1] - calls[0] >= 0.2 and calls[2] - calls[1] >= 0.4

    # And `taskq status` lists the attempts, with their errors
    shown = await asyncio.to_thread(
        CliRunner().invoke,
        cli,
        ["status", handle.id, "--store-url", backend.store_url],
        env={"COLUMNS": "200"},
    )
    assert shown.exit_code == 0, shown.output
    cells = [[cell.strip() for cell in line.split("│")[1:-1]] for line in shown.output.splitlines()]
    rows = [(row[0], row[1], row[-1]) for row in cells if row and row[0].isdigit()]
    assert rows == [
        ("1", "retrying", "ConnectionError: try 1 failed"),
        ("2", "retrying", "ConnectionError: try 2 failed"),
        ("3", "succeeded", ""),
    ], shown.output


async def test_retry_raised_by_the_task_waits_the_delay_it_asked_for(backend: Backend) -> None:
    # Given a task whose backoff is 5 s, but which asks for a retry in 0.3 s once
    app = backend.app()
    calls: list[float] = []

    @app.task(name="later", max_retries=1, backoff=taskq.Backoff.fixed(5))
    async def later() -> int:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise taskq.Retry(delay=0.3)
        return len(calls)

    # When it runs
    async with app, app.worker():
        handle = await later.submit()
        assert await handle.result(timeout=DEADLINE) == 2
        attempts = await handle.attempts()

    # Then the second attempt came 0.3 s after the first, not the backoff's 5 s
    assert [a["state"] for a in attempts] == ["retrying", "succeeded"]
    (gap,) = gaps(attempts)
    assert 0.3 <= gap < 2.0, f"retried {gap:.3f} s after the first attempt"
    assert calls[1] - calls[0] >= 0.3


async def test_error_not_in_retry_for_is_not_retried(backend: Backend) -> None:
    # Given a task that retries only ConnectionError, and raises ValueError
    app = backend.app()
    calls: list[int] = []

    @app.task(
        name="picky",
        max_retries=3,
        retry_for=(ConnectionError,),
        backoff=taskq.Backoff.fixed(0),
    )
    async def picky() -> None:
        calls.append(1)
        raise ValueError("not transient")

    async with app, app.worker():
        handle = await picky.submit()
        # Then it fails on its first attempt, with retries unused
        with pytest.raises(taskq.TaskFailed) as caught:
            await handle.result(timeout=DEADLINE)
        info = await handle.info()
        attempts = await handle.attempts()
    assert (caught.value.error_type, caught.value.error_message) == ("ValueError", "not transient")
    assert (info.attempts, info.retries, len(calls)) == (1, 0, 1)
    assert [a["state"] for a in attempts] == ["failed"]


async def test_exhausted_retries_fail_into_the_dead_letter_queue(backend: Backend) -> None:
    # Given a task that always fails, with two retries
    app = backend.app()

    @app.task(name="doomed", max_retries=2, backoff=taskq.Backoff.fixed(0.1))
    async def doomed() -> None:
        raise ConnectionError("still down")

    async with app, app.worker():
        handle = await doomed.submit()

        # Then after three attempts it fails
        with pytest.raises(taskq.TaskFailed) as caught:
            await handle.result(timeout=DEADLINE)
        info = await handle.info()
        attempts = await handle.attempts()

        # And its message is in default.dlq, listed with the reason and the error
        (letter,) = await letters_of(app.dlq("default"), 1)
    assert caught.value.error_type == "ConnectionError"
    assert [a["state"] for a in attempts] == ["retrying", "retrying", "failed"]
    assert (info.state, info.attempts, info.retries) == (taskq.TaskStatus.FAILED, 3, 2)
    assert info.dead_reason == "failed"
    assert (letter.task_id, letter.task, letter.reason) == (handle.id, "doomed", "failed")
    assert (letter.error_type, letter.error_message) == ("ConnectionError", "still down")
    assert letter.dead_at == info.finished_at


# -- expiry -----------------------------------------------------------------------------------


async def test_task_expiring_before_any_worker_starts_never_runs(backend: Backend) -> None:
    # Given two tasks that expire 0.5 s after submit (in seconds, and as a datetime),
    # submitted while no worker runs
    app = backend.app()
    ran: list[str] = []

    @app.task(name="perishable")
    async def perishable(label: str) -> None:
        ran.append(label)

    async with app:
        in_seconds = await perishable.options(expires=0.5).submit("seconds")
        at_time = datetime.now(UTC) + timedelta(seconds=0.5)
        as_datetime = await perishable.options(expires=at_time).submit("datetime")
        handles = [in_seconds, as_datetime]
        infos = [await handle.info() for handle in handles]
        assert all(info.state is taskq.TaskStatus.QUEUED for info in infos)
        expiry = max(info.expires_at for info in infos if info.expires_at is not None)

        # When a worker starts only once the clock is past their expiry
        await clock_passes(expiry.timestamp() + 0.5)
        async with app.worker():
            # Then each ends `expired`, and result() says so
            for handle in handles:
                with pytest.raises(taskq.TaskExpired):
                    await handle.result(timeout=DEADLINE)
            letters = await letters_of(app.dlq("default"), 2)
        infos = [await handle.info() for handle in handles]

    # And neither ever ran
    assert ran == []
    for info in infos:
        assert info.state is taskq.TaskStatus.EXPIRED
        assert (info.attempts, info.started_at, info.dead_reason) == (0, None, "expired")
    # And their messages were dead-lettered as expired
    assert sorted((letter.task_id or "", letter.reason) for letter in letters) == sorted(
        (handle.id, "expired") for handle in handles
    )


# -- dead letters -----------------------------------------------------------------------------


async def test_dlq_replay_by_id_reruns_a_fixed_task_and_purge_empties_the_queue(
    backend: Backend,
) -> None:
    # Given two tasks that failed because a dependency was down
    app = backend.app()
    dependency_up = False

    @app.task(name="fragile")
    async def fragile(label: str) -> str:
        if not dependency_up:
            raise RuntimeError(f"{label}: dependency down")
        return f"{label} fixed"

    async with app, app.worker():
        fixed = await fragile.submit("first")
        left = await fragile.submit("second")
        for handle in (fixed, left):
            with pytest.raises(taskq.TaskFailed):
                await handle.result(timeout=DEADLINE)
        dead = app.dlq("default")
        letters = await letters_of(dead, 2)
        assert {(letter.task_id, letter.reason) for letter in letters} == {
            (fixed.id, "failed"),
            (left.id, "failed"),
        }

        # When the cause is fixed and one of them is replayed by id
        dependency_up = True
        assert await dead.replay(ids=[fixed.id]) == 1

        # Then it runs again and succeeds, as attempt 2
        assert await fixed.result(timeout=DEADLINE) == "first fixed"
        info = await fixed.info()
        assert (info.state, info.attempts, info.dead_reason) == (
            taskq.TaskStatus.SUCCEEDED,
            2,
            None,
        )
        assert [(a["attempt"], a["state"]) for a in await fixed.attempts()] == [
            (1, "failed"),
            (2, "succeeded"),
        ]
        # And only the other one is still dead
        (still_dead,) = await dead.list()
        assert still_dead.task_id == left.id

        # When the queue is purged
        # Then it is empty, and the purged task's row keeps its record
        assert await dead.purge() == 1
        assert await dead.list() == []
        kept = await left.info()
    assert (kept.state, kept.dead_reason) == (taskq.TaskStatus.FAILED, "failed")
    assert kept.error is not None and kept.error.message == "second: dependency down"


async def test_replay_never_runs_a_task_that_succeeded(backend: Backend) -> None:
    """Before, `replay()` reset any final row: a 4-byte junk dead letter carrying a succeeded
    task's id was replayed, and the task ran a second time."""
    app = backend.app()
    runs: list[int] = []

    @app.task(name="once")
    async def once() -> str:
        runs.append(1)
        return "done"

    async with app, app.worker():
        # Given a task that succeeded, and a junk dead letter that names it
        handle = await once.submit()
        assert await handle.result(timeout=DEADLINE) == "done"
        await app.declare("default")
        await app.broker.publish_dead("default", b"junk", message_id=handle.id)
        dead = app.dlq("default")
        await letters_of(dead, 1)
        # When every dead letter is replayed
        assert await dead.replay() == 0
        # Then the task did not run again, and the letter stays for a person to read
        info = await handle.info()
        assert (info.state, info.attempts, runs) == (taskq.TaskStatus.SUCCEEDED, 1, [1])
        assert [letter.task_id for letter in await dead.list()] == [handle.id]
