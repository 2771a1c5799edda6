"""What the commands share: loading the user's app, options, and error reporting."""

from __future__ import annotations

import functools
import sys
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from taskq import reporting, worker_entry
from taskq.app import App
from taskq.broker import Broker, from_settings
from taskq.config import Settings
from taskq.exceptions import TaskqError
from taskq.store import Store

if TYPE_CHECKING:
    from rich.console import Console

T = TypeVar("T")


# rich is imported on first output, not at start: `taskq worker` prints nothing through it,
# and rich is 1.5 MB of every worker's memory.


@functools.cache
def out() -> Console:
    """Standard output's console. Piped output is not cut to 80 columns: ids and names stay
    whole for grep and awk."""
    from rich.console import Console

    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def escape(text: str) -> str:
    """`text` with rich markup escaped."""
    from rich.markup import escape as escaped

    return escaped(text)


AppSpec = Annotated[
    str,
    typer.Argument(envvar="TASKQ_APP", help="Your app, as module:attribute (e.g. proj.tasks:app)."),
]

StoreUrl = Annotated[
    str | None,
    typer.Option(
        "--store-url",
        envvar="TASKQ_STORE_URL",
        help="Database URL; prefer the environment (TASKQ_STORE_URL or TASKQ_STORE_URL_FILE) "
        "so the password stays out of `ps`. Default: the embedded SQLite file.",
        show_default=False,
    ),
]


BrokerUrl = Annotated[
    str | None,
    typer.Option(
        "--broker-url",
        envvar="TASKQ_BROKER_URL",
        help="Broker URL; prefer the environment (TASKQ_BROKER_URL or TASKQ_BROKER_URL_FILE) "
        "so the password stays out of `ps`.",
        show_default=False,
    ),
]


def settings_from(*, broker_url: str | None = None, store_url: str | None = None) -> Settings:
    """The options given, else the environment, else the embedded defaults."""
    try:
        return Settings.load(broker_url=broker_url, store_url=store_url)
    except TaskqError as exc:
        fail(str(exc))


def store_from(option: str | None) -> Store:
    """The store of --store-url, else TASKQ_STORE_URL or TASKQ_STORE_URL_FILE, else the
    embedded default; in TASKQ_NAMESPACE's namespace. (Not opened.)"""
    settings = settings_from(store_url=option)
    return Store(settings.store_url, settings.namespace)


def broker_from(settings: Settings) -> Broker:
    """The broker of `settings`, in its namespace. (Not connected.)"""
    return from_settings(settings, publish_timeout=5.0)


def load_app(spec: str) -> App:
    """Import `module:attribute` (attribute defaults to `app`), as uvicorn does."""
    try:
        return worker_entry.load_app(spec)
    except TaskqError as exc:
        fail(str(exc))


# `taskq --debug`: errors come with their traceback instead of one line.
debug = False


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; an error becomes one red line and exit code 1 (with
    `taskq --debug`, its traceback)."""
    return reporting.run(coroutine, debug=debug)


fail = reporting.fail


MIN_ID_PREFIX = 6
_HEX = frozenset("0123456789abcdef-")


async def full_task_id(store: Store, given: str) -> str:
    """The id of the one task whose id starts with `given` (a whole id, or its first few
    characters, as `taskq tasks` shows them); a TaskqError that says what is wrong else."""
    text = given.strip().lower()
    if len(text) == 36 or not set(text) <= _HEX:
        return given  # (a whole id, or not an id at all: the lookup says so)
    if len(text.replace("-", "")) < MIN_ID_PREFIX:
        raise TaskqError(f"{given!r} is too short: give at least {MIN_ID_PREFIX} characters")
    found = await store.ids_starting_with(text, limit=3)
    if not found:
        raise TaskqError(f"no task id starts with {given!r} in this store")
    if len(found) > 1:
        raise TaskqError(f"{given!r} starts several task ids ({', '.join(found)}, ...): "
                         "give more characters")  # fmt: skip
    return found[0]
