"""`python -m taskq` is the `taskq` command."""

from __future__ import annotations

from taskq.cli import main

main()
