"""Fixtures for the end-to-end tests: `taskq worker` as real subprocesses."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.conftest import Backend
from tests.e2e.processes import Workers
from tests.servers import RabbitNode, running


@pytest.fixture(scope="session")
def private_rabbit() -> Iterator[RabbitNode]:
    """A RabbitMQ node of this run's own, for tests that stop or restart the broker (the
    machine's shared node is never stopped); started on first use, removed at the end."""
    with running(RabbitNode()) as node:
        yield node


@pytest.fixture
def private_production(private_rabbit: RabbitNode, postgres_url: str) -> Backend:
    """The production backend on `private_rabbit`, in a fresh vhost of its own."""
    vhost = f"t_{uuid.uuid4().hex[:8]}"
    # (one `rabbitmqctl eval`, not add_vhost + set_permissions: each call starts an Erlang VM)
    actor, every = '<<"taskq-tests">>', '<<".*">>'
    done = private_rabbit.ctl_sync(
        "eval",
        f'ok = rabbit_vhost:add(<<"{vhost}">>, {actor}), '
        f"ok = rabbit_auth_backend_internal:set_permissions("
        f'<<"guest">>, <<"{vhost}">>, {every}, {every}, {every}, {actor}).',
    )
    if done.returncode != 0:
        raise subprocess.SubprocessError(f"rabbitmqctl eval (add {vhost}): {done.stderr}")
    return Backend("private", f"{private_rabbit.url}{vhost}", postgres_url)


@pytest.fixture
def private_workers(
    private_production: Backend, private_rabbit: RabbitNode, tmp_path: Path
) -> Iterator[Workers]:
    """`workers`, on `private_production`."""
    started = Workers(
        amqp_url=private_production.broker_url,
        store_url=private_production.store_url,
        workdir=tmp_path,
        ctl=private_rabbit.ctl,
    )
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture
def workers(production: Backend, tmp_path: Path) -> Iterator[Workers]:
    """Start workers with `await workers.start(concurrency=N)`; all are stopped afterwards.

    Teardown sends SIGTERM, waits up to 20 s, then SIGKILLs. When the test fails, each
    worker's stderr is added to pytest's report (see `pytest_runtest_makereport`).
    """
    started = Workers(
        amqp_url=production.broker_url, store_url=production.store_url, workdir=tmp_path
    )
    try:
        yield started
    finally:
        started.stop_all()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and report.when in ("call", "teardown"):
        arguments = getattr(item, "funcargs", {})
        started = arguments.get("workers") or arguments.get("private_workers")
        if isinstance(started, Workers):
            for title, text in started.outputs():
                report.sections.append((f"stderr of {title}", text))
    return report
