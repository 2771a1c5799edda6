"""WorkerOptions: one checked value for `taskq worker`, `app.worker()` and `Worker`."""

from __future__ import annotations

from typing import Any

import pytest

import taskq


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("concurrency", 0, "concurrency must be at least 1"),
        ("concurrency", True, "concurrency must be an int"),
        ("queues", "default", "not one string"),
        ("queues", (), "at least one queue"),
        ("queues", ("bad name!",), "queue"),
        ("shutdown_timeout", -1.0, "shutdown_timeout must be at least 0"),
        ("max_tasks", 0, "max_tasks must be at least 1"),
        ("max_memory", 0, "max_memory must be at least 1"),
        ("blocked_threshold", 0.0, "blocked_threshold must be at least"),
        ("health_port", 70000, "health_port must be 0 to 65535"),
    ],
)
def test_bad_values_are_refused_when_made(field: str, value: Any, message: str) -> None:
    with pytest.raises(taskq.ConfigurationError, match=message):
        taskq.WorkerOptions(**{field: value})


def test_queues_given_as_a_list_become_a_tuple_and_the_value_is_frozen() -> None:
    options = taskq.WorkerOptions(queues=["default", "emails"])  # type: ignore[arg-type]
    assert options.queues == ("default", "emails")
    with pytest.raises(AttributeError):
        options.concurrency = 3  # type: ignore[misc]


def test_replace_keeps_what_is_not_given() -> None:
    base = taskq.WorkerOptions(concurrency=4, scheduler=False, max_tasks=100)
    changed = base.replace(concurrency=8, queues=None, shutdown_timeout=None)
    assert changed == taskq.WorkerOptions(concurrency=8, scheduler=False, max_tasks=100)
    with pytest.raises(taskq.ConfigurationError):
        base.replace(concurrency=0)


async def test_app_worker_keywords_override_the_options(tmp_path: Any) -> None:
    app = taskq.App("memory://", f"sqlite+aiosqlite:///{tmp_path / 'q.sqlite3'}")

    @app.task(name="wo.noop", queue="wanted")
    async def noop() -> None:
        return None

    shared = taskq.WorkerOptions(concurrency=2, scheduler=False)
    async with app, app.worker(shared, concurrency=3) as worker:
        assert worker.concurrency == 3
        assert worker.queues == ["wanted"]
        assert worker.options.scheduler is False
    with pytest.raises(taskq.ConfigurationError, match="concurrency"):
        app.worker(concurrency=0)
