"""Routing by worker tags (docs/flow-control.md): a task declared with tags runs only on a
worker started with every one of them; one that no running worker can take waits, queued."""

from __future__ import annotations

import asyncio

import taskq

app = taskq.App()  # embedded default; with RabbitMQ: `taskq worker proj:app --tags gpu`


@app.task(tags={"gpu"})
async def render(scene: str) -> str:
    return f"{scene} rendered"


@app.task
async def resize(width: int) -> int:
    return width // 2


async def main() -> None:
    async with app, app.worker(tags={"gpu"}) as gpu, app.worker():
        # A gpu task: only the worker tagged gpu takes it, from queue default@gpu.
        frame = await render.submit("intro")
        print(await frame.result(timeout=10))
        info = await frame.info()
        print(f"from {info.queue}, on the gpu worker: {info.worker_id == gpu.id}")
        # An untagged task: either worker. One tagged eu: no worker has eu, so it waits.
        print(await (await resize.submit(640)).result(timeout=10))
        waiting = await resize.options(tags={"eu"}).submit(1920)
        try:
            await waiting.result(timeout=0.5)
        except TimeoutError:
            print(f"no worker tagged eu yet: {await waiting.status()}")
        # A worker tagged eu starts: the task that waited runs at once.
        async with app.worker(tags={"eu"}):
            print(await waiting.result(timeout=10))


if __name__ == "__main__":
    asyncio.run(main())
