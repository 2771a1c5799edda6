"""The dashboard's JSON API and pages, in process (httpx over ASGI) on real RabbitMQ and
PostgreSQL: who may act, CSRF, filters and keyset pages, escaping, no secret in any page,
errors that say what is wrong, and mounting under a prefix. (tests/dashboard drives it in a
real browser against a real server.)"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from importlib import metadata
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

import taskq
import taskq.dashboard
from taskq.client.events import TaskEvent
from taskq.dashboard import stream
from tests.conftest import Backend
from tests.support import eventually

TOKEN = "api-test-token"
LATER = timedelta(hours=1)  # (tasks due this late wait `scheduled`: no worker needed)
BROKEN = {"api.charge"}  # tasks that fail while named here


def make_app(backend: Backend) -> taskq.App:
    app = backend.app()

    @app.task(name="api.echo")
    async def echo(text: str) -> str:
        return text

    @app.task(name="api.other")
    async def other(n: int) -> int:
        return n

    @app.task(name="api.charge", max_retries=0)
    async def charge(amount: int) -> int:
        if "api.charge" in BROKEN:
            raise RuntimeError("the card was declined")
        return amount

    return app


@pytest.fixture
async def app(production: Backend) -> AsyncIterator[taskq.App]:
    made = make_app(production)
    async with made:
        yield made


async def client_of(site: Starlette, base: str = "http://dash") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=site), base_url=base)


@pytest.fixture
async def dash(app: taskq.App) -> AsyncIterator[httpx.AsyncClient]:
    """The dashboard over `app`, with a token."""
    site = taskq.dashboard.create_app(app, token=TOKEN)
    async with await client_of(site) as client:
        yield client


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found, "the page has no CSRF field"
    return found.group(1)


async def sign_in(dash: httpx.AsyncClient) -> None:
    signed = await dash.post("/login", data={"token": TOKEN})
    assert signed.status_code == 303
    assert "taskq_session" in signed.headers["set-cookie"]
    assert "httponly" in signed.headers["set-cookie"].lower()
    assert "samesite=strict" in signed.headers["set-cookie"].lower()


async def test_actions_need_the_token_and_a_read_only_dashboard_refuses_them(
    app: taskq.App, dash: httpx.AsyncClient
) -> None:
    # Given a task waiting to run
    handle = await app.tasks["api.echo"].options(eta=datetime.now(UTC) + LATER).submit("x")
    cancel = f"/api/tasks/{handle.id}/cancel"

    # When cancel is asked without a token, or with a wrong one: 401, nothing changes
    refused = await dash.post(cancel)
    assert refused.status_code == 401
    assert refused.json() == {"error": "sign in, or send Authorization: Bearer <token>"}
    wrong = await dash.post(cancel, headers={"Authorization": "Bearer nope"})
    assert (wrong.status_code, wrong.headers["www-authenticate"]) == (401, "Bearer")
    assert await handle.status() is taskq.TaskStatus.SCHEDULED

    # And a dashboard started without a token refuses every action with 403, saying why
    read_only = taskq.dashboard.create_app(app)
    async with await client_of(read_only) as plain:
        for path in (cancel, f"/api/tasks/{handle.id}/retry", "/api/dlq/default/purge"):
            answer = await plain.post(path, headers={"Authorization": f"Bearer {TOKEN}"})
            assert answer.status_code == 403
            assert "read-only" in answer.json()["error"]
        page = await plain.get(f"/tasks/{handle.id}")
        assert "read-only" in page.text and 'name="csrf"' not in page.text
    assert await handle.status() is taskq.TaskStatus.SCHEDULED

    # When the right token is sent: the task is cancelled
    done = await dash.post(cancel, headers={"Authorization": f"Bearer {TOKEN}"})
    assert done.json() == {"task_id": handle.id, "cancelled": True}
    assert await handle.status() is taskq.TaskStatus.CANCELLED

    # And cancelling it again is a conflict that says why
    again = await dash.post(cancel, headers={"Authorization": f"Bearer {TOKEN}"})
    assert again.status_code == 409
    assert "already finished" in again.json()["error"]


async def test_a_browser_session_acts_only_with_the_pages_csrf_token(
    app: taskq.App, dash: httpx.AsyncClient
) -> None:
    later = app.tasks["api.echo"].options(eta=datetime.now(UTC) + LATER)
    handle = await later.submit("x")
    cancel = f"/api/tasks/{handle.id}/cancel"

    # A wrong token at the login form signs nobody in
    wrong = await dash.post("/login", data={"token": "guess"})
    assert wrong.status_code == 401 and "taskq_session" not in dash.cookies

    # Signed in, a post without the CSRF token, or with another, is refused
    await sign_in(dash)
    assert (await dash.post(cancel, data={"next": "/"})).status_code == 403
    forged = await dash.post(cancel, data={"csrf": "0" * 64, "next": "/"})
    assert forged.status_code == 403
    assert await handle.status() is taskq.TaskStatus.SCHEDULED

    # With the page's own token it cancels, and the browser goes back to the page
    page = await dash.get(f"/tasks/{handle.id}")
    token = csrf_of(page.text)
    done = await dash.post(cancel, data={"csrf": token, "next": f"/tasks/{handle.id}"})
    assert done.status_code == 303
    assert done.headers["location"] == f"/tasks/{handle.id}?done=cancelled+task+{handle.id}"
    assert await handle.status() is taskq.TaskStatus.CANCELLED
    shown = await dash.get(done.headers["location"])
    assert f"cancelled task {handle.id}" in shown.text

    # And `next` never sends the browser off the site
    other = await later.submit("y")
    away = await dash.post(
        f"/api/tasks/{other.id}/cancel", data={"csrf": token, "next": "//elsewhere.example/"}
    )
    assert away.headers["location"].startswith("/?done=")

    # Signing out ends the session: the same token no longer acts
    await dash.post("/logout")
    dash.cookies.clear()
    third = await later.submit("z")
    late = await dash.post(f"/api/tasks/{third.id}/cancel", data={"csrf": token, "next": "/"})
    assert late.status_code == 401
    assert await third.status() is taskq.TaskStatus.SCHEDULED


async def test_tasks_are_listed_newest_first_a_page_at_a_time_by_key(
    app: taskq.App, dash: httpx.AsyncClient
) -> None:
    # Given 7 echo tasks and 3 others
    eta = datetime.now(UTC) + LATER
    echoes = [await app.tasks["api.echo"].options(eta=eta).submit(str(n)) for n in range(7)]
    others = [await app.tasks["api.other"].options(eta=eta).submit(n) for n in range(3)]

    # When the echo tasks are read 3 at a time, following each page's mark
    seen: list[str] = []
    query: dict[str, Any] = {"name": "api.echo", "limit": 3}
    while True:
        page = (await dash.get("/api/tasks", params=query)).json()
        seen += [task["id"] for task in page["tasks"]]
        if page["next"] is None:
            break
        query["after"] = page["next"]

    # Then each comes once, newest first, and no other task
    assert seen == [handle.id for handle in reversed(echoes)]

    # And filters combine: state, queue, since; an unknown value matches nothing
    every = (await dash.get("/api/tasks", params={"state": "scheduled"})).json()["tasks"]
    assert {task["id"] for task in every} == {h.id for h in echoes + others}
    assert (await dash.get("/api/tasks", params={"queue": "nope"})).json()["tasks"] == []
    recent = await dash.get("/api/tasks", params={"since": "1h", "name": "api.other"})
    assert [task["id"] for task in recent.json()["tasks"]] == [h.id for h in reversed(others)]

    # And the page shows the same, with a link to the next page
    html = (await dash.get("/tasks", params={"name": "api.echo", "limit": 3})).text
    assert echoes[-1].id in html and echoes[0].id not in html
    assert 'rel="next"' in html and "after=" in html


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"state": "done"}, "state must be one of scheduled, queued, running"),
        ({"batch": "b1"}, "batch 'b1' is not a batch id (they are UUIDs)"),
        ({"limit": "0"}, "limit must be at least 1"),
        ({"limit": "ten"}, "limit must be a whole number"),
        ({"after": "yesterday"}, "is not a page mark"),
        ({"since": "soon"}, "or an ISO 8601 time"),
    ],
)
async def test_a_bad_filter_is_a_400_that_says_what_is_wrong(
    dash: httpx.AsyncClient, params: dict[str, str], says: str
) -> None:
    answer = await dash.get("/api/tasks", params=params)
    assert answer.status_code == 400
    assert says in answer.json()["error"]
    page = await dash.get("/tasks", params=params)
    assert page.status_code == 400 and says.split("'")[0] in page.text


async def test_a_task_shows_whole_and_every_value_is_escaped(
    app: taskq.App, dash: httpx.AsyncClient
) -> None:
    # Given a finished task whose argument and result are a script tag
    script = "<script>alert(1)</script>"
    async with app.worker():
        handle = await app.tasks["api.echo"].submit(script)
        assert await handle.result(timeout=10) == script

    # Then the API gives its values, attempts and headers
    found = (await dash.get(f"/api/tasks/{handle.id}")).json()
    assert (found["args"], found["result"], found["state"]) == ([script], script, "succeeded")
    assert [a["state"] for a in found["attempt_log"]] == ["succeeded"]

    # And its page shows the script as text, never as markup
    page = (await dash.get(f"/tasks/{handle.id}")).text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert script not in page
    csp = (await dash.get(f"/tasks/{handle.id}")).headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp

    # And an unknown or malformed id is a 404 that says so
    missing = await dash.get("/api/tasks/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404
    assert missing.json() == {"error": "no task 00000000-0000-0000-0000-000000000000 in this store"}
    assert (await dash.get("/tasks/not-an-id")).status_code == 404


async def test_no_page_shows_a_password(production: Backend, postgres_url: str) -> None:
    # Given a store URL with a password (trust auth ignores it) and a broker's
    secret = "hunter2-never-shown"
    store_url = postgres_url.replace("postgres@", f"postgres:{secret}@")
    app = make_app(Backend("production", production.broker_url, store_url))
    async with app:
        await app.tasks["api.echo"].options(eta=datetime.now(UTC) + LATER).submit("x")
        site = taskq.dashboard.create_app(app, token=TOKEN)
        async with await client_of(site) as dash:
            for path in ("/", "/tasks", "/queues", "/workers", "/schedules", "/dlq/default",
                         "/api/overview", "/api/tasks", "/api/queues", "/api/workers"):  # fmt: skip
                answer = await dash.get(path)
                assert answer.status_code == 200, (path, answer.text)
                assert secret not in answer.text and "guest:guest" not in answer.text, path

    # And when the store cannot be reached, the error names the host, not the password
    gone = taskq.App(production.broker_url, f"postgresql+asyncpg://u:{secret}@127.0.0.1:1/db")
    async with await client_of(taskq.dashboard.create_app(gone)) as dash:
        answer = await dash.get("/api/tasks")
        assert answer.status_code == 503
        assert "127.0.0.1" in answer.json()["error"] and secret not in answer.text


async def test_overview_queues_workflows_and_schedules(
    app: taskq.App, dash: httpx.AsyncClient
) -> None:
    # Given finished tasks, a waiting one, a workflow and a described schedule
    echo = app.tasks["api.echo"]
    async with app.worker():
        await app.gather([await echo.submit(str(n)) for n in range(3)], timeout=10)
        flow = await taskq.chain(echo.s("a"), app.tasks["api.other"].si(1)).submit()
        assert await flow.result(timeout=10) == 1
    await echo.options(eta=datetime.now(UTC) + LATER).submit("later")
    tick = datetime.now(UTC).replace(microsecond=0)
    await app.store.record_tick("api.hourly", tick)
    await app.store.describe_schedule(
        "api.hourly", task="api.echo", spec="every 1:00:00", timezone="UTC",
        next_tick=tick + LATER, ticked_at=None,
    )  # fmt: skip

    # Then the overview counts them by queue and state, and per minute
    overview = (await dash.get("/api/overview")).json()
    (default,) = overview["queues"]
    assert default["counts"] == {"succeeded": 5, "scheduled": 1}
    assert sum(row.get("succeeded", 0) for row in overview["per_minute"]) == 5
    assert "5" in (await dash.get("/")).text

    # And the workflow's steps come in order, each with what it waits for
    found = (await dash.get(f"/api/workflows/{flow.id}")).json()
    assert [(s["name"], s["parents"], s["state"]) for s in found["steps"]] == [
        ("api.echo", [], "succeeded"),
        ("api.other", [0], "succeeded"),
    ]
    assert (await dash.get(f"/workflows/{flow.id}")).status_code == 200
    assert (await dash.get(f"/workflows/{taskq.TaskStatus.QUEUED}")).status_code == 404

    # And the schedule shows as the leader described it, never ticked
    (schedule,) = (await dash.get("/api/schedules")).json()
    assert schedule == {
        "name": "api.hourly",
        "task": "api.echo",
        "spec": "every 1:00:00",
        "timezone": "UTC",
        "next_tick": (tick + LATER).isoformat(),
        "ticked_at": None,
    }
    assert "never" in (await dash.get("/schedules")).text

    # And the worker that ran them is listed, stopped, with its taskq version
    (worker,) = (await dash.get("/api/workers", params={"all": "1"})).json()
    assert (worker["state"], worker["version"]) == ("stopped", metadata.version("taskq"))
    assert (await dash.get("/api/workers")).json() == []

    # And the queues list the default queue with its broker figures
    (queue,) = (await dash.get("/api/queues")).json()
    assert (queue["queue"], queue["scheduled"], queue["dlq"]) == ("default", 1, 0)


async def test_a_failed_task_is_retried_and_a_succeeded_one_is_not(
    app: taskq.App, dash: httpx.AsyncClient
) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    async with app.worker():
        # Given a task that failed its only attempt
        BROKEN.add("api.charge")
        handle = await app.tasks["api.charge"].submit(5)
        with pytest.raises(taskq.TaskFailed):
            await handle.result(timeout=10)
        assert (await dash.get(f"/api/tasks/{handle.id}")).json()["dead_reason"] == "failed"

        # When it is retried once its cause is gone: it runs again and succeeds
        BROKEN.discard("api.charge")
        done = await dash.post(f"/api/tasks/{handle.id}/retry", headers=bearer)
        assert done.json() == {"task_id": handle.id, "retried": True}
        await eventually(handle.status, lambda s: s is taskq.TaskStatus.SUCCEEDED, what="rerun")
        assert [a["state"] for a in await handle.attempts()] == ["failed", "succeeded"]

        # And its dead letter went with the replay
        letters = (await dash.get("/api/dlq/default")).json()
        assert handle.id not in [letter["task_id"] for letter in letters]

    # But a task that succeeded is not run again
    again = await dash.post(f"/api/tasks/{handle.id}/retry", headers=bearer)
    assert again.status_code == 409
    assert "only a task that ended without succeeding" in again.json()["error"]


async def test_dead_letters_are_replayed_only_when_named_or_all(
    app: taskq.App, dash: httpx.AsyncClient
) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    answer = await dash.post("/api/dlq/default/replay", headers=bearer, json={})
    assert answer.status_code == 400
    assert answer.json() == {"error": 'give "ids": [task ids] or "all": true'}
    answer = await dash.post("/api/dlq/default/replay", headers=bearer, json={"all": True})
    assert answer.json() == {"queue": "default", "replayed": 0}
    bad = await dash.post("/api/dlq/no%20such/purge", headers=bearer)
    assert bad.status_code == 400


async def test_the_event_stream_says_ready_then_carries_the_tasks_events(
    app: taskq.App,
) -> None:
    # Given the stream of one task's events (as `GET /api/events?task=ID` serves it)
    handle = await app.tasks["api.echo"].options(eta=datetime.now(UTC) + LATER).submit("x")
    other = await app.tasks["api.echo"].options(eta=datetime.now(UTC) + LATER).submit("y")
    hub = stream.EventHub(app)
    listener = stream.Listener(task_id=handle.id)
    await hub.listen(listener)
    lines = stream.lines(hub, listener)
    assert await anext(lines) == "retry: 2000\n\n"
    assert await anext(lines) == "event: ready\ndata: {}\n\n"

    # When both tasks are cancelled, Then only its event arrives, as JSON
    reading = asyncio.ensure_future(anext(lines))
    await app.cancel_many([other.id, handle.id])
    line = await asyncio.wait_for(reading, 10)
    assert line.startswith("event: task\ndata: {")
    assert f'"task_id": "{handle.id}"' in line and '"state": "cancelled"' in line

    # And a stream that ends (the browser went) leaves the hub: nothing to await, nothing left
    await lines.aclose()
    assert listener not in hub._listeners
    await hub.close()


async def test_it_mounts_under_a_prefix(app: taskq.App) -> None:
    handle = await app.tasks["api.echo"].options(eta=datetime.now(UTC) + LATER).submit("x")
    site = Starlette(routes=[Mount("/ops/taskq", taskq.dashboard.create_app(app))])
    async with await client_of(site) as client:
        page = await client.get("/ops/taskq/tasks")
        assert page.status_code == 200
        assert f'href="/ops/taskq/tasks/{handle.id}"' in page.text
        assert 'src="/ops/taskq/static/dashboard.js"' in page.text
        assert (await client.get("/ops/taskq/static/dashboard.js")).status_code == 200
        missing = await client.get("/ops/taskq/api/tasks/00000000-0000-0000-0000-000000000000")
        assert missing.status_code == 404 and "error" in missing.json()
        found = await eventually(
            lambda: client.get("/ops/taskq/api/tasks", params={"state": "scheduled"}),
            lambda answer: answer.status_code == 200,
            what="the mounted API",
        )
        assert [task["id"] for task in found.json()["tasks"]] == [handle.id]


async def test_a_page_opened_after_a_progress_report_gets_it_at_once(app: taskq.App) -> None:
    # Given a report the hub saw (its row is written up to half a second later)
    hub = stream.EventHub(app)
    await hub.listen(stream.Listener())
    seen = TaskEvent(kind="progress", task_id="t-1", state=taskq.TaskStatus.RUNNING,
                     name="api.echo", queue="default", attempt=1, at=datetime.now(UTC),
                     progress=0.25, message="reading", seq=1)  # fmt: skip
    hub._remember(seen)

    # When the task's page opens its stream, Then the report comes first
    listener = stream.Listener(task_id="t-1")
    await hub.listen(listener)
    assert listener.arrived.get_nowait() == seen

    # And once the task has finished, a new page gets no stale progress
    hub._remember(dataclasses.replace(seen, kind="state", state=taskq.TaskStatus.SUCCEEDED))
    late = stream.Listener(task_id="t-1")
    await hub.listen(late)
    assert late.arrived.empty()
    await hub.close()
