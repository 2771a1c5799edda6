"""Flow control (docs/flow-control.md): a rate limit per account, one run at a time per
customer, and a quota per tenant, each cluster-wide (here on the embedded default)."""

from __future__ import annotations

import asyncio
import time

import taskq

app = taskq.App()  # embedded default; on PostgreSQL every worker process shares the limits


@app.task(rate_limit=taskq.RateLimit("10/s", key="account"))
async def call_api(account: str, n: int) -> float:
    return time.monotonic()


@app.task(concurrency_limit=taskq.ConcurrencyLimit(1, key="customer"))
async def sync_customer(customer: str) -> None:
    await asyncio.sleep(0.1)


@app.task(quota=taskq.Quota(2, key="tenant"))
async def export(tenant: str) -> str:
    return f"{tenant} exported"


async def main() -> None:
    async with app:
        async with app.worker(concurrency=20):
            # 10 calls for one account: 10 a second, so about 0.9 s from first to last start.
            calls = [await call_api.submit("acme", n) for n in range(10)]
            starts = await app.gather(calls, timeout=10)
            spread = max(starts) - min(starts)
            print(f"10 calls for acme, 0.1 s apart: {0.85 <= spread <= 1.5}")
            # One sync at a time per customer: 3 for acme take 3 x 0.1 s, run side by side
            # with 3 for globex.
            began = time.monotonic()
            syncs = [await sync_customer.submit(c) for c in ("acme", "globex") * 3]
            await app.gather(syncs, timeout=10)
            took = time.monotonic() - began
            print(f"6 syncs for 2 customers, each customer's one at a time: {0.3 <= took < 0.6}")
        # At most 2 unfinished exports per tenant: a third is refused, nothing stored.
        first = [await export.submit("acme") for _ in range(2)]
        try:
            await export.submit("acme")
        except taskq.QuotaExceeded as exc:
            print(f"refused: {exc.key} has {exc.unfinished} of {exc.quota} unfinished")
        async with app.worker():
            print(await first[0].result(timeout=10))


if __name__ == "__main__":
    asyncio.run(main())
