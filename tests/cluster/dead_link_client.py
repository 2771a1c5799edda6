"""Run inside a worker host by test_dead_link.py: a statement on taskq's store engine whose
reply is lost to a partition. Prints `sent`, then how it ended and after how long."""

from __future__ import annotations

import asyncio
import sys
import time

from sqlalchemy import text

from taskq.exceptions import StoreConnectionError
from taskq.store import engine as engines


async def main(url: str) -> None:
    # (the bounds shortened for the test; the defaults are 10 s, 5 s and 30 s)
    engines.KEEPALIVE_IDLE, engines.KEEPALIVE_INTERVAL, engines.DEAD_LINK_AFTER = 1, 1, 3.0
    engine = engines.create_engine(url)
    try:
        async with await engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            print("sent", flush=True)
            began = time.monotonic()
            try:
                async with engines.translated_errors(engine.url):
                    await conn.execute(text("SELECT pg_sleep(2)"))
            except StoreConnectionError as exc:
                print(f"failed after {time.monotonic() - began:.1f} s: {exc}", flush=True)
                return
            print(f"answered after {time.monotonic() - began:.1f} s", flush=True)
    finally:
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
