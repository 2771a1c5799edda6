"""The flow-control benchmark's taskq app: the same no-op task three times, in a module of its
own (`taskq worker benchmarks.flow_control_app:app`), as a user's tasks module would be.

Each takes `(i, customer)` and returns `i`; they differ only in what they are subject to:

- `bench.flow.none`: nothing (the baseline);
- `bench.flow.rate`: a cluster-wide rate limit so generous it is never reached: every claim
  goes through the GCRA row of `taskq_rate_limits`, none is put off;
- `bench.flow.slots`: at most 10 running at once per value of `customer`.
"""

from __future__ import annotations

import taskq

APP_SPEC = "benchmarks.flow_control_app:app"
QUEUE = "flow_control"
# variant → task name, in the order the benchmark alternates them
TASKS = {
    "none": "bench.flow.none",
    "rate": "bench.flow.rate",
    "slots": "bench.flow.slots",
}
RATE_LIMIT = taskq.RateLimit("1000000/s", burst=1_000_000)  # never reached
SLOTS_PER_CUSTOMER = 10
CUSTOMERS = 100  # task i is for customer i % CUSTOMERS


async def noop(i: int, customer: int) -> int:
    """As little as a task can do (its result is stored); `customer` is the limit's key."""
    return i


def build(broker_url: str | None = None, store_url: str | None = None) -> taskq.App:
    app = taskq.App(broker_url, store_url)
    app.task(name=TASKS["none"], queue=QUEUE)(noop)
    app.task(name=TASKS["rate"], queue=QUEUE, rate_limit=RATE_LIMIT)(noop)
    app.task(
        name=TASKS["slots"],
        queue=QUEUE,
        concurrency_limit=taskq.ConcurrencyLimit(SLOTS_PER_CUSTOMER, key="customer"),
    )(noop)
    return app


app = build()  # what the worker runs
