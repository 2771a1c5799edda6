"""How taskq reports what goes wrong: a failing task, and arguments refused at `submit()`.

- A task that raises comes back from `result()` as `taskq.TaskFailed`, which carries the
  remote exception's type name, message and traceback (the exception object never travels).
  A task that overruns its `timeout` fails the same way, with the type name `TaskTimeout`.
- `submit()` refuses, before anything is stored or sent, an argument that taskq cannot
  carry (`taskq.SerializationError`, also a `TypeError`) and a message over the app's
  `max_payload_bytes` (`taskq.PayloadTooLarge`, also a `ValueError`).
Runs on the embedded default (in-process broker, in-memory SQLite): no server needed.
"""

from __future__ import annotations

import asyncio
import threading

import taskq

app = taskq.App("memory://", "sqlite+aiosqlite:///:memory:", max_payload_bytes=64 * 1024)


@app.task(name="examples.charge_card")
async def charge_card(order_id: int, amount_cents: int) -> str:
    if amount_cents > 10_000:
        raise ValueError(f"order {order_id}: {amount_cents} cents is over the card's limit")
    return f"order {order_id}: charged {amount_cents} cents"


@app.task(name="examples.slow_report", timeout=0.2)
async def slow_report(month: str) -> str:
    await asyncio.sleep(5)  # cancelled after 0.2 s
    return f"report-{month}.pdf"


@app.task(name="examples.guard")
async def guard(user: str, lock: object) -> str:  # type-checks, cannot be sent
    return f"{user} holds {lock}"


@app.task(name="examples.guard_by_name")
async def guard_by_name(user: str, lock: str) -> str:  # the fix: send what names it
    return f"{user} holds the lock {lock!r}"


@app.task(name="examples.upload")
async def upload(data: bytes) -> int:
    return len(data)


async def main() -> None:
    async with app, app.worker(concurrency=2):
        # 1. A task that raises: result() raises TaskFailed with the remote error.
        ok = await charge_card.submit(1041, 4_200)
        declined = await charge_card.submit(1042, 25_000)
        print(await ok.result(timeout=10))
        try:
            await declined.result(timeout=10)
        except taskq.TaskFailed as exc:
            print(f"failed: {exc.error_type}: {exc.error_message}")
            print(f"  last traceback line: {exc.traceback.strip().splitlines()[-1]}")
        print(f"  status: {await declined.status()}")

        # 2. A task over its timeout is cancelled and recorded as failed (TaskTimeout).
        try:
            await (await slow_report.submit("2026-10")).result(timeout=10)
        except taskq.TaskFailed as exc:
            print(f"failed: {exc.error_type}: {exc.error_message}")

        # 3. An argument taskq cannot carry is refused at submit(), naming the argument
        # (a lock only means something in this process).
        try:
            await guard.submit("ada", threading.Lock())
        except taskq.SerializationError as exc:
            assert isinstance(exc, TypeError)
            print(f"refused: {exc}")
        print(await (await guard_by_name.submit("ada", "invoices")).result(timeout=10))

        # 4. A message over max_payload_bytes (64 KiB here) is refused at submit().
        try:
            await upload.submit(b"x" * 100_000)
        except taskq.PayloadTooLarge as exc:
            assert isinstance(exc, ValueError)
            print(f"refused: {exc}")


if __name__ == "__main__":
    asyncio.run(main())
