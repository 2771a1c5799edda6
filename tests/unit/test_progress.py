"""`taskq.context().progress(...)`: what it accepts, what it refuses, and where it works.

The reporter (the worker's publish-and-store) is replaced by a recorder: these are the
checks made before anything is sent.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

import taskq
from taskq.context import TaskContext

Report = tuple[float, str | None, dict[str, Any]]


def recording_context(
    loop: asyncio.AbstractEventLoop | None = None,
) -> tuple[TaskContext, list[Report]]:
    reports: list[Report] = []

    async def reporter(fraction: float, message: str | None, data: dict[str, Any]) -> None:
        reports.append((fraction, message, data))

    return TaskContext("t1", "job", "default", 1, reporter, loop), reports


@pytest.mark.parametrize("fraction", [0, 0.0, 0.5, 1, 1.0])
async def test_a_fraction_from_zero_to_one_is_reported_as_a_float(fraction: float) -> None:
    ctx, reports = recording_context()
    await ctx.progress(fraction, "msg", rows=3)
    assert reports == [(float(fraction), "msg", {"rows": 3})]
    assert type(reports[0][0]) is float


@pytest.mark.parametrize(
    ("fraction", "error"),
    [
        (1.5, ValueError),
        (-0.1, ValueError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        ("x", TypeError),
        (None, TypeError),
        (True, TypeError),  # a bool is an int, but not a fraction
    ],
)
async def test_a_bad_fraction_is_refused_before_anything_is_sent(
    fraction: Any, error: type[Exception]
) -> None:
    ctx, reports = recording_context()
    with pytest.raises(error, match="progress fraction"):
        await ctx.progress(fraction)
    assert reports == []


async def test_a_message_that_is_not_a_string_is_refused() -> None:
    ctx, reports = recording_context()
    with pytest.raises(TypeError, match="progress message must be a str"):
        await ctx.progress(0.5, 42)  # type: ignore[arg-type]
    assert reports == []


async def test_a_context_without_a_worker_cannot_report() -> None:
    # (a TaskContext made by hand, e.g. in a user's own test)
    ctx = TaskContext("t1", "job", "default", 1)
    with pytest.raises(taskq.TaskqError, match="worker"):
        await ctx.progress(0.5)
    with pytest.raises(taskq.TaskqError, match="worker"):
        ctx.progress_threadsafe(0.5)


def test_context_outside_a_task_raises_taskq_error() -> None:
    with pytest.raises(taskq.TaskqError, match="outside a running task"):
        taskq.context()


async def test_progress_threadsafe_reports_from_another_thread_and_waits_until_sent() -> None:
    ctx, reports = recording_context(asyncio.get_running_loop())
    await asyncio.to_thread(ctx.progress_threadsafe, 0.5, "half", rows=2)
    # Returned only once the loop ran the report
    assert reports == [(0.5, "half", {"rows": 2})]


async def test_progress_threadsafe_raises_the_refusal_in_the_calling_thread() -> None:
    ctx, reports = recording_context(asyncio.get_running_loop())
    with pytest.raises(ValueError, match=r"between 0\.0 and 1\.0"):
        await asyncio.to_thread(ctx.progress_threadsafe, 2.0)
    assert reports == []
