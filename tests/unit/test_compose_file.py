"""docker/compose.yaml's worker runs an app that exists, and stops within its grace period.
(No Docker engine runs in CI: the file is checked as text, the app by importing it.)"""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path

import taskq
from taskq.cli import worker as cli_worker

DOCKER = Path(__file__).resolve().parents[2] / "docker"


def test_the_compose_worker_runs_the_mounted_example_app() -> None:
    compose = (DOCKER / "compose.yaml").read_text()
    assert 'command: ["worker", "example_app:app"]' in compose
    assert "- ./example_app.py:/app/example_app.py:ro" in compose
    sys.path.insert(0, str(DOCKER))
    try:
        import example_app  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(DOCKER))
    assert isinstance(example_app.app, taskq.App)
    assert "example.add" in example_app.app.tasks


def test_the_compose_worker_gets_longer_than_its_shutdown_timeout_to_drain() -> None:
    compose = (DOCKER / "compose.yaml").read_text()
    grace = re.search(r"stop_grace_period: (\d+)s", compose)
    assert grace is not None
    default = inspect.signature(cli_worker.worker).parameters["shutdown_timeout"].default
    assert int(grace[1]) > default  # (`taskq worker`'s --shutdown-timeout)
