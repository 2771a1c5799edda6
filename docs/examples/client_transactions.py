"""Transactional submit: a task written in your own database transaction, with your rows.

- `task.options(transaction=conn).submit(...)` writes the task's row inside your
  transaction (a SQLAlchemy `AsyncConnection`, or an `AsyncSession`) on the store's
  database. Nothing is published by the submitting process: the task is `scheduled`, and
  only once the transaction commits does the scheduler leader (here: the worker) publish it.
- Commit: the order row and the task exist together; the task runs.
- Rollback: neither exists; the task never ran and `app.get()` cannot find it.
Runs on the embedded default with the store in a SQLite file (another engine can open that
file, not an in-memory database). Set TASKQ_STORE_URL (and TASKQ_BROKER_URL) to run it on
PostgreSQL (and RabbitMQ); the test suite runs it both ways.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time

from sqlalchemy import Column, Integer, MetaData, String, Table, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, create_async_engine

import taskq

scratch = tempfile.TemporaryDirectory()  # removed when the program exits
default_store = f"sqlite+aiosqlite:///{scratch.name}/shop.sqlite3"
app = taskq.App(store_url=os.environ.get("TASKQ_STORE_URL") or default_store)

metadata = MetaData()
orders = Table(  # the application's own table, in the same database as taskq's
    "example_orders",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("customer", String(100), nullable=False),
)


async def add_order(conn: AsyncConnection, customer: str) -> int:
    insert = orders.insert().values(customer=customer).returning(orders.c.id)
    order_id: int = (await conn.execute(insert)).scalar_one()
    return order_id


@app.task(name="examples.send_receipt")
async def send_receipt(order_id: int) -> str:
    return f"receipt for order {order_id} sent"


async def main() -> None:
    engine = create_async_engine(app.settings.store_url)  # the store's database
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    try:
        async with app:
            # 1. Commit, with no worker running: the task is stored, not published.
            async with engine.begin() as conn:
                order_id = await add_order(conn, "ada")
                receipt = await send_receipt.options(transaction=conn).submit(order_id)
            print(f"committed order {order_id}; its task is {await receipt.status()}")

            # 2. A worker leads and publishes it (on PostgreSQL woken by NOTIFY at commit).
            async with app.worker():
                print(await receipt.result(timeout=10))

                # 3. Committed while the leader runs: published at once (SQLite: polled).
                async with engine.begin() as conn:
                    order_id = await add_order(conn, "bob")
                    receipt = await send_receipt.options(transaction=conn).submit(order_id)
                committed = time.monotonic()  # (the block commits as it ends)
                print(await receipt.result(timeout=10))
                print(f"  finished {time.monotonic() - committed:.2f} s after the commit")

                # 4. An AsyncSession works the same; here it rolls back.
                try:
                    async with AsyncSession(engine) as session, session.begin():
                        order_id = await add_order(await session.connection(), "eve")
                        lost = await send_receipt.options(transaction=session).submit(order_id)
                        raise RuntimeError("payment declined")  # rolls the transaction back
                except RuntimeError as exc:
                    print(f"rolled back ({exc})")
                try:
                    await app.get(lost.id)
                except taskq.TaskNotFound:
                    print(f"  task {lost.id} never existed")

            async with engine.connect() as conn:
                count = (await conn.execute(select(func.count()).select_from(orders))).scalar()
            receipts = await app.list_tasks(name=send_receipt.name)
            print(f"orders stored: {count}; tasks stored: {len(receipts)}")
    finally:
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
