"""`taskq db upgrade|current`: the schema, through alembic's API."""

from __future__ import annotations

from typing import Annotated

import typer

from taskq.cli.common import StoreUrl, out, run, settings_from
from taskq.store import engine as engines
from taskq.store import migrations

app = typer.Typer(help="Manage the task store's schema.", no_args_is_help=True)


@app.command()
def upgrade(
    store_url: StoreUrl = None,
    revision: str = "head",
    partitioned: Annotated[
        bool,
        typer.Option(
            "--partitioned",
            help="Then make taskq_tasks partitioned by created_at (PostgreSQL; retention "
            "drops whole partitions). An existing table becomes its first partition.",
        ),
    ] = False,
    days: Annotated[
        int, typer.Option("--days", min=1, max=366, help="Days a partition spans.")
    ] = 7,
) -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    settings = settings_from(store_url=store_url)
    url, namespace = settings.store_url, settings.namespace
    done = run(
        migrations.upgrade_database(
            url, revision, namespace, partitioned=days if partitioned else 0
        )
    )
    now = run(migrations.database_revision(url, namespace))
    where = f" (namespace {namespace})" if namespace else ""
    out().print(f"database {engines.shown(engines.parse_url(url))}{where} is at revision {now}")
    if done:
        out().print(done)


@app.command()
def current(store_url: StoreUrl = None) -> None:
    """Show the database's schema revision and the newest this taskq knows."""
    settings = settings_from(store_url=store_url)
    revision = run(migrations.database_revision(settings.store_url, settings.namespace))
    out().print(f"database: {revision or 'none'}\nnewest:   {migrations.head()}")
