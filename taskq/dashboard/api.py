"""The JSON API under /api/ (docs/dashboard.md): the pages' data, the event stream, and the
actions, which API clients call with `Authorization: Bearer <token>` and the pages' forms
with their session and CSRF token (then the answer is a redirect back to the page)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from taskq.app import App
from taskq.dashboard import actions, reads
from taskq.dashboard.access import form_of
from taskq.dashboard.errors import NotFound
from taskq.dashboard.state import dashboard_of
from taskq.dashboard.stream import event_stream


def routes() -> list[Route]:
    read = [
        ("/api/overview", overview),
        ("/api/tasks", tasks),
        ("/api/tasks/{task_id}", task),
        ("/api/queues", queues),
        ("/api/workers", workers),
        ("/api/dlq/{queue}", dead_letters),
        ("/api/schedules", schedules),
        ("/api/workflows/{workflow_id}", workflow),
        ("/api/events", events),
    ]
    act = [
        ("/api/tasks/{task_id}/cancel", cancel),
        ("/api/tasks/{task_id}/retry", retry),
        ("/api/dlq/{queue}/replay", replay),
        ("/api/dlq/{queue}/purge", purge),
    ]
    return [Route(path, endpoint, methods=["GET"]) for path, endpoint in read] + [
        Route(path, endpoint, methods=["POST"]) for path, endpoint in act
    ]


def _json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status, headers={"Cache-Control": "no-store"})


async def overview(request: Request) -> Response:
    return _json(await reads.overview(await dashboard_of(request).client()))


async def tasks(request: Request) -> Response:
    params = request.query_params
    query = reads.TaskQuery.of(params, params.getlist("state"))
    return _json(await reads.list_tasks(await dashboard_of(request).client(), query))


async def task(request: Request) -> Response:
    task_id = request.path_params["task_id"]
    found = await reads.task_detail(await dashboard_of(request).client(), task_id)
    if found is None:
        raise NotFound(f"no task {task_id} in this store")
    return _json(found)


async def queues(request: Request) -> Response:
    return _json(await reads.queues(await dashboard_of(request).client()))


async def workers(request: Request) -> Response:
    stopped = request.query_params.get("all") in ("1", "true")
    return _json(await reads.workers(await dashboard_of(request).client(), include_stopped=stopped))


async def dead_letters(request: Request) -> Response:
    app = await dashboard_of(request).client()
    return _json(await reads.dead_letters(app, request.path_params["queue"]))


async def schedules(request: Request) -> Response:
    return _json(await reads.schedules(await dashboard_of(request).client()))


async def workflow(request: Request) -> Response:
    workflow_id = request.path_params["workflow_id"]
    found = await reads.workflow(await dashboard_of(request).client(), workflow_id)
    if found is None:
        raise NotFound(f"no workflow {workflow_id} in this store")
    return _json(found)


async def events(request: Request) -> Response:
    dashboard = dashboard_of(request)
    await dashboard.client()
    return await event_stream(dashboard.events, request)


# -- actions ----------------------------------------------------------------------------------

Action = Callable[[App, dict[str, Any]], Awaitable[dict[str, object]]]


async def cancel(request: Request) -> Response:
    task_id = request.path_params["task_id"]
    return await _act(request, lambda app, _: actions.cancel(app, task_id))


async def retry(request: Request) -> Response:
    task_id = request.path_params["task_id"]
    return await _act(request, lambda app, _: actions.retry(app, task_id))


async def replay(request: Request) -> Response:
    queue = request.path_params["queue"]

    async def replayed(app: App, given: dict[str, Any]) -> dict[str, object]:
        ids = given.get("ids")
        if isinstance(ids, str):
            ids = [ids]
        if given.get("all") in (True, "1", "true") and not ids:
            return await actions.replay(app, queue, None)
        if not ids or not all(isinstance(one, str) for one in ids):
            raise reads.BadQuery('give "ids": [task ids] or "all": true')
        return await actions.replay(app, queue, ids)

    return await _act(request, replayed)


async def purge(request: Request) -> Response:
    queue = request.path_params["queue"]
    return await _act(request, lambda app, _: actions.purge(app, queue))


async def _act(request: Request, action: Action) -> Response:
    """Authorise, run, and answer: JSON to an API client, a redirect back to a browser."""
    dashboard = dashboard_of(request)
    await dashboard.access.check(request)
    from_page = "authorization" not in request.headers
    given = await _given(request, from_page)
    done = await action(await dashboard.client(), given)
    if not from_page:
        return _json(done)
    back = str(given.get("next") or "/")
    if not back.startswith("/") or back.startswith("//"):
        back = "/"  # (never a redirect off this site)
    separator = "&" if "?" in back else "?"
    return RedirectResponse(f"{back}{separator}{urlencode({'done': _said(done)})}", 303)


async def _given(request: Request, from_page: bool) -> dict[str, Any]:
    if from_page:
        form = await form_of(request)
        found: dict[str, Any] = {key: values[0] for key, values in form.items()}
        if "ids" in form:
            found["ids"] = form["ids"]
        return found
    body = await request.body()
    if not body:
        return {}
    try:
        given = json.loads(body)
    except ValueError:
        raise reads.BadQuery("the body is not JSON") from None
    if not isinstance(given, dict):
        raise reads.BadQuery("the body must be a JSON object")
    return given


def _said(done: dict[str, object]) -> str:
    if "purged" in done:
        return f"purged {done['purged']} dead letter(s) of {done['queue']}"
    if "replayed" in done:
        return f"replayed {done['replayed']} dead letter(s) of {done['queue']}"
    verb = "cancelled" if "cancelled" in done else "retried"
    return f"{verb} task {done['task_id']}"
