"""A task's life beyond one clean run: retries, a timeout, a cancel, the dead-letter queue.

- `max_retries=2` with `Backoff.exponential(0.1, jitter=False)`: a task that fails twice
  waits 0.1 s, then 0.2 s, as a `scheduled` row, and succeeds on its third attempt. Every
  attempt is recorded: `handle.attempts()` lists them.
- `timeout=0.2`: a task still running after 0.2 s is cancelled and fails with the error
  type `TaskTimeout`.
- `handle.cancel()` on a running task: its code gets `CancelledError`, its `finally` block
  runs, and `result()` raises `taskq.TaskCancelled`. A finished task cannot be cancelled:
  `cancel()` returns False.
- A final failure (here: no retries left) is dead-lettered: `app.dlq("default").list()`
  shows it with its reason, `failed`, and its error.
Runs on the embedded default (in-process broker, in-memory SQLite): no server needed.
"""

from __future__ import annotations

import asyncio

import taskq
from taskq import Backoff

app = taskq.App("memory://", "sqlite+aiosqlite:///:memory:")

calls = {"fetch_rates": 0}
started = asyncio.Event()
cleaned_up: list[str] = []


@app.task(
    name="examples.fetch_rates",
    max_retries=2,
    retry_for=(ConnectionError,),
    backoff=Backoff.exponential(0.1, jitter=False),  # 0.1 s, then 0.2 s
)
async def fetch_rates(currency: str) -> str:
    calls["fetch_rates"] += 1
    if calls["fetch_rates"] < 3:
        raise ConnectionError(f"rates service unreachable (call {calls['fetch_rates']})")
    return f"{currency} rates fetched"


@app.task(name="examples.slow_report", timeout=0.2)
async def slow_report(month: str) -> str:
    await asyncio.sleep(5)  # cancelled after 0.2 s
    return f"report-{month}.pdf"


@app.task(name="examples.rebuild_index")
async def rebuild_index() -> None:
    started.set()
    try:
        await asyncio.sleep(60)  # cancelled long before this
    finally:
        cleaned_up.append("rebuild_index: temporary files removed")


@app.task(name="examples.charge_card")
async def charge_card(order_id: int) -> None:
    raise ValueError(f"card declined for order {order_id}")  # no retries: dead-lettered


async def main() -> None:
    async with app, app.worker(concurrency=4):
        # 1. Retries with exponential backoff: two failures, then success.
        rates = await fetch_rates.submit("EUR")
        print(await rates.result(timeout=10))
        for attempt in await rates.attempts():
            error = attempt["error"]["type"] if attempt["error"] else "-"
            print(f"  attempt {attempt['attempt']}: {attempt['state']} ({error})")

        # 2. A timeout is a failure with the error type TaskTimeout.
        report = await slow_report.submit("2026-10")
        try:
            await report.result(timeout=10)
        except taskq.TaskFailed as exc:
            print(f"slow_report failed: {exc.error_type}")

        # 3. Cancel a running task: its `finally` runs, and the row ends `cancelled`.
        rebuild = await rebuild_index.submit()
        await started.wait()
        print(f"cancel() while running: {await rebuild.cancel()}")
        try:
            await rebuild.result(timeout=10)
        except taskq.TaskCancelled:
            print(f"rebuild_index is {await rebuild.status()}; {cleaned_up[0]}")
        print(f"cancel() once finished: {await rebuild.cancel()}")

        # 4. A final failure lands in default.dlq, with its reason.
        charge = await charge_card.submit(1042)
        try:
            await charge.result(timeout=10)
        except taskq.TaskFailed as exc:
            print(f"charge_card failed: {exc.error_type}")
        for letter in await app.dlq("default").list():
            print(f"  dead letter: {letter.task} reason={letter.reason} error={letter.error_type}")


if __name__ == "__main__":
    asyncio.run(main())
