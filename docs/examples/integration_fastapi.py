"""FastAPI (or any ASGI framework): open the app in the lifespan, `await` in the endpoints.

An async framework needs no sync calls: the app opens with the web app and closes with it.
Runs on the embedded default with an in-process worker started in the lifespan too; in
production, run `taskq worker` beside the web processes instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import fastapi
from fastapi.testclient import TestClient

import taskq

app = taskq.App("memory://", "sqlite+aiosqlite:///:memory:")


@app.task(name="examples.score")
async def score(text: str) -> int:
    return sum(word in {"good", "great"} for word in text.split())


@contextlib.asynccontextmanager
async def lifespan(web: fastapi.FastAPI) -> AsyncIterator[None]:
    async with app, app.worker():  # (production: `async with app:` only)
        yield


web = fastapi.FastAPI(lifespan=lifespan)


@web.post("/scores")
async def submit_score(text: str) -> dict[str, str]:
    return {"task": (await score.submit(text)).id}


@web.get("/scores/{task_id}")
async def get_score(task_id: str) -> dict[str, int]:
    return {"score": await (await app.get(task_id)).result(timeout=10)}


if __name__ == "__main__":
    with TestClient(web) as client:
        task = client.post("/scores", params={"text": "good food, great view"}).json()
        print(client.get(f"/scores/{task['task']}").json())
