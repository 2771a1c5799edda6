"""The middleware seam on both sides, in one process, on both backends: the order of several
middlewares, headers carried to the task and its row, a refused submit that leaves nothing
behind, and a failing run middleware whose attempt is retried as a task's own error is."""

from __future__ import annotations

from typing import Any

import pytest

import taskq
from taskq.middleware import RunNext, SubmitNext
from tests.conftest import Backend


class Recording(taskq.Middleware):
    """Appends `(name, side, "in" | "out")` to a shared list around each step."""

    def __init__(self, name: str, seen: list[tuple[str, str, str]]) -> None:
        self.name, self.seen = name, seen

    async def submit(self, submission: taskq.Submission, call_next: SubmitNext) -> str:
        self.seen.append((self.name, "submit", "in"))
        submission.headers[f"through-{self.name}"] = "yes"
        task_id = await call_next(submission)
        self.seen.append((self.name, "submit", "out"))
        return task_id

    async def run(self, ctx: taskq.TaskContext, call_next: RunNext) -> Any:
        self.seen.append((self.name, "run", "in"))
        value = await call_next(ctx)
        self.seen.append((self.name, "run", "out"))
        return value


class Tenant(taskq.Middleware):
    async def submit(self, submission: taskq.Submission, call_next: SubmitNext) -> str:
        submission.headers["tenant"] = "acme"
        return await call_next(submission)


class Refuse(taskq.Middleware):
    async def submit(self, submission: taskq.Submission, call_next: SubmitNext) -> str:
        raise PermissionError(f"{submission.name} is not allowed here")


class FailFirstAttempt(taskq.Middleware):
    async def run(self, ctx: taskq.TaskContext, call_next: RunNext) -> Any:
        if ctx.attempt == 1:
            raise ConnectionError("the rate limiter's store was away")
        return await call_next(ctx)


async def test_middlewares_wrap_outermost_first_on_both_sides(backend: Backend) -> None:
    # Given three middlewares registered in the order a, b (constructor) and c (added)
    seen: list[tuple[str, str, str]] = []
    app = backend.app(middleware=[Recording("a", seen), Recording("b", seen)])
    app.add_middleware(Recording("c", seen))

    @app.task(name="mw.headers")
    async def headers() -> dict[str, str]:
        seen.append(("task", "run", "body"))
        return dict(taskq.context().headers)

    # When a task is submitted and run
    async with app, app.worker(concurrency=1):
        handle = await headers.submit()
        result = await handle.result(timeout=30)

    # Then a is outermost and c innermost, submitting and running alike (the two sides may
    # interleave: the worker can start the task before the submit chain has unwound)
    assert [step for step in seen if step[1] == "submit"] == [
        ("a", "submit", "in"),
        ("b", "submit", "in"),
        ("c", "submit", "in"),
        ("c", "submit", "out"),
        ("b", "submit", "out"),
        ("a", "submit", "out"),
    ]
    assert [step for step in seen if step[1] == "run"] == [
        ("a", "run", "in"),
        ("b", "run", "in"),
        ("c", "run", "in"),
        ("task", "run", "body"),
        ("c", "run", "out"),
        ("b", "run", "out"),
        ("a", "run", "out"),
    ]
    # and every middleware's header reached the task
    assert {key: result[key] for key in ("through-a", "through-b", "through-c")} == {
        "through-a": "yes",
        "through-b": "yes",
        "through-c": "yes",
    }


async def test_headers_are_stored_on_the_row_and_reach_a_sync_task(backend: Backend) -> None:
    app = backend.app(middleware=[Tenant()])

    @app.task(name="mw.sync_headers")
    def tenant_of() -> str | None:  # a plain def: it runs in a pool thread
        return taskq.context().headers.get("tenant")

    async with app, app.worker(concurrency=1):
        handle = await tenant_of.submit()
        assert await handle.result(timeout=30) == "acme"
        record = await handle.info()
    assert record.headers is not None and record.headers["tenant"] == "acme"


async def test_a_submit_middleware_that_raises_stores_and_publishes_nothing(
    backend: Backend,
) -> None:
    app = backend.app(middleware=[Refuse()])

    @app.task(name="mw.refused")
    async def refused() -> None:
        return None

    async with app:
        with pytest.raises(PermissionError, match=r"mw\.refused is not allowed"):
            await refused.submit()
        with pytest.raises(PermissionError):
            await refused.submit_many([(), ()])
        assert await app.list_tasks() == []
        await app.declare("default")
        stats = await app.broker.stats("default")
        assert stats is not None and stats.ready == 0


async def test_a_run_middleware_that_raises_fails_the_attempt_and_retries_apply(
    backend: Backend,
) -> None:
    app = backend.app(middleware=[FailFirstAttempt()])
    calls: list[int] = []

    @app.task(name="mw.retried", max_retries=1, backoff=taskq.Backoff.fixed(0.01))
    async def retried() -> str:
        calls.append(taskq.context().attempt)
        return "done"

    async with app, app.worker(concurrency=1):
        handle = await retried.submit()
        assert await handle.result(timeout=30) == "done"
        attempts = await handle.attempts()

    assert calls == [2]  # the first attempt never reached the task's code
    assert [a["state"] for a in attempts] == ["retrying", "succeeded"]
    assert attempts[0]["error"]["type"] == "ConnectionError"
    assert "rate limiter" in attempts[0]["error"]["message"]


async def test_a_run_middleware_that_raises_without_retries_fails_the_task(
    backend: Backend,
) -> None:
    app = backend.app(middleware=[FailFirstAttempt()])

    @app.task(name="mw.failed")
    async def failed() -> None:
        return None

    async with app, app.worker(concurrency=1):
        handle = await failed.submit()
        with pytest.raises(taskq.TaskFailed, match="rate limiter"):
            await handle.result(timeout=30)
        assert await handle.status() is taskq.TaskStatus.FAILED
