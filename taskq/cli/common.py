"""What the commands share: loading the user's app, options, and error reporting."""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from collections.abc import Coroutine
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from taskq.app import App
from taskq.exceptions import TaskqError

T = TypeVar("T")

err = Console(stderr=True)

StoreUrl = Annotated[
    str | None,
    typer.Option(
        "--store-url",
        envvar="TASKQ_STORE_URL",
        help="Database URL (default: the embedded SQLite file).",
        show_default=False,
    ),
]


def load_app(spec: str) -> App:
    """Import `module:attribute` (attribute defaults to `app`), as uvicorn does."""
    module_name, _, attribute = spec.partition(":")
    attribute = attribute or "app"
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        fail(f"cannot import {module_name!r} (from APP {spec!r}): {exc}")
    found = getattr(module, attribute, None)
    if not isinstance(found, App):
        candidates = [name for name, value in vars(module).items() if isinstance(value, App)]
        hint = f"; taskq apps in it: {', '.join(candidates)}" if candidates else ""
        fail(f"{module_name}.{attribute} is not a taskq.App{hint}")
    return found


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; a TaskqError becomes one red line and exit code 1."""
    try:
        return asyncio.run(coroutine)
    except TaskqError as exc:
        fail(str(exc))


def fail(message: str) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", highlight=False, markup=True)
    raise typer.Exit(1)
