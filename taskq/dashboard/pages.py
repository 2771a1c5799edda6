"""The pages (server-rendered; they work without JavaScript, and dashboard.js keeps their
live parts current from /api/events), and signing in and out."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from taskq.dashboard import reads
from taskq.dashboard.access import SESSION_COOKIE, form_of
from taskq.dashboard.errors import NotFound
from taskq.dashboard.state import dashboard_of
from taskq.dashboard.templating import HERE, render
from taskq.status import TaskStatus

CHART_MINUTES = 60
CHART_HEIGHT = 80


def routes() -> list[Route | Mount]:
    return [
        Route("/", overview),
        Route("/tasks", tasks),
        Route("/tasks/{task_id}", task),
        Route("/queues", queues),
        Route("/workers", workers),
        Route("/dlq/{queue}", dead_letters),
        Route("/schedules", schedules),
        Route("/workflows/{workflow_id}", workflow),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]


async def overview(request: Request) -> Response:
    data = await reads.overview(await dashboard_of(request).client())
    states = [state.value for state in TaskStatus]
    return render(request, "overview.html", data=data, states=states, chart=_chart(data))


def _chart(data: dict[str, Any]) -> dict[str, Any]:
    """Bars of tasks finished per minute over the hour: succeeded, and the rest on top."""
    since = datetime.fromisoformat(data["since"]).replace(second=0, microsecond=0)
    slots: list[dict[str, Any]] = [
        {"minute": since + timedelta(minutes=n), "ok": 0, "bad": 0}
        for n in range(CHART_MINUTES + 1)
    ]
    for row in data["per_minute"]:
        n = int((datetime.fromisoformat(row["minute"]) - since).total_seconds() // 60)
        if 0 <= n < len(slots):
            slots[n]["ok"] += row.get("succeeded", 0)
            slots[n]["bad"] += sum(v for k, v in row.items() if k not in ("minute", "succeeded"))
    top = max((slot["ok"] + slot["bad"] for slot in slots), default=0) or 1
    for slot in slots:
        slot["ok_height"] = round(slot["ok"] / top * CHART_HEIGHT, 1)
        slot["bad_height"] = round(slot["bad"] / top * CHART_HEIGHT, 1)
    finished = sum(slot["ok"] + slot["bad"] for slot in slots)
    failed = sum(slot["bad"] for slot in slots)
    return {"slots": slots, "top": top, "height": CHART_HEIGHT, "finished": finished,
            "failed": failed}  # fmt: skip


async def tasks(request: Request) -> Response:
    params = request.query_params
    app = await dashboard_of(request).client()
    if wanted := (params.get("id") or "").strip():
        found = await reads.task_ids_starting(app, wanted)
        if len(found) == 1:
            return RedirectResponse(f"{request.scope.get('root_path', '')}/tasks/{found[0]}", 303)
        message = f"no task id starts with {wanted!r}" if not found else None
        return render(request, "search.html", wanted=wanted, found=found, message=message)
    query = reads.TaskQuery.of(params, params.getlist("state"))
    page = await reads.list_tasks(app, query)
    next_link = None
    if page["next"]:
        next_link = "?" + urlencode(query.params(after=page["next"]), doseq=True)
    first_link = "?" + urlencode(query.params(after=None), doseq=True) if query.after else None
    return render(
        request,
        "tasks.html",
        page=page,
        query=query,
        states=[state.value for state in TaskStatus],
        chosen={state.value for state in query.states},
        next_link=next_link,
        first_link=first_link,
    )


async def task(request: Request) -> Response:
    task_id = request.path_params["task_id"]
    found = await reads.task_detail(await dashboard_of(request).client(), task_id)
    if found is None:
        raise NotFound(f"no task {task_id} in this store")
    final = TaskStatus(found["state"]).is_final
    retryable = final and found["state"] != TaskStatus.SUCCEEDED.value
    return render(request, "task.html", task=found, final=final, retryable=retryable)


async def queues(request: Request) -> Response:
    rows = await reads.queues(await dashboard_of(request).client())
    return render(request, "queues.html", rows=rows)


async def workers(request: Request) -> Response:
    stopped = request.query_params.get("all") in ("1", "true")
    rows = await reads.workers(await dashboard_of(request).client(), include_stopped=stopped)
    return render(request, "workers.html", rows=rows, include_stopped=stopped)


async def dead_letters(request: Request) -> Response:
    queue = request.path_params["queue"]
    letters = await reads.dead_letters(await dashboard_of(request).client(), queue)
    return render(request, "dlq.html", queue=queue, letters=letters)


async def schedules(request: Request) -> Response:
    rows = await reads.schedules(await dashboard_of(request).client())
    return render(request, "schedules.html", rows=rows)


async def workflow(request: Request) -> Response:
    workflow_id = request.path_params["workflow_id"]
    found = await reads.workflow(await dashboard_of(request).client(), workflow_id)
    if found is None:
        raise NotFound(f"no workflow {workflow_id} in this store")
    return render(request, "workflow.html", workflow=found, levels=_levels(found["steps"]))


def _levels(steps: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Steps by depth: those that wait for nothing first, then those that wait only for
    earlier levels (a workflow's graph, read top to bottom)."""
    depth: dict[int, int] = {}
    for step in steps:  # (in step order: a step's parents come before it)
        depth[step["step"]] = 1 + max((depth.get(p, 0) for p in step["parents"]), default=-1)
    levels: list[list[dict[str, Any]]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for step in steps:
        levels[depth[step["step"]]].append(step)
    return levels


# -- signing in -------------------------------------------------------------------------------


async def login_form(request: Request) -> Response:
    return render(request, "login.html", wrong=False)


async def login(request: Request) -> Response:
    access = dashboard_of(request).access
    given = (await form_of(request)).get("token") or [""]
    if access.read_only or not access.token_matches(given[0]):
        return render(request, "login.html", status=401, wrong=True)
    root = request.scope.get("root_path", "")
    response = RedirectResponse(f"{root}/", 303)
    response.set_cookie(
        SESSION_COOKIE,
        access.new_session(),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path=root or "/",
    )
    return response


async def logout(request: Request) -> Response:
    root = request.scope.get("root_path", "")
    response = RedirectResponse(f"{root}/", 303)
    response.delete_cookie(SESSION_COOKIE, path=root or "/")
    return response
