"""Middleware that taskq cannot call is refused with an error that says why, early."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import taskq
from taskq import middleware
from taskq.config import Settings
from taskq.middleware import RunNext, SubmitNext


class NotAsync(taskq.Middleware):
    def submit(self, submission: taskq.Submission, call_next: SubmitNext) -> str:  # type: ignore[override]
        return "nope"


class BadHeaders(taskq.Middleware):
    async def submit(self, submission: taskq.Submission, call_next: SubmitNext) -> str:
        submission.headers["count"] = 3  # type: ignore[assignment]
        return await call_next(submission)


class RunOnly(taskq.Middleware):
    async def run(self, ctx: taskq.TaskContext, call_next: RunNext) -> Any:
        return await call_next(ctx)


def embedded(tmp_path: Path, **kwargs: Any) -> taskq.App:
    return taskq.App("memory://", f"sqlite+aiosqlite:///{tmp_path / 'q.sqlite3'}", **kwargs)


def test_something_that_is_not_a_middleware_is_refused(tmp_path: Path) -> None:
    with pytest.raises(taskq.ConfigurationError, match=r"instance of taskq\.Middleware"):
        embedded(tmp_path, middleware=[object()])
    with pytest.raises(taskq.ConfigurationError, match="not the class"):
        embedded(tmp_path).add_middleware(RunOnly)  # type: ignore[arg-type]


def test_a_method_that_is_not_a_coroutine_function_is_refused(tmp_path: Path) -> None:
    with pytest.raises(taskq.ConfigurationError, match=r"NotAsync.submit must be an `async def`"):
        embedded(tmp_path, middleware=[NotAsync()])


async def test_headers_that_are_not_str_to_str_are_refused_and_nothing_is_stored(
    tmp_path: Path,
) -> None:
    app = embedded(tmp_path, middleware=[BadHeaders()])

    @app.task(name="h.bad")
    async def bad() -> None:
        return None

    async with app:
        with pytest.raises(taskq.ConfigurationError, match="headers must map str to str"):
            await bad.submit()
        assert await app.list_tasks() == []


async def test_middleware_is_added_only_before_the_app_opens(tmp_path: Path) -> None:
    app = embedded(tmp_path)
    async with app:
        with pytest.raises(taskq.ConfigurationError, match="before the app opens"):
            app.add_middleware(RunOnly())


async def test_an_unknown_plugin_name_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(taskq.ConfigurationError, match="no middleware named 'nosuch'"):
        middleware.from_entry_points(["nosuch"])
    monkeypatch.setenv("TASKQ_MIDDLEWARE", "nosuch")
    app = embedded(tmp_path)
    assert app.settings.middleware == "nosuch"
    with pytest.raises(taskq.ConfigurationError, match=r"taskq\.middleware"):
        await app.open()
    assert not app.runtime.is_open


def test_taskq_middleware_is_read_from_the_environment() -> None:
    loaded = Settings.load({"TASKQ_MIDDLEWARE": "tenant, audit"})
    assert loaded.middleware == "tenant, audit"


async def test_only_middlewares_that_override_a_side_join_its_chain() -> None:
    async def last(ctx: Any) -> str:
        return "value"

    assert middleware.compose_run([taskq.Middleware()], last) is None
    chain = middleware.compose_run([taskq.Middleware(), RunOnly()], last)
    assert chain is not None
    assert await chain(None) == "value"  # type: ignore[arg-type]


def test_a_task_name_a_worker_would_refuse_is_refused_at_registration(tmp_path: Path) -> None:
    app = embedded(tmp_path)
    for bad in ("", "evil\nCRITICAL forged", "x" * 256):
        with pytest.raises(taskq.ConfigurationError, match="printable characters"):
            app.task(name=bad)(lambda: None)
