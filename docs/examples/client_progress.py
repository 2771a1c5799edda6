"""Progress reports from inside a task, watched live with `handle.events()`.

- An `async def` task calls `await taskq.context().progress(fraction, message, **data)`;
  a plain `def` task, which runs in a thread, calls `progress_threadsafe(...)` instead.
- `handle.events()` yields a `taskq.TaskEvent` for each state change and each progress
  report as it happens, and ends after the final state.
- Every report is sent to watchers at once, but the task's row keeps only the latest one,
  written at most every half second: `handle.info().progress` may lag behind the events.
- A watcher that starts late begins with what the store has: the state, and the latest
  progress written to the row (which may be a few reports behind). Then come the live
  events; the reports sent in between are not replayed.
Runs on the embedded default (in-process broker, in-memory SQLite): no server needed.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import taskq

app = taskq.App("memory://", "sqlite+aiosqlite:///:memory:")


@app.task(name="examples.import_rows")
async def import_rows(path: str, rows: int) -> int:
    ctx = taskq.context()
    for done in range(rows // 8, rows + 1, rows // 8):
        await asyncio.sleep(0.12)  # stands in for importing a chunk of rows
        await ctx.progress(done / rows, f"{done}/{rows} rows", path=path, rows_done=done)
    return rows


@app.task(name="examples.resize_images")
def resize_images(count: int) -> str:
    ctx = taskq.context()
    for n in range(1, count + 1):
        time.sleep(0.15)  # blocking work: this runs in a worker thread
        ctx.progress_threadsafe(n / count, f"image {n} of {count}")
    return f"{count} images resized"


def describe(event: taskq.TaskEvent) -> str:
    if event.kind == "progress":
        assert event.progress is not None
        return f"progress {event.progress:4.0%} {event.message} (report {event.seq})"
    if event.state is taskq.TaskStatus.QUEUED:
        return "queued"
    return f"{event.state} (attempt {event.attempt})"


async def main() -> None:
    async with app, app.worker():
        handle = await import_rows.submit("customers.csv", 800)
        start = None
        async for event in handle.events():  # from the current state to the final one
            start = start or event.at
            print(f"+{(event.at - start).total_seconds():.2f} s", describe(event))
            if event.seq == 7:
                stored = (await handle.info()).progress  # the row: coalesced, may lag
                if stored is not None:
                    print(f"  the row meanwhile: {stored['fraction']:.0%} (report {stored['n']})")
        print("result:", await handle.result(timeout=10))

        resize = await resize_images.submit(6)
        await asyncio.sleep(0.7)  # subscribe late: reports 1 to 4 were sent already
        print("watching resize_images from the middle:")
        subscribed = datetime.now(UTC)
        async for event in resize.events():
            origin = " (from the store)" if event.at < subscribed else ""
            print(f"  {describe(event)}{origin}")
        print("result:", await resize.result(timeout=10))


if __name__ == "__main__":
    asyncio.run(main())
