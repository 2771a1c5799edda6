"""Another Python process on the test's broker and store: lock holders and keyed submitters.

    python -m tests.e2e.client_process lock-loop --log FILE --go FILE [--holders N --rounds R]
    python -m tests.e2e.client_process lock-hold --name NAME --ready FILE
    python -m tests.e2e.client_process submit-keyed --key KEY --label LABEL --go FILE [--copies N]

URLs come from TASKQ_BROKER_URL / TASKQ_STORE_URL. With --go, the process opens its app,
touches `GO.ready.PID`, and waits for GO to exist, so that several processes start together.
Exit code 0 means every check the process made passed; 3 means two lock holders overlapped.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from pathlib import Path

from tests.e2e import worker_app
from tests.e2e.processes import reply

logger = logging.getLogger(__name__)

OVERLAP = 3


class Overlap(Exception):
    """Two holders were inside the lock at once."""


def last_line(path: Path) -> str:
    lines = path.read_text().splitlines() if path.exists() else []
    return lines[-1] if lines else ""


def wait_for_go(go: Path) -> None:
    """Say we are ready, then wait (up to 60 s) for the test to say go."""
    Path(f"{go}.ready.{os.getpid()}").touch()
    deadline = time.monotonic() + 60
    while not go.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{go} did not appear within 60 s")
        time.sleep(0.005)


async def lock_loop(log: Path, go: Path, holders: int, rounds: int, name: str) -> None:
    """`holders` coroutines each take the lock `rounds` times and check they are alone."""
    e2e = worker_app.build()
    pid = os.getpid()

    async def holder(index: int) -> None:
        for _ in range(rounds):
            async with e2e.app.lock(name):
                before = last_line(log)
                if before.startswith("enter"):
                    raise Overlap(f"{pid}/{index} got the lock while the log ends with {before!r}")
                entered = f"enter {pid} {index} {time.time():.6f}"
                worker_app.append_line(str(log), entered)
                await asyncio.sleep(0.002)
                if (now := last_line(log)) != entered:
                    raise Overlap(f"{pid}/{index} holds the lock but the log ends with {now!r}")
                worker_app.append_line(str(log), f"exit {pid} {index} {time.time():.6f}")
            await asyncio.sleep(0)

    async with e2e.app:
        await asyncio.to_thread(wait_for_go, go)
        await asyncio.gather(*(holder(index) for index in range(holders)))


async def lock_hold(name: str, ready: Path) -> None:
    """Take the lock, say so, and hold it until killed."""
    e2e = worker_app.build()
    async with e2e.app, e2e.app.lock(name, timeout=30):
        await asyncio.to_thread(ready.touch)
        await asyncio.Event().wait()


async def submit_keyed(key: str, label: str, go: Path, copies: int) -> None:
    """Submit `record(label)` `copies` times at once with one idempotency key; print the ids."""
    e2e = worker_app.build()
    async with e2e.app:
        await asyncio.to_thread(wait_for_go, go)
        keyed = e2e.record.options(idempotency_key=key)
        handles = await asyncio.gather(*(keyed.submit(label) for _ in range(copies)))
    reply("\n".join(handle.id for handle in handles))


def main() -> int:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    loop = commands.add_parser("lock-loop")
    loop.add_argument("--log", type=Path, required=True)
    loop.add_argument("--go", type=Path, required=True)
    loop.add_argument("--holders", type=int, default=4)
    loop.add_argument("--rounds", type=int, default=10)
    loop.add_argument("--name", default="shared")
    hold = commands.add_parser("lock-hold")
    hold.add_argument("--name", required=True)
    hold.add_argument("--ready", type=Path, required=True)
    keyed = commands.add_parser("submit-keyed")
    keyed.add_argument("--key", required=True)
    keyed.add_argument("--label", required=True)
    keyed.add_argument("--go", type=Path, required=True)
    keyed.add_argument("--copies", type=int, default=10)
    options = parser.parse_args()

    if options.command == "lock-loop":
        overlaps: list[Overlap] = []
        try:
            asyncio.run(
                lock_loop(options.log, options.go, options.holders, options.rounds, options.name)
            )
        except* Overlap as caught:
            overlaps += caught.exceptions  # type: ignore[arg-type]
        for overlap in overlaps:
            logger.error("overlap: %s", overlap)
        return OVERLAP if overlaps else 0
    elif options.command == "lock-hold":
        asyncio.run(lock_hold(options.name, options.ready))
    else:
        asyncio.run(submit_keyed(options.key, options.label, options.go, options.copies))
    return 0


if __name__ == "__main__":
    sys.exit(main())
