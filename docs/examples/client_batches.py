"""Many tasks at once: `submit_many`, `app.gather`, `app.as_completed`, `app.cancel_many`,
and finding tasks again with `app.list_tasks`.

- `task.submit_many(items)` takes one item per task: a tuple of positional arguments or a
  dict of keyword arguments. Every item is checked first; a bad one raises an error that
  names its index, and then nothing at all is stored or sent.
- It returns a `taskq.Batch`: a sequence of handles, in item order, whose `id` is recorded
  on every task of the batch (`app.list_tasks(batch=...)`, `taskq tasks --batch ...`).
- `app.gather(handles)` returns the results in order; `app.as_completed(handles)` yields
  each handle as its task finishes. `app.cancel_many(ids)` cancels many in one statement.
Runs on the embedded default (in-process broker, in-memory SQLite): no server needed.
"""

from __future__ import annotations

import asyncio

import taskq

app = taskq.App("memory://", "sqlite+aiosqlite:///:memory:")


@app.task(name="examples.make_thumbnail")
async def make_thumbnail(path: str, width: int = 200) -> str:
    await asyncio.sleep(0.3 if path.endswith(".tiff") else 0.05)
    if path.endswith(".gif"):
        raise ValueError(f"{path}: animated images are not supported")
    return f"{path} at {width}px"


async def main() -> None:
    async with app, app.worker(concurrency=4):
        # A bad item refuses the whole batch: nothing is stored or published.
        try:
            await make_thumbnail.submit_many([("a.png",), ("b.png", 640, "large")])
        except taskq.InvalidArguments as exc:
            print(f"refused: {exc}")
        print(f"tasks stored so far: {len(await app.list_tasks())}")

        items: list[tuple[str, int] | dict[str, str | int]] = [
            ("cat.png", 640),
            {"path": "dog.png"},
            ("scan.tiff", 1200),
            {"path": "party.gif", "width": 320},
            ("logo.png", 64),
        ]
        batch = await make_thumbnail.submit_many(items)
        print(f"batch {batch.id}: {len(batch)} tasks")

        async for handle in app.as_completed(batch, timeout=10):
            print(f"  finished: item {batch.index(handle)} ({await handle.status()})")

        results = await app.gather(batch, timeout=10, return_exceptions=True)
        for item, result in zip(items, results, strict=True):
            if isinstance(result, taskq.TaskFailed):
                result = f"TaskFailed: {result.error_message}"
            print(f"  {item} -> {result}")
        try:
            await app.gather(batch)  # without return_exceptions, the failure is raised
        except taskq.TaskFailed as exc:
            print(f"gather raised TaskFailed ({exc.error_type})")

        # A delayed batch, cancelled before it runs: one statement for all of them.
        later = await make_thumbnail.options(countdown=60).submit_many(
            [(f"archive-{n}.png",) for n in range(3)]
        )
        cancelled = await app.cancel_many([handle.id for handle in later] + [batch[0].id])
        print(f"cancel_many: {sorted(cancelled.values())}")  # batch[0] had finished: False

        for record in await app.list_tasks(batch=later.id):
            print(f"  {record.args[0]}: {record.state} (batch {record.batch_id == later.id})")
        failed = await app.list_tasks(state="failed", name=make_thumbnail.name)
        print(f"failed: {[record.kwargs for record in failed]}")


if __name__ == "__main__":
    asyncio.run(main())
