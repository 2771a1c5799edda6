"""The dashboard mounted in your own ASGI app (docs/dashboard.md), and its JSON API used the
way a script or another service would: read the tasks, then cancel one with the token.

In production run `taskq dashboard` instead (or serve `site` with uvicorn); here httpx calls
the app in process, so the example needs no server.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
from starlette.applications import Starlette
from starlette.routing import Mount

import taskq
import taskq.dashboard

app = taskq.App()  # embedded default; the dashboard reads the same broker and store


@app.task
async def report(month: str) -> str:
    return f"report for {month}"


site = Starlette(routes=[Mount("/ops/taskq", taskq.dashboard.create_app(app, token="s3cret"))])


async def main() -> None:
    async with app, app.worker():
        await (await report.submit("2026-11")).result(timeout=10)
        later = await report.options(eta=datetime.now(UTC) + timedelta(hours=1)).submit("2026-12")

        transport = httpx.ASGITransport(app=site)
        async with httpx.AsyncClient(transport=transport, base_url="http://ops") as http:
            listed = (await http.get("/ops/taskq/api/tasks", params={"name": report.name})).json()
            for task in listed["tasks"]:
                print(task["name"], task["state"])

            refused = await http.post(f"/ops/taskq/api/tasks/{later.id}/cancel")
            print("without the token:", refused.status_code, refused.json()["error"])
            token = {"Authorization": "Bearer s3cret"}
            done = await http.post(f"/ops/taskq/api/tasks/{later.id}/cancel", headers=token)
            print("with it:", done.json()["cancelled"], await later.status())

            page = await http.get(f"/ops/taskq/tasks/{later.id}")
            print("its page:", page.status_code, page.headers["content-type"])


if __name__ == "__main__":
    asyncio.run(main())
