"""Scheduling and coordination on the embedded default: delays, idempotency, locks, cron.

- A task submitted with `countdown` (or `eta`) waits in the store as a `scheduled` row; the
  scheduler leader publishes it when it is due, and it never runs early.
- Two submits with one `idempotency_key` return the same task id, and the task runs once.
- `app.lock(name, timeout=...)` gives mutual exclusion; `timeout=0` fails at once with
  `taskq.LockTimeout` when someone else holds the lock.
- `@app.periodic(every=...)` (or `cron=...`) submits a task on every tick (here: every
  second), exactly once per tick.
Runs on the embedded default (in-process broker, in-memory SQLite): no server needed. The
worker started by `app.worker()` is also the scheduler leader (`scheduler=True`).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import taskq

app = taskq.App("memory://", "sqlite+aiosqlite:///:memory:")

emails_sent: list[str] = []
heartbeats: list[str] = []
enough_heartbeats = asyncio.Event()


@app.task(name="examples.send_reminder")
async def send_reminder(user: str) -> str:
    return f"reminded {user}"


@app.task(name="examples.send_invoice_email")
async def send_invoice_email(invoice_id: int) -> str:
    emails_sent.append(f"invoice {invoice_id}")
    return f"sent invoice {invoice_id}"


@app.periodic(every=timedelta(seconds=1), args=["cache"], name="examples.heartbeat")
async def heartbeat(component: str) -> None:
    heartbeats.append(component)
    if len(heartbeats) >= 2:
        enough_heartbeats.set()


async def main() -> None:
    async with app:
        # 1. A delayed task: stored as `scheduled`. No worker runs yet, so nothing can
        #    publish it; it waits in the store, not in any process's memory.
        reminder = await send_reminder.options(countdown=0.5).submit("ada")
        print(f"before the worker: {await reminder.status()}")  # scheduled

        async with app.worker(concurrency=4):  # scheduler=True: it leads and publishes
            print(await reminder.result(timeout=10))
            info = await reminder.info()
            assert info.run_at is not None and info.started_at is not None
            print(f"ran no earlier than due: {info.started_at >= info.run_at}")

            # 2. Idempotency: the same key gives the same task, which runs once.
            key = "invoice-1041-email"
            first = await send_invoice_email.options(idempotency_key=key).submit(1041)
            again = await send_invoice_email.options(idempotency_key=key).submit(1041)
            print(f"same task: {first.id == again.id}")
            print(await again.result(timeout=10))
            print(f"emails sent: {len(emails_sent)}")

            # 3. A lock: while one block holds it, timeout=0 fails at once.
            async with app.lock("nightly-report", timeout=5):
                try:
                    async with app.lock("nightly-report", timeout=0):
                        print("unreachable: the lock is held")
                except taskq.LockTimeout as exc:
                    print(f"second holder refused: {type(exc).__name__}")
            async with app.lock("nightly-report", timeout=0):  # released: free again
                print("lock free again: True")

            # 4. The periodic task runs on every tick (every second); wait for two.
            await asyncio.wait_for(enough_heartbeats.wait(), timeout=8)
            print(f"periodic ran: {len(heartbeats) >= 2}")


if __name__ == "__main__":
    asyncio.run(main())
