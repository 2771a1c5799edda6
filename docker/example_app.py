"""The example app that docker/compose.yaml's worker runs (`taskq worker example_app:app`):
replace it with your own module, mounted at /app or copied into an image FROM taskq:dev.

Submit to it from the host, with the Compose services up:

    TASKQ_BROKER_URL=amqp://taskq:taskq@127.0.0.1/ \\
    TASKQ_STORE_URL=postgresql+asyncpg://taskq:taskq@127.0.0.1/taskq \\
    taskq submit docker.example_app:app example.add --args '[2, 3]'
"""

from __future__ import annotations

import taskq

app = taskq.App()


@app.task(name="example.add")
async def add(a: int, b: int) -> int:
    return a + b
