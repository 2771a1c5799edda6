"""What a request that cannot be answered gets: JSON under /api/, a page elsewhere; always
a message that says what is wrong (never a URL's password: taskq's errors redact them)."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from taskq.dashboard.actions import Refused
from taskq.dashboard.reads import BadQuery
from taskq.dashboard.templating import render
from taskq.exceptions import ConfigurationError, TaskqError

logger = logging.getLogger(__name__)


class NotFound(Exception):
    """No such task, workflow or page (a 404 with this message)."""


def handlers() -> dict[type[Exception] | int, object]:
    return {
        NotFound: _answer(404),
        BadQuery: _answer(400),
        ConfigurationError: _answer(400),
        Refused: _answer(409),
        TaskqError: _answer(503),
        HTTPException: _http,
    }


def _answer(status: int) -> object:
    async def answer(request: Request, exc: Exception) -> Response:
        if status == 503:
            logger.warning("dashboard: %s %s: %s", request.method, request.url.path, exc)
        return _error(request, status, str(exc))

    return answer


async def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    response = _error(request, exc.status_code, str(exc.detail))
    response.headers.update(exc.headers or {})
    return response


def _error(request: Request, status: int, message: str) -> Response:
    if request.url.path.startswith(request.scope.get("root_path", "") + "/api/"):
        return JSONResponse({"error": message}, status_code=status)
    return render(request, "error.html", status=status, status_code=status, message=message)
