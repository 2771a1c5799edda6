"""`taskq prune`: delete finished tasks older than a period by hand (the leader does it by
TASKQ_RETENTION on its own)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from taskq.cli.common import StoreUrl, fail, out, run, store_from
from taskq.config import parse_retention
from taskq.exceptions import ConfigurationError
from taskq.store import PRUNE_BATCH, PruneRule, Store


def prune(
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than", help="Delete tasks that finished longer ago than this: 12h, 7d."
        ),
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only count them; delete nothing.")
    ] = False,
    name: Annotated[
        list[str] | None, typer.Option("--name", help="Only tasks of this name (repeatable).")
    ] = None,
    include_dead: Annotated[
        bool,
        typer.Option(
            "--include-dead",
            help="Dead-lettered tasks too (their dead letters can no longer be replayed).",
        ),
    ] = False,
    store_url: StoreUrl = None,
) -> None:
    """Delete finished tasks (and their attempts) older than a period, in small batches.

    Unfinished tasks are never touched; dead-lettered ones only with --include-dead.
    """
    try:
        period = parse_retention(older_than, "--older-than")
    except ConfigurationError as exc:
        fail(str(exc))
    if period is None:
        fail("--older-than takes a period (12h, 7d), not 'off'")
    rule = PruneRule(cutoff=datetime.now(UTC) - period, names=name, include_dead=include_dead)
    count = run(_prune(store_from(store_url), rule, dry_run=dry_run))
    verb = "would delete" if dry_run else "deleted"
    before = rule.cutoff.isoformat(timespec="seconds")
    out().print(f"{verb} {count} finished tasks (finished before {before})")


async def _prune(store: Store, rule: PruneRule, *, dry_run: bool) -> int:
    await store.open()
    try:
        if dry_run:
            return await store.count_prunable(rule)
        total = 0
        while (step := await store.retire_partitions([rule])).kind not in ("", "busy"):
            total += step.rows  # (the partitioned table: whole partitions first)
        while True:
            deleted = await store.prune(rule, limit=PRUNE_BATCH)
            total += deleted
            if deleted < PRUNE_BATCH:
                return total
    finally:
        await store.close()
