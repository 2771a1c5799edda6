"""Fixtures for the end-to-end tests: `taskq worker` as real subprocesses."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.conftest import Backend
from tests.e2e.processes import Workers


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
        started = getattr(item, "funcargs", {}).get("workers")
        if isinstance(started, Workers):
            for title, text in started.outputs():
                report.sections.append((f"stderr of {title}", text))
    return report
