"""Task events: the wire event → `TaskEvent`, the store's row → `TaskEvent`, and which
events `handle.events()` passes on (no repeats, nothing older than what it yielded)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import taskq
from taskq import protocol
from taskq.client.handle import SeenEvents

Status = taskq.TaskStatus
CREATED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def record(**changes: Any) -> taskq.TaskRecord:
    base = taskq.TaskRecord(
        id="t1",
        name="billing.charge",
        queue="default",
        priority=0,
        state=Status.QUEUED,
        args=[],
        kwargs={},
        result=None,
        error=None,
        attempts=0,
        timeout=None,
        worker_id=None,
        created_at=CREATED,
        started_at=None,
        finished_at=None,
    )
    return dataclasses.replace(base, **changes)


def event(**changes: Any) -> taskq.TaskEvent:
    base = taskq.TaskEvent(
        kind="state",
        task_id="t1",
        state=Status.RUNNING,
        name="n",
        queue="q",
        attempt=1,
        at=CREATED,
    )
    return dataclasses.replace(base, **changes)


# -- from the wire ----------------------------------------------------------------------------


def test_a_state_event_from_the_wire() -> None:
    wire = protocol.Event(
        task_id="t1", state="succeeded", name="billing.charge", queue="q", attempt=2, at=1.5
    )
    got = taskq.TaskEvent.from_wire(protocol.decode_event(protocol.encode_event(wire)))
    assert got == taskq.TaskEvent(
        kind="state",
        task_id="t1",
        state=Status.SUCCEEDED,
        name="billing.charge",
        queue="q",
        attempt=2,
        at=datetime.fromtimestamp(1.5, UTC),
    )
    assert got.is_final
    assert got.data == {} and got.seq == 0


def test_a_progress_event_from_the_wire_keeps_its_report() -> None:
    wire = protocol.Event(
        task_id="t1",
        state="running",
        attempt=1,
        at=2.0,
        progress=0.25,
        message="a quarter",
        data={"rows": 25, "blob": b"\x00"},
        seq=4,
    )
    got = taskq.TaskEvent.from_wire(protocol.decode_event(protocol.encode_event(wire)))
    assert got is not None
    assert (got.kind, got.state, got.progress, got.message, got.seq) == (
        "progress",
        Status.RUNNING,
        0.25,
        "a quarter",
        4,
    )
    assert dict(got.data) == {"rows": 25, "blob": b"\x00"}
    # A progress update is never final, even of a task that is about to be
    assert not got.is_final


def test_a_bare_hint_is_no_public_event() -> None:
    # A worker acking a duplicate delivery sends no state: watchers just re-read the store.
    assert taskq.TaskEvent.from_wire(protocol.Event(task_id="t1", state="")) is None


def test_an_event_without_a_time_is_stamped_now() -> None:
    before = datetime.now(UTC)
    got = taskq.TaskEvent.from_wire(protocol.Event(task_id="t1", state="queued"))
    assert got is not None
    assert before - timedelta(seconds=1) <= got.at <= datetime.now(UTC)


@pytest.mark.parametrize("state", list(Status))
def test_only_final_states_are_final(state: taskq.TaskStatus) -> None:
    assert event(state=state).is_final is state.is_final


# -- from the store ---------------------------------------------------------------------------


def test_state_of_a_row_takes_its_latest_time() -> None:
    started = CREATED + timedelta(seconds=1)
    finished = CREATED + timedelta(seconds=2)
    assert taskq.TaskEvent.state_of(record()).at == CREATED
    assert taskq.TaskEvent.state_of(record(started_at=started)).at == started
    done = record(state=Status.FAILED, attempts=3, started_at=started, finished_at=finished)
    got = taskq.TaskEvent.state_of(done)
    assert (got.kind, got.state, got.attempt, got.at) == ("state", Status.FAILED, 3, finished)
    assert (got.task_id, got.name, got.queue) == ("t1", "billing.charge", "default")


def test_progress_of_a_running_row_is_its_latest_report() -> None:
    stored = {"fraction": 0.5, "message": "half", "data": {"rows": 5}, "n": 7, "at": 3.0}
    got = taskq.TaskEvent.progress_of(record(state=Status.RUNNING, attempts=2, progress=stored))
    assert got is not None
    assert (got.kind, got.progress, got.message, dict(got.data), got.seq, got.attempt) == (
        "progress",
        0.5,
        "half",
        {"rows": 5},
        7,
        2,
    )
    assert got.at == datetime.fromtimestamp(3.0, UTC)


@pytest.mark.parametrize(
    "row",
    [
        record(state=Status.RUNNING),  # no report yet
        record(state=Status.SUCCEEDED, progress={"fraction": 1.0, "n": 1, "at": 1.0}),
        record(state=Status.QUEUED, progress={"fraction": 0.5, "n": 1, "at": 1.0}),
    ],
    ids=["running without a report", "finished", "waiting again (a retry)"],
)
def test_no_progress_event_unless_running_with_a_report(row: taskq.TaskRecord) -> None:
    assert taskq.TaskEvent.progress_of(row) is None


# -- what handle.events() passes on -----------------------------------------------------------


def test_seen_drops_a_repeated_state() -> None:
    seen = SeenEvents()
    assert seen.is_new(event(state=Status.QUEUED, attempt=0))
    assert not seen.is_new(event(state=Status.QUEUED, attempt=0))
    assert seen.is_new(event(state=Status.RUNNING))
    assert not seen.is_new(event(state=Status.RUNNING))


def test_seen_passes_progress_only_while_running_and_only_newer() -> None:
    seen = SeenEvents()
    assert not seen.is_new(event(kind="progress", seq=1))  # before `running` was seen
    assert seen.is_new(event(state=Status.RUNNING))
    assert seen.is_new(event(kind="progress", seq=2))
    assert not seen.is_new(event(kind="progress", seq=2))  # the stored copy of a live one
    assert not seen.is_new(event(kind="progress", seq=1))  # arrived late
    assert seen.is_new(event(kind="progress", seq=3))


def test_seen_drops_what_an_earlier_attempt_sent_after_a_later_one_was_seen() -> None:
    seen = SeenEvents()
    assert seen.is_new(event(state=Status.RUNNING, attempt=2))
    assert not seen.is_new(event(state=Status.FAILED, attempt=1))
    assert not seen.is_new(event(kind="progress", attempt=1, seq=9))
    # The next attempt's progress numbers start again at 1
    assert seen.is_new(event(kind="progress", attempt=2, seq=1))
