"""`tests.e2e.worker_app`'s tasks plus a task scheduled every second (the failover test's app).

A separate module, so that the periodic task does not add rows to the other end-to-end tests.
Each run appends `TICK RUN_AT PID` to the file named by E2E_TICKS_FILE, where TICK is the
cron tick it was submitted for (read back from its idempotency key).
"""

from __future__ import annotations

import os
import time
from datetime import timedelta

import taskq
from tests.e2e import worker_app

TICK_TASK = "e2e.tick"

e2e = worker_app.build()
app = e2e.app


@app.periodic(every=timedelta(seconds=1), name=TICK_TASK)
async def tick() -> None:
    ran = time.time()
    record = await app.store.get_task(taskq.context().id)
    assert record is not None and record.idempotency_key is not None
    due = record.idempotency_key.removeprefix(f"periodic:{TICK_TASK}:")
    worker_app.append_line(os.environ["E2E_TICKS_FILE"], f"{due} {ran:.6f} {os.getpid()}")
