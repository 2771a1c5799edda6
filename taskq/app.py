"""`taskq.App`: the client's `App`, plus a worker that runs inside this process.

It lives above both the client and the worker, so that the client never imports the worker:
a web process that only submits has no use for it, and the import rule stays a rule.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence

from taskq.client import app as client
from taskq.worker import Worker, WorkerOptions, running_worker


class App(client.App):
    """A taskq application: register tasks on it, `async with app:` to use it; see
    `taskq.client.App` for everything but `worker()`."""

    def worker(
        self,
        options: WorkerOptions | None = None,
        *,
        concurrency: int | None = None,
        queues: Sequence[str] | None = None,
        scheduler: bool | None = None,
        shutdown_timeout: float | None = None,
        tags: Iterable[str] | None = None,
    ) -> contextlib.AbstractAsyncContextManager[Worker]:
        """Run a worker inside this process for the duration of an `async with` block.

        `options` (a `WorkerOptions`) or the keywords, which override it: 10 tasks at once,
        every queue of the app's tasks, and standing for leadership by default. While it
        leads it publishes delayed tasks and periodic ticks (on the embedded default, it
        always leads). Leaving the block waits for running tasks, at most `shutdown_timeout`
        s (None: no limit); tasks still running then are cancelled and handed back. `tags`:
        it also runs the tasks declared with them (docs/flow-control.md).
        """
        chosen = (options or WorkerOptions()).replace(
            concurrency=concurrency,
            queues=None if queues is None else tuple(queues),
            scheduler=scheduler,
            shutdown_timeout=shutdown_timeout,
            tags=tags,  # (WorkerOptions makes it a frozenset, and refuses a string)
        )
        return running_worker(self, chosen)

    @contextlib.contextmanager
    def worker_sync(
        self, options: WorkerOptions | None = None, *, concurrency: int | None = None
    ) -> Iterator[Worker]:
        """`worker()` for sync code, on the app's background loop (`taskq.client.sync`), for
        the duration of a `with` block: scripts and tests of Django or Flask views on the
        embedded default. In production, run `taskq worker` instead."""
        running = self.worker(options, concurrency=concurrency)
        worker = self.runtime.sync.call(running.__aenter__)
        try:
            yield worker
        finally:
            self.runtime.sync.call(lambda: running.__aexit__(None, None, None))
