"""The web dashboard (`pip install 'taskq[dashboard]'`): `taskq dashboard`, or
`taskq.dashboard.create_app()` mounted in your own ASGI app. See docs/dashboard.md."""

from __future__ import annotations

from taskq.dashboard.app import create_app

__all__ = ["create_app"]
