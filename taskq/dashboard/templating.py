"""Server-rendered pages: Jinja2 with every value escaped, and what every page shows
(the navigation, whether one may act, the CSRF token its forms carry)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from taskq.dashboard.access import CSRF_FIELD, READ_ONLY
from taskq.dashboard.state import dashboard_of

HERE = Path(__file__).parent

_environment = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _shown_time(value: str | datetime | None) -> str:
    """An ISO time as `2026-12-05 10:30:00.123` UTC."""
    if value is None:
        return ""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _took(start: str | None, end: str | None) -> str:
    if not start or not end:
        return ""
    seconds = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    return f"{seconds:.3f} s"


def _pretty(value: Any) -> str:
    """A task value as stored (tagged JSON), indented; escaped by the template like any text."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


_environment.filters["time"] = _shown_time
_environment.filters["pretty"] = _pretty
_environment.globals["took"] = _took


def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    access = dashboard_of(request).access
    page = _environment.get_template(name).render(
        request=request,
        path=request.url.path,
        here=str(request.url.path) + (f"?{request.url.query}" if request.url.query else ""),
        root=request.scope.get("root_path", ""),
        read_only=access.read_only,
        read_only_reason=READ_ONLY,
        signed_in=access.signed_in(request),
        csrf=access.csrf_token(request),
        csrf_field=CSRF_FIELD,
        done=request.query_params.get("done"),
        **context,
    )
    return HTMLResponse(page, status_code=status, headers={"Cache-Control": "no-store"})
