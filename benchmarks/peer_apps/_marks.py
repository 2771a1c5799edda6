"""The marker the drain brackets its no-op tasks with: a file per name holding time.time()."""

from __future__ import annotations

import os
import time
from pathlib import Path

TASK_NOOP = "bench.noop"
TASK_MARK = "bench.mark"


def write_mark(name: str) -> None:
    """Write the current time to PEERS_MARK_DIR/name, atomically (a reader never sees half)."""
    now = time.time()
    directory = Path(os.environ["PEERS_MARK_DIR"])
    partial = directory / f".{name}.{os.getpid()}"
    partial.write_text(f"{now:.6f}\n")
    os.replace(partial, directory / name)


def amqp_url() -> str:
    return os.environ.get("PEERS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def results() -> str | None:
    return os.environ.get("PEERS_RESULTS") or None


def results_name() -> str:
    return os.environ.get("PEERS_RESULTS_NAME", "peers_bench")


def variant() -> str:
    """PEERS_VARIANT: the configuration, where the app itself differs ('' for the default)."""
    return os.environ.get("PEERS_VARIANT", "")
