"""`taskq limits`: every rate, concurrency and quota key in use, with its use now."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from taskq.cli.common import StoreUrl, escape, out, run, store_from
from taskq.store import Store

_KINDS = {"rate": "rate limit", "slots": "concurrency", "quota": "quota"}


def limits(
    store_url: StoreUrl = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List the limits in force: per key, what it allows and its use now (rate limits: the
    starts allowed at once and the tasks waiting their turn; concurrency limits: slots in
    use and tasks waiting for one; quotas: unfinished tasks)."""
    rows = run(_usage(store_from(store_url)))
    if as_json:
        for row in rows:
            sys.stdout.write(json.dumps(row) + "\n")
        return
    if not rows:
        out().print("no limit is in use")
        return
    from rich.table import Table

    table = Table()
    for column in ("kind", "key", "limit", "in use", "available now", "waiting"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            _KINDS[row["kind"]],
            escape(row["key"]),
            escape(str(row["limit"])),
            _shown(row["in_use"]),
            _shown(row["available"]),
            _shown(row["waiting"]),
        )
    out().print(table)


def _shown(value: Any) -> str:
    return "-" if value is None else str(value)


async def _usage(store: Store) -> list[dict[str, Any]]:
    await store.open()
    try:
        return await store.limits_in_use()
    finally:
        await store.close()
