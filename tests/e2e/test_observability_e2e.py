"""Observability end to end on RabbitMQ + PostgreSQL: `/metrics` of a worker pool, JSON logs,
and the fleet views `taskq queues`, `taskq workers` and `taskq tasks`.

Workers are real `taskq worker tests.e2e.obs_app:app` subprocesses on a fresh vhost and
database; the CLIs run as `python -m taskq ...` subprocesses. Every wait polls an HTTP
scrape, a CLI, the database or a log file, with a deadline.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import socket
import uuid
from typing import Any

import pytest

import taskq
from tests.conftest import Backend
from tests.e2e import obs_app
from tests.e2e.processes import (
    Workers,
    cli_env,
    json_values,
    run_cli,
    sql,
    wait_until,
)
from tests.prometheus_text import Exposition, parse

logger = logging.getLogger(__name__)  # figures the issues ask to see: pytest -o log_cli=true

OBS_APP = "tests.e2e.obs_app:app"
GRACE = 10.0  # teardown's wait after SIGTERM: the tasks here are short
TASKS = 100
WORK = 0.02  # seconds each child task sleeps
CHILD = {"taskq_task_name": "obs.child", "messaging_destination_name": "default"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get(port: int, path: str) -> tuple[int, str, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read().decode()
        return response.status, response.getheader("Content-Type") or "", body
    finally:
        connection.close()


async def scrape(port: int) -> Exposition:
    """GET http://127.0.0.1:PORT/metrics, parsed (it must be 200 and well-formed)."""
    status, content_type, body = await asyncio.to_thread(_get, port, "/metrics")
    assert status == 200, body
    assert content_type.startswith("text/plain"), content_type
    return parse(body)


def count_of(exposition: Exposition, name: str, **labels: str) -> float:
    return exposition.value(name, **labels) or 0.0


async def test_metrics_port_of_a_two_process_worker_counts_the_tasks_of_both(
    production: Backend, workers: Workers
) -> None:
    # Given `taskq worker --processes 2 --concurrency 2 --metrics-port PORT`
    port = free_port()
    obs = obs_app.build(production.broker_url, production.store_url)
    supervisor = await workers.start(
        concurrency=2,
        processes=2,
        app=OBS_APP,
        options=["--metrics-port", str(port)],
        grace=GRACE,
    )
    children = supervisor.children()
    assert len(children) == 2, children

    # When a task inside the worker submits 100 tasks of 20 ms, and they all run
    async with obs.app:
        fan_out = await obs.fan_out.submit(TASKS, WORK)
        batch_id = await fan_out.result(timeout=30)

    # Then one scrape of the supervisor shows them all, once both processes' counts are in
    succeeded = {**CHILD, "taskq_task_outcome": "succeeded"}
    latest: list[Exposition] = []

    async def counted() -> bool:
        latest[:] = [await scrape(port)]
        return count_of(latest[0], "taskq_task_duration_seconds_count", **succeeded) >= TASKS

    await wait_until(counted, within=60, what=f"{TASKS} succeeded durations on /metrics")
    exposition = latest[0]
    assert exposition.value("taskq_tasks_submitted_total", **CHILD) == TASKS
    assert exposition.value("taskq_task_duration_seconds_count", **succeeded) == TASKS
    assert exposition.types["taskq_tasks_submitted_total"] == "counter"
    assert exposition.types["taskq_task_duration_seconds"] == "histogram"
    # And the duration histogram is cumulative, every task in the +Inf bucket, none under 10 ms
    buckets = exposition.buckets("taskq_task_duration_seconds", **succeeded)
    counts = [count for _, count in buckets]
    assert counts == sorted(counts), buckets
    assert buckets[-1] == (float("inf"), TASKS)
    assert dict(buckets)[0.01] == 0, buckets
    assert count_of(exposition, "taskq_task_duration_seconds_sum", **succeeded) >= TASKS * WORK
    # And every child task's first attempt has a queue time; none runs any longer
    assert exposition.value("taskq_task_queue_time_seconds_count", **CHILD) == TASKS
    assert exposition.value("taskq_tasks_active", **CHILD) == 0

    # And the rows show that both processes ran some of them (so the sum spans both)
    rows = await sql(
        production.store_url,
        "SELECT t.worker_id, w.pid, count(*) AS n FROM taskq_tasks t "
        "JOIN taskq_workers w ON w.id = t.worker_id "
        f"WHERE t.batch_id = '{batch_id}' AND t.state = 'succeeded' GROUP BY t.worker_id, w.pid",
    )
    ran = {row["pid"]: row["n"] for row in rows}
    logger.info(f"tasks per child process: {ran}")
    assert sorted(ran) == sorted(children), (ran, children)
    assert sum(ran.values()) == TASKS


async def test_metrics_keep_the_counts_of_children_replaced_after_max_tasks(
    production: Backend, workers: Workers
) -> None:
    # Given a one-process pool whose child is replaced after every 5 tasks, serving /metrics
    port = free_port()
    obs = obs_app.build(production.broker_url, production.store_url)
    supervisor = await workers.start(
        concurrency=1,
        app=OBS_APP,
        options=["--max-tasks-per-child", "5", "--metrics-port", str(port)],
        grace=GRACE,
    )

    # When 12 tasks run (on three children one after another)
    async with obs.app:
        handles = [await obs.child.submit(0.0) for _ in range(12)]
        await asyncio.gather(*(h.result(timeout=30) for h in handles))
    assert supervisor.output().count("reached its limit: replacing it") >= 2

    # Then /metrics counts all 12, those of the children gone included
    succeeded = {**CHILD, "taskq_task_outcome": "succeeded"}
    latest: list[Exposition] = []

    async def all_counted() -> bool:
        latest[:] = [await scrape(port)]
        return count_of(latest[0], "taskq_task_duration_seconds_count", **succeeded) >= 12

    await wait_until(all_counted, within=30, what="12 succeeded durations on /metrics")
    assert latest[0].value("taskq_task_duration_seconds_count", **succeeded) == 12
    assert latest[0].buckets("taskq_task_duration_seconds", **succeeded)[-1] == (
        float("inf"),
        12,
    )


async def test_json_log_lines_carry_the_fields_of_the_task_they_are_about(
    production: Backend, workers: Workers
) -> None:
    # Given `taskq worker --log-format json`
    obs = obs_app.build(production.broker_url, production.store_url)
    worker = await workers.start(
        concurrency=2, app=OBS_APP, options=["--log-format", "json"], grace=GRACE
    )
    marker = f"marker-{uuid.uuid4().hex[:8]}"

    # When a task logs a line from its own code
    async with obs.app:
        handle = await obs.chatty.submit(marker)
        await handle.result(timeout=30)

    def lines() -> list[dict[str, Any]]:
        """Every line of the worker's output, each of which must be a JSON object."""
        parsed = []
        for line in worker.output().splitlines():
            if line.strip():
                value = json.loads(line)
                assert isinstance(value, dict), line
                parsed.append(value)
        return parsed

    async def logged() -> bool:
        said = any(line.get("logger") == obs_app.TASK_LOGGER for line in lines())
        done = any(line.get("action") == "task_done" for line in lines())
        return said and done

    await wait_until(logged, within=15, what="the task's log line and its task_done line")

    # Then every line is a JSON object with time, level, logger and message
    parsed = lines()
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in parsed), parsed
    # And the task's own line carries the task's id, name, attempt and queue
    (said,) = [line for line in parsed if line["logger"] == obs_app.TASK_LOGGER]
    assert said["message"] == f"the task says {marker}"
    assert said["level"] == "INFO"
    fields = {key: said.get(key) for key in ("task_id", "task_name", "attempt", "queue")}
    assert fields == {
        "task_id": handle.id,
        "task_name": "obs.chatty",
        "attempt": 1,
        "queue": "default",
    }
    # And so does taskq's own line saying how the task ended
    (done,) = [line for line in parsed if line.get("action") == "task_done"]
    assert {key: done.get(key) for key in fields} == fields


def _queue_rows(out: str) -> dict[str, dict[str, Any]]:
    return {row["queue"]: row for row in json_values(out)}


async def test_queues_workers_and_tasks_views_show_the_right_numbers(
    production: Backend, workers: Workers
) -> None:
    obs = obs_app.build(production.broker_url, production.store_url)
    env = cli_env(
        TASKQ_BROKER_URL=production.broker_url,
        TASKQ_STORE_URL=production.store_url,
        COLUMNS="250",  # the table forms: room for whole ids
    )

    async def cli(*argv: str) -> str:
        code, out, err = await run_cli(*argv, env=env)
        assert code == 0, f"taskq {' '.join(argv)} exited {code}:\n{out}\n{err}"
        return out

    async with obs.app:
        # Given 5 tasks submitted to queue `reports` while no worker runs
        handles = [await obs.report.submit(n) for n in range(5)]
        ids = {handle.id for handle in handles}

        # Then `taskq queues --queue reports --json` shows them ready, and no dead letters
        waiting: dict[str, Any] = {}

        async def five_ready() -> bool:
            waiting.update(_queue_rows(await cli("queues", "--queue", "reports", "--json")))
            return bool(waiting["reports"]["ready"] == 5)

        await wait_until(five_ready, within=15, what="5 ready messages in `taskq queues`")
        assert waiting == {
            "reports": {
                "queue": "reports",
                "ready": 5,
                "unacked": 0,
                "consumers": 0,
                "dlq": 0,
                "running": 0,
                "scheduled": 0,
                "waiting_for_tags": None,
            }
        }
        # And the table form names the queue
        assert "reports" in await cli("queues", "--queue", "reports")

        # When a worker runs them, and a task that fails for good
        worker = await workers.start(concurrency=2, app=OBS_APP, grace=GRACE)
        assert sorted(await asyncio.gather(*(h.result(timeout=30) for h in handles))) == [
            0,
            1,
            2,
            3,
            4,
        ]
        failing = await obs.doomed.submit()
        with pytest.raises(taskq.TaskFailed):
            await failing.result(timeout=30)

    # Then `taskq queues --json` (the queues of the registered workers) shows 1 dead letter
    # in `reports`, nothing ready there, and the worker consuming both queues
    shown: dict[str, Any] = {}

    async def one_dead() -> bool:
        shown.clear()
        shown.update(_queue_rows(await cli("queues", "--json")))
        return bool(shown.get("reports", {}).get("dlq") == 1)

    await wait_until(one_dead, within=15, what="1 dead letter in `taskq queues`")
    assert set(shown) == {"default", "reports"}, shown
    assert shown["reports"] == {
        "queue": "reports",
        "ready": 0,
        "unacked": 0,
        "consumers": 1,
        "dlq": 1,
        "running": 0,
        "scheduled": 0,
        "waiting_for_tags": None,
    }
    assert (shown["default"]["consumers"], shown["default"]["dlq"]) == (1, 0)
    table = await cli("queues")
    assert "reports" in table and "default" in table

    # And `taskq workers --json` lists the worker, running and (once elected) the leader
    listed: list[dict[str, Any]] = []

    async def leading() -> bool:
        listed[:] = json_values(await cli("workers", "--json"))
        return len(listed) == 1 and listed[0]["leader"] is True

    await wait_until(leading, within=30, what="the worker to be listed as leader")
    (row,) = listed
    assert (row["pid"], row["role"], row["state"]) == (worker.pid, "worker", "running")
    assert sorted(row["queues"]) == ["default", "reports"]
    assert row["concurrency"] == 2
    table = await cli("workers")
    assert row["id"] in table and "leader" in table

    # And `taskq tasks --json --state succeeded` lists exactly the 5 that succeeded
    succeeded = json_values(await cli("tasks", "--state", "succeeded", "--json"))
    assert {task["id"] for task in succeeded} == ids
    assert len(succeeded) == 5
    assert {(task["name"], task["queue"], task["state"]) for task in succeeded} == {
        ("obs.report", "reports", "succeeded")
    }
    (failed,) = json_values(await cli("tasks", "--state", "failed", "--json"))
    assert (failed["id"], failed["state"]) == (failing.id, "failed")
    assert failed["error"]["type"] == "RuntimeError"
    table = await cli("tasks", "--state", "succeeded")
    assert all(task_id in table for task_id in ids), table
    assert failing.id not in table
