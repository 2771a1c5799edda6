"""Another Python process using the client API: a task watcher and a crashing submitter.

    python -m tests.e2e.client_api_process watch TASK_ID
    python -m tests.e2e.client_api_process submit-in-transaction-and-die LABEL

URLs come from TASKQ_BROKER_URL / TASKQ_STORE_URL.

`watch` prints each event of `handle.events()` as one JSON line, flushed at once, and exits
0 after the final one; its first line (the state the store had) says it is subscribed.

`submit-in-transaction-and-die` writes `client.mark(LABEL)` in a transaction of its own
engine on the store's database, commits, prints the task id and SIGKILLs itself at once:
no cleanup, no close, nothing more than the commit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys

from sqlalchemy.ext.asyncio import create_async_engine

from tests.e2e import client_app
from tests.e2e.processes import reply


async def watch(task_id: str) -> None:
    e2e = client_app.build()
    async with e2e.app:
        handle = await e2e.app.get(task_id)
        async for event in handle.events():
            line = {
                "kind": event.kind,
                "state": event.state.value,
                "attempt": event.attempt,
                "progress": event.progress,
                "message": event.message,
                "data": dict(event.data),
                "seq": event.seq,
            }
            reply(json.dumps(line))


async def submit_in_transaction_and_die(label: str) -> None:
    e2e = client_app.build()
    async with e2e.app:
        engine = create_async_engine(os.environ["TASKQ_STORE_URL"])
        async with engine.begin() as conn:
            handle = await e2e.mark.options(transaction=conn).submit(label)
        # Committed: the row is durable, and this process never publishes anything.
        reply(handle.id)
        os.kill(os.getpid(), signal.SIGKILL)


def main() -> int:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    watcher = commands.add_parser("watch")
    watcher.add_argument("task_id")
    dying = commands.add_parser("submit-in-transaction-and-die")
    dying.add_argument("label")
    options = parser.parse_args()

    if options.command == "watch":
        asyncio.run(watch(options.task_id))
    else:
        asyncio.run(submit_in_transaction_and_die(options.label))
    return 0


if __name__ == "__main__":
    sys.exit(main())
