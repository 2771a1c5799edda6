"""Values that just work: datetimes, UUIDs, decimals, enums, tuples, sets, dataclasses
(and pydantic models, when installed) as arguments and results, and a type of your own
registered once.

Runs on the embedded default (in-process broker, in-memory SQLite): no server needed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import taskq

app = taskq.App("memory://", "sqlite+aiosqlite:///:memory:")


class Plan(enum.Enum):
    FREE = "free"
    PRO = "pro"


@dataclasses.dataclass
class Invoice:
    customer: uuid.UUID
    plan: Plan
    amount: Decimal
    due: datetime
    lines: tuple[str, ...]


class Money:
    """Your own type: registered below, it travels as {"$Money": [cents, currency]}."""

    def __init__(self, cents: int, currency: str) -> None:
        self.cents, self.currency = cents, currency

    def __repr__(self) -> str:
        return f"Money({self.cents}, {self.currency!r})"


app.serializer.register(Money, lambda m: [m.cents, m.currency], lambda v: Money(*v))


@app.task(name="examples.extend_invoice")
async def extend_invoice(invoice: Invoice, by: timedelta) -> Invoice:
    # The worker gets an Invoice back (rebuilt from the annotation), its fields typed.
    assert isinstance(invoice.plan, Plan) and isinstance(invoice.amount, Decimal)
    return dataclasses.replace(invoice, due=invoice.due + by, lines=(*invoice.lines, "extended"))


@app.task(name="examples.total")
async def total(prices: list[Money]) -> Money:
    return Money(sum(p.cents for p in prices), prices[0].currency)


async def main() -> None:
    invoice = Invoice(
        customer=uuid.UUID(int=7),
        plan=Plan.PRO,
        amount=Decimal("49.90"),
        due=datetime(2026, 12, 31, 12, 0, tzinfo=UTC),
        lines=("seat",),
    )
    async with app, app.worker():
        handle = await extend_invoice.submit(invoice, timedelta(days=14))
        extended = await handle.result(timeout=10)
        print(extended.due.isoformat(), extended.plan, extended.amount, extended.lines)
        print("stored:", (await handle.info()).args[1])  # how the row keeps the timedelta
        print(await (await total.submit([Money(250, "EUR"), Money(199, "EUR")])).result(timeout=10))


if __name__ == "__main__":
    asyncio.run(main())
