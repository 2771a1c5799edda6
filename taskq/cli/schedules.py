"""`taskq schedules APP`: every periodic schedule, its next ticks and its last one."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from taskq.cli.common import AppSpec, load_app, out, run
from taskq.client.periodic import Periodic
from taskq.store import Store

NEXT_TICKS = 3


def schedules(
    app: AppSpec,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """APP's periodic schedules: how each ticks, its next three ticks (UTC) and the last tick
    the leader submitted (from TASKQ_STORE_URL)."""
    loaded = load_app(app)
    found = sorted(loaded.schedules.values(), key=lambda schedule: schedule.name)
    store = Store(loaded.settings.store_url, loaded.settings.namespace)
    last = run(_last_ticks(store)) if found else {}
    now = datetime.now(UTC)
    rows = [_row(schedule, now, last.get(schedule.name)) for schedule in found]
    if as_json:
        for row in rows:
            sys.stdout.write(json.dumps(row) + "\n")
        return
    if not rows:
        out().print("APP has no periodic schedules")
        return
    from rich.table import Table

    table = Table()
    for column in ("schedule", "ticks", "time zone", "next ticks (UTC)", "last tick (UTC)"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["name"],
            row["spec"],
            row["timezone"],
            "\n".join(_shown(tick) for tick in row["next"]),
            "never" if row["last"] is None else _shown(row["last"]),
        )
    out().print(table)


def _row(schedule: Periodic, now: datetime, last: datetime | None) -> dict[str, Any]:
    return {
        "name": schedule.name,
        "spec": schedule.spec,
        "timezone": schedule.timezone,
        "next": [tick.isoformat() for tick in schedule.next_ticks(now, NEXT_TICKS)],
        "last": None if last is None else last.isoformat(),
    }


def _shown(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


async def _last_ticks(store: Store) -> dict[str, datetime | None]:
    """Schedule name → the last tick the leader submitted (None: never)."""
    await store.open()
    try:
        return {row.name: row.ticked_at for row in await store.list_schedules()}
    finally:
        await store.close()
