"""Priorities on quorum queues, which have none of their own: lanes, a queue per band of
priorities (docs/deploying.md#priority-lanes).

With TASKQ_BROKER_URL naming RabbitMQ (a cluster's nodes comma-separated), `default` is
split into `default`, `default#p1` and `default#p5`; on the embedded default the memory
broker orders by priority itself. Either way, one slot runs the higher band first.
"""

from __future__ import annotations

import asyncio

import taskq

app = taskq.App(queue_type="quorum", priority_lanes=(1, 5))  # lanes 0 | 1-4 | 5-10
order: list[str] = []


@app.task
async def report(name: str) -> None:
    order.append(name)
    await asyncio.sleep(0.02)


async def main() -> None:
    async with app:
        handles = [
            await report.submit("routine"),  # priority 0: lane `default`
            await report.options(priority=3).submit("soon"),  # lane `default#p1`
            await report.options(priority=9).submit("urgent"),  # lane `default#p5`
        ]
        async with app.worker(concurrency=1):
            await app.gather(handles, timeout=30)
    print(" > ".join(order))


if __name__ == "__main__":
    asyncio.run(main())
