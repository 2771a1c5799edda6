"""Namespaces and retention: two apps that share a database (here one SQLite path; in
production one RabbitMQ vhost and one PostgreSQL database) without seeing each other's tasks,
and how long each keeps its finished tasks.

Runs on the embedded default (in-process broker, SQLite in a temporary directory).
"""

from __future__ import annotations

import asyncio
import tempfile
from datetime import timedelta
from pathlib import Path

import taskq


def make_app(store_url: str, namespace: str) -> taskq.App:
    # Finished tasks are kept 90 days (TASKQ_RETENTION), ticks of `heartbeat` only one.
    app = taskq.App("memory://", store_url, namespace=namespace, retention="90d")

    @app.task(name="examples.work")  # the same name and queue in both apps
    async def work(n: int) -> str:
        return f"{namespace} did {n}"

    @app.periodic(every=timedelta(hours=1), retention=timedelta(days=1))
    async def heartbeat() -> None:
        pass

    return app


async def main(directory: Path) -> None:
    store_url = f"sqlite+aiosqlite:///{directory / 'taskq.sqlite3'}"
    billing, shipping = make_app(store_url, "billing"), make_app(store_url, "shipping")
    async with billing, shipping, billing.worker(), shipping.worker():
        one = await billing.tasks["examples.work"].submit(1)
        two = await shipping.tasks["examples.work"].submit(2)
        print(await one.result(timeout=10), "/", await two.result(timeout=10))
        print("billing sees", len(await billing.list_tasks()), "task(s)")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as temporary:
        asyncio.run(main(Path(temporary)))
        print(sorted(path.name for path in Path(temporary).glob("*.sqlite3")))
