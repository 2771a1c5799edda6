"""A middleware that carries a tenant id from the submitting request to the task, and logs it.

The web side keeps the current request's tenant in a context variable (as a framework's
request middleware would). `TenantMiddleware.submit` copies it into the submission's
headers, which travel with the message and are stored on the task's row. On the worker,
`TenantMiddleware.run` puts the header back into the same context variable around the task
and logs it, so the task's code and its log lines know the tenant without an argument.
Runs on the embedded default (in-process broker, in-memory SQLite): no server needed.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import Any

import taskq
from taskq.middleware import RunNext, SubmitNext

logger = logging.getLogger("examples.tenant")
current_tenant: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "current_tenant", default=None
)


class TenantMiddleware(taskq.Middleware):
    async def submit(self, submission: taskq.Submission, call_next: SubmitNext) -> str:
        tenant = current_tenant.get()
        if tenant is None:
            raise PermissionError(f"{submission.name}: submitted outside any tenant's request")
        submission.headers["tenant"] = tenant
        return await call_next(submission)

    async def run(self, ctx: taskq.TaskContext, call_next: RunNext) -> Any:
        tenant = ctx.headers.get("tenant")
        logger.info("task %s[%s] runs for tenant %s", ctx.name, ctx.id, tenant)
        token = current_tenant.set(tenant)
        try:
            return await call_next(ctx)
        finally:
            current_tenant.reset(token)


app = taskq.App("memory://", "sqlite+aiosqlite:///:memory:", middleware=[TenantMiddleware()])


@app.task(name="examples.send_invoice")
async def send_invoice(order: int) -> str:
    return f"invoice for order {order} sent to tenant {current_tenant.get()}"


async def handle_request(tenant: str, order: int) -> taskq.TaskHandle[str]:
    """What a web request handler does: its framework has set the tenant."""
    current_tenant.set(tenant)
    return await send_invoice.submit(order)


async def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logger.setLevel(logging.INFO)
    async with app, app.worker(concurrency=2):
        handle = await asyncio.create_task(handle_request("acme", 42))
        print(await handle.result(timeout=10))
        print("stored headers:", (await handle.info()).headers)
        try:
            await send_invoice.submit(7)  # no request, no tenant: refused, nothing stored
        except PermissionError as exc:
            print("refused:", exc)


if __name__ == "__main__":
    asyncio.run(main())
