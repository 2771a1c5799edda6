"""Worker lifecycle hooks: `@app.on_worker_start` functions open what the tasks of a worker
process share (on its `WorkerState`), before it takes a task; `@app.on_worker_stop`
functions close them once it has drained, on SIGTERM as on any stop."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from taskq.context import WorkerHook, WorkerState
from taskq.exceptions import TaskqError

logger = logging.getLogger(__name__)


class WorkerStartError(TaskqError):
    """A start hook raised: the worker took no task and stops."""


async def start(hooks: Sequence[WorkerHook], state: WorkerState) -> None:
    """Run the start hooks in order; the first that raises stops the worker."""
    for hook in hooks:
        try:
            await hook(state)
        except Exception as exc:
            logger.exception("worker start hook %s failed", _name(hook))
            raise WorkerStartError(
                f"worker start hook {_name(hook)} failed ({type(exc).__name__}: {exc}); "
                "the worker took no task and stops"
            ) from exc


async def stop(hooks: Sequence[WorkerHook], state: WorkerState) -> None:
    """Run every stop hook, last registered first, even after a failed start (a stop hook
    should tolerate what was never opened); one that raises is logged, the others run."""
    for hook in reversed(hooks):
        try:
            await hook(state)
        except Exception:
            logger.exception("worker stop hook %s failed", _name(hook))


def _name(hook: WorkerHook) -> str:
    return f"{getattr(hook, '__module__', '?')}.{getattr(hook, '__qualname__', repr(hook))}"
