"""Worker lifecycle hooks: open a shared client once per worker process, use it from every
task through `taskq.context().state`, and close it once the worker has drained.

Runs on the embedded default (in-process broker, in-memory SQLite): no server needed.
"""

from __future__ import annotations

import asyncio

import taskq

app = taskq.App("memory://", "sqlite+aiosqlite:///:memory:")


class RatesClient:
    """Stands for an HTTP client or a database pool: costly to open, shared by tasks."""

    def __init__(self) -> None:
        self.calls = 0
        self.closed = False

    async def rate(self, currency: str) -> float:
        self.calls += 1
        return {"EUR": 1.0, "USD": 1.08}[currency]


@app.on_worker_start
async def open_rates(state: taskq.WorkerState) -> None:
    state.rates = RatesClient()  # before the worker takes its first task


@app.on_worker_stop
async def close_rates(state: taskq.WorkerState) -> None:
    rates = getattr(state, "rates", None)  # (stop hooks also run after a failed start)
    if rates is not None:
        rates.closed = True
        print(f"closed the rates client after {rates.calls} calls")


@app.task(name="examples.convert")
async def convert(amount: float, currency: str) -> float:
    rates: RatesClient = taskq.context().state.rates
    return round(amount * await rates.rate(currency), 2)


async def main() -> None:
    async with app:
        handles = [await convert.submit(100.0, c) for c in ("EUR", "USD", "USD")]
        async with app.worker():
            print([await h.result(timeout=10) for h in handles])


if __name__ == "__main__":
    asyncio.run(main())
