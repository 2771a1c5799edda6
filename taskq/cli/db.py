"""`taskq db upgrade|current`: the schema, through alembic's API."""

from __future__ import annotations

import typer

from taskq.cli.common import StoreUrl, out, run, store_url_from
from taskq.store import engine as engines
from taskq.store import migrations

app = typer.Typer(help="Manage the task store's schema.", no_args_is_help=True)


@app.command()
def upgrade(store_url: StoreUrl = None, revision: str = "head") -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    url = store_url_from(store_url)
    run(migrations.upgrade_database(url, revision))
    now = run(migrations.database_revision(url))
    out().print(f"database {engines.shown(engines.parse_url(url))} is at revision {now}")


@app.command()
def current(store_url: StoreUrl = None) -> None:
    """Show the database's schema revision and the newest this taskq knows."""
    revision = run(migrations.database_revision(store_url_from(store_url)))
    out().print(f"database: {revision or 'none'}\nnewest:   {migrations.head()}")
