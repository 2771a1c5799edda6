"""`taskq db upgrade|current`: the schema, through alembic's API."""

from __future__ import annotations

import typer

from taskq.cli.common import StoreUrl, out, run, settings_from
from taskq.store import engine as engines
from taskq.store import migrations

app = typer.Typer(help="Manage the task store's schema.", no_args_is_help=True)


@app.command()
def upgrade(store_url: StoreUrl = None, revision: str = "head") -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    settings = settings_from(store_url=store_url)
    url, namespace = settings.store_url, settings.namespace
    run(migrations.upgrade_database(url, revision, namespace))
    now = run(migrations.database_revision(url, namespace))
    where = f" (namespace {namespace})" if namespace else ""
    out().print(f"database {engines.shown(engines.parse_url(url))}{where} is at revision {now}")


@app.command()
def current(store_url: StoreUrl = None) -> None:
    """Show the database's schema revision and the newest this taskq knows."""
    settings = settings_from(store_url=store_url)
    revision = run(migrations.database_revision(settings.store_url, settings.namespace))
    out().print(f"database: {revision or 'none'}\nnewest:   {migrations.head()}")
