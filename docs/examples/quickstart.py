"""The README's quickstart: one task, an in-process worker, the embedded default."""

from __future__ import annotations

import asyncio

import taskq

app = taskq.App()  # embedded default: memory:// broker, SQLite file; see docs/ for production


@app.task
async def add(a: int, b: int) -> int:
    return a + b


async def main() -> None:
    async with app, app.worker(concurrency=4):
        handle = await add.submit(2, 3)
        print(await handle.result(timeout=10))  # 5


if __name__ == "__main__":
    asyncio.run(main())
