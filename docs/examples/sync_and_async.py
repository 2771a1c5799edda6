"""An `async def` task and a plain `def` task side by side, and what `taskq.context()` tells them.

`async def` tasks run on the worker's event loop. Plain `def` tasks run in the worker's thread
pool (as many threads as the worker's concurrency), so blocking code does not stall the loop.
Both can call `taskq.context()` for the id, name, queue and attempt of the task being run.
Runs on the embedded default (in-process broker, in-memory SQLite): no server needed.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time

import taskq

app = taskq.App("memory://", "sqlite+aiosqlite:///:memory:")


@app.task(name="examples.fetch_title")
async def fetch_title(url: str) -> str:
    ctx = taskq.context()
    await asyncio.sleep(0.1)  # stands in for an HTTP request: other tasks run meanwhile
    return f"{ctx.name} (attempt {ctx.attempt}) fetched the title of {url}"


@app.task(name="examples.digest", queue="cpu")
def digest(data: bytes, rounds: int = 1000) -> dict[str, str]:
    ctx = taskq.context()  # works in threads too: the worker copies the context over
    value = data
    for _ in range(rounds):
        value = hashlib.sha256(value).digest()
    time.sleep(0.05)  # blocking is fine here: this runs in a worker thread
    return {
        "task_id": ctx.id,
        "queue": ctx.queue,
        "thread": threading.current_thread().name,
        "digest": value.hex()[:16],
    }


async def main() -> None:
    # With no queues= argument, the worker consumes every queue the app's tasks use:
    # here "cpu" and "default".
    async with app, app.worker(concurrency=4) as worker:
        print(f"worker consumes {worker.queues} with concurrency {worker.concurrency}")
        title = await fetch_title.submit("https://example.com")
        digests = [await digest.submit(f"block {n}".encode()) for n in range(3)]

        print(await title.result(timeout=10))
        for handle in digests:
            result = await handle.result(timeout=10)
            assert result["task_id"] == handle.id
            assert result["thread"] != threading.current_thread().name
            print(f"{result['queue']}: {result['digest']} computed in thread {result['thread']}")

    try:
        taskq.context()
    except taskq.TaskqError as exc:
        print(f"outside a task: {exc}")


if __name__ == "__main__":
    asyncio.run(main())
