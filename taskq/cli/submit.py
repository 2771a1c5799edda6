"""Operators' commands that change tasks: `taskq submit APP TASK`, `taskq cancel ID`."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Annotated, Any

import typer

from taskq.app import App
from taskq.cli.common import AppSpec, fail, full_task_id, load_app, out, run
from taskq.status import TaskStatus


def submit(
    app: AppSpec,
    task: Annotated[str, typer.Argument(help="The task's registered name.")],
    args: Annotated[str, typer.Option("--args", help="Positional arguments, a JSON list.")] = "[]",
    kwargs: Annotated[
        str, typer.Option("--kwargs", help="Keyword arguments, a JSON object.")
    ] = "{}",
    countdown: Annotated[
        float | None, typer.Option(help="Run in this many seconds.", min=0)
    ] = None,
    eta: Annotated[
        datetime | None,
        typer.Option(
            help="Run at this time (ISO 8601 with a UTC offset).",
            formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z"],
        ),
    ] = None,
    priority: Annotated[int | None, typer.Option(min=0)] = None,
    queue: Annotated[str | None, typer.Option()] = None,
    idempotency_key: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Submit TASK of APP and print its id."""
    loaded = load_app(app)
    if task not in loaded.tasks:
        known = ", ".join(sorted(loaded.tasks)) or "none"
        fail(f"APP has no task named {task!r}; its tasks: {known}")
    positional = _json(args, list, "--args", "a JSON list, e.g. '[1, \"a\"]'")
    named = _json(kwargs, dict, "--kwargs", "a JSON object, e.g. '{\"n\": 1}'")
    options: dict[str, Any] = {
        "countdown": countdown,
        "eta": eta,
        "priority": priority,
        "queue": queue,
        "idempotency_key": idempotency_key,
    }
    task_id = run(_submit(loaded, task, positional, named, options))
    out().print(task_id)


def _json(text: str, kind: type, option: str, example: str) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{option} is not valid JSON ({exc}); give {example}")
    if not isinstance(value, kind):
        fail(f"{option} must be {example}")
    return value


async def _submit(
    app: App, name: str, args: list[Any], kwargs: dict[str, Any], options: dict[str, Any]
) -> str:
    async with app:
        chosen = {key: value for key, value in options.items() if value is not None}
        handle = await app.tasks[name].options(**chosen).submit(*args, **kwargs)
        return handle.id


def cancel(
    task_id: Annotated[str, typer.Argument(help="The task's id, or its first characters.")],
    wait: Annotated[float, typer.Option(help="Seconds to wait for a running task to stop.")] = 5.0,
) -> None:
    """Cancel a task (URLs from TASKQ_BROKER_URL and TASKQ_STORE_URL)."""
    message = run(_cancel(App(), task_id, wait))
    out().print(message)


async def _cancel(app: App, task_id: str, wait: float) -> str:
    async with app:
        task_id = await full_task_id(app.store, task_id)
        handle = await app.get(task_id)
        if not await handle.cancel():
            return f"task {task_id} had already finished ({await handle.status()}); nothing changed"
        deadline = asyncio.get_running_loop().time() + wait
        while (state := await handle.status()) is TaskStatus.RUNNING:
            if asyncio.get_running_loop().time() >= deadline:
                return f"task {task_id}: cancellation requested; it is still running"
            await asyncio.sleep(0.1)
        return f"task {task_id} is {state}"
