"""One-line errors for commands (the `taskq` command line and the worker process it
becomes): a failure is one red line on stderr and exit code 1; `--debug` shows the
traceback instead. rich is imported only when there is something to print (1.5 MB)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, NoReturn, TypeVar

from taskq.exceptions import TaskqError

T = TypeVar("T")


def fail(message: str) -> NoReturn:
    """Print `message` as one red error line (soft-wrapped: one greppable line in logs), and
    exit with code 1."""
    from rich.console import Console
    from rich.markup import escape

    console = Console(stderr=True, soft_wrap=True)
    console.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    raise SystemExit(1)


def run(coroutine: Coroutine[Any, Any, T], *, debug: bool) -> T:
    """`asyncio.run(coroutine)`; an error becomes `fail(...)`, or with `debug` is raised."""
    try:
        return asyncio.run(coroutine)
    except TaskqError as exc:
        if debug:
            raise
        fail(str(exc))
    except Exception as exc:
        if debug:
            raise
        fail(f"{type(exc).__name__}: {exc} (`taskq --debug ...` shows the traceback)")
