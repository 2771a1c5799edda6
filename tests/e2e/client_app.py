"""The app `taskq worker tests.e2e.client_app:app` runs in the client-API end-to-end tests.

Tasks that report progress, and that leave a line in E2E_ORDER_FILE per run (so the test
process sees what ran in the worker's process, and how often). The worker subprocess takes
its URLs from TASKQ_BROKER_URL / TASKQ_STORE_URL; the test process and the client
subprocesses build their own copies with `build(...)`, so all register the same names.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import taskq
from tests.e2e.worker_app import noop, record


async def report(steps: int) -> str:
    """Report progress `steps` times: step/steps, message "step N of STEPS", data step=N."""
    ctx = taskq.context()
    for step in range(1, steps + 1):
        await ctx.progress(step / steps, f"step {step} of {steps}", step=step)
    return f"reported {steps}"


def mark(label: str) -> str:
    """The side effect a test looks for: `label` appended to E2E_ORDER_FILE; → `label`."""
    record(label)
    return label


@dataclasses.dataclass(frozen=True)
class ClientApp:
    app: taskq.App
    noop: taskq.Task[[int], int]
    report: taskq.Task[[int], str]
    mark: taskq.Task[[str], str]


def build(
    broker_url: str | None = None, store_url: str | None = None, **settings: Any
) -> ClientApp:
    """An app with these tasks under fixed names; URLs left as None come from TASKQ_*."""
    app = taskq.App(broker_url, store_url, **settings)
    return ClientApp(
        app=app,
        noop=app.task(name="e2e.noop")(noop),
        report=app.task(name="client.report")(report),
        mark=app.task(name="client.mark")(mark),
    )


app = build().app
