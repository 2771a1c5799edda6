"""What `taskq worker` loads: none of the libraries it does not use, each megabytes of every
worker's resident memory (the benchmark prints the figure; this keeps them out)."""

from __future__ import annotations

import json
import subprocess
import sys

# sqlalchemy.ext.asyncio imports the ORM (8 MB); rich is the CLI's output (1.5 MB);
# croniter and dateutil serve periodic tasks only (0.6 MB).
NOT_IN_A_WORKER = ("sqlalchemy.orm", "sqlalchemy.ext.asyncio", "rich", "croniter", "dateutil")

# The modules a worker on RabbitMQ and PostgreSQL runs with, the command line included.
WORKER_MODULES = (
    "taskq.cli",
    "taskq.worker.worker",
    "taskq.worker.executor",
    "taskq.broker.rabbitmq",
    "taskq.broker.consumer",
    "taskq.store.pg",
    "sqlalchemy.dialects.postgresql.asyncpg",
)


def test_a_worker_loads_neither_the_orm_nor_rich_nor_croniter() -> None:
    loaded = modules_after(*(f"import {module}" for module in WORKER_MODULES))

    assert "taskq.worker.executor" in loaded
    assert [name for name in loaded if _excluded(name)] == []


def test_the_check_sees_a_module_once_it_is_imported() -> None:
    """The check above can fail: the same probe finds croniter once periodic tasks use it."""
    loaded = modules_after(
        "from taskq.client.periodic import Periodic",
        "Periodic(name='n', task='t', cron='* * * * *')",
    )

    assert "croniter" in [name for name in loaded if _excluded(name)]


def modules_after(*lines: str) -> list[str]:
    """sys.modules of a fresh interpreter once it has run `lines`."""
    code = "\n".join([*lines, "import json, sys", "print(json.dumps(sorted(sys.modules)))"])
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    names: list[str] = json.loads(shown.stdout)
    return names


def _excluded(name: str) -> bool:
    return any(name == root or name.startswith(root + ".") for root in NOT_IN_A_WORKER)
