"""`taskq tasks` and `taskq events` without a store: `--since` parsing, the JSON shapes,
and the `Batch` that `submit_many` returns."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

import taskq
from taskq.cli.tasks import parse_since
from taskq.client.as_json import event_json, task_json
from taskq.client.handle import TaskHandle

CREATED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "back"),
    [
        ("30s", timedelta(seconds=30)),
        ("10m", timedelta(minutes=10)),
        ("2h", timedelta(hours=2)),
        ("7d", timedelta(days=7)),
        ("1.5h", timedelta(minutes=90)),
        (" 10m ", timedelta(minutes=10)),
        ("0s", timedelta(0)),
    ],
)
def test_since_as_a_duration_is_that_long_ago(text: str, back: timedelta) -> None:
    before = datetime.now(UTC)
    since = parse_since(text)
    after = datetime.now(UTC)
    assert before - back <= since <= after - back


def test_since_as_an_iso_time_without_an_offset_is_utc() -> None:
    assert parse_since("2026-01-02T03:04:05") == CREATED
    assert parse_since("2026-01-02T03:04:05").tzinfo is not None


def test_since_as_an_iso_time_with_an_offset_is_that_instant_in_utc() -> None:
    since = parse_since("2026-01-02T08:04:05+05:00")
    assert since == CREATED
    # In UTC: SQLite compares stored times as UTC text
    assert since.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", ["yesterday", "10", "10 m", "-5m", "10w", ""])
def test_since_neither_a_duration_nor_a_time_exits_with_code_1(
    text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        parse_since(text)
    assert caught.value.code == 1
    assert "is not a duration" in capsys.readouterr().err


def test_since_too_far_back_exits_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    # (it ended in an OverflowError traceback before)
    with pytest.raises(SystemExit) as caught:
        parse_since("99999999999d")
    assert caught.value.code == 1
    assert "too long a duration" in capsys.readouterr().err


def test_task_json_is_json_with_every_field() -> None:
    record = taskq.TaskRecord(
        id="t1",
        name="billing.charge",
        queue="default",
        priority=3,
        state=taskq.TaskStatus.RUNNING,
        args=[1],
        kwargs={},
        result=None,
        error=None,
        attempts=1,
        timeout=None,
        worker_id="w1",
        created_at=CREATED,
        started_at=CREATED + timedelta(seconds=1),
        finished_at=None,
        progress={"fraction": 0.5, "message": None, "data": {}, "n": 1, "at": 1.0},
        batch_id="b1",
    )
    line = json.loads(json.dumps(task_json(record)))
    assert line == {
        "id": "t1",
        "name": "billing.charge",
        "queue": "default",
        "priority": 3,
        "state": "running",
        "attempts": 1,
        "batch_id": "b1",
        "workflow_id": None,
        "worker_id": "w1",
        "created_at": "2026-01-02T03:04:05+00:00",
        "started_at": "2026-01-02T03:04:06+00:00",
        "finished_at": None,
        "progress": {"fraction": 0.5, "message": None, "data": {}, "n": 1, "at": 1.0},
        "error": None,
    }


def test_event_json_turns_bytes_into_hex() -> None:
    event = taskq.TaskEvent(
        kind="progress",
        task_id="t1",
        state=taskq.TaskStatus.RUNNING,
        name="n",
        queue="q",
        attempt=1,
        at=CREATED.astimezone(timezone(timedelta(hours=1))),
        progress=0.5,
        message="half",
        data={"blob": b"\x00\xff", "nested": [b"\x01", {"x": b"\x02"}]},
        seq=1,
    )
    line = json.loads(json.dumps(event_json(event)))
    assert line == {
        "kind": "progress",
        "task_id": "t1",
        "state": "running",
        "name": "n",
        "queue": "q",
        "attempt": 1,
        "at": "2026-01-02T04:04:05+01:00",
        "progress": 0.5,
        "message": "half",
        "data": {"blob": "00ff", "nested": ["01", {"x": "02"}]},
    }


def test_a_batch_is_a_sequence_of_handles_with_an_id() -> None:
    app = taskq.App("memory://", "sqlite+aiosqlite:///:memory:")
    handles: list[TaskHandle[int]] = [TaskHandle(app.runtime, f"t{i}") for i in range(3)]
    batch = taskq.Batch("b1", handles)
    assert batch.id == "b1"
    assert len(batch) == 3
    assert list(batch) == handles
    assert batch[1] is handles[1] and batch[-1] is handles[2]
    assert list(batch[:2]) == handles[:2]
    assert handles[2] in batch
    assert batch.index(handles[1]) == 1
    assert repr(batch) == "<Batch b1 of 3 tasks>"
