"""Every program in docs/examples runs (the README's quickstart among them) on the embedded
default, and the transactional-submit example on PostgreSQL and RabbitMQ as well."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Backend

EXAMPLES = Path(__file__).parent.parent / "docs" / "examples"
EXPECTED_OUTPUT = {
    "dashboard.py": (
        "__main__.report scheduled\n"
        "__main__.report succeeded\n"
        "without the token: 401 sign in, or send Authorization: Bearer <token>\n"
        "with it: True cancelled\n"
        "its page: 200 text/html; charset=utf-8\n"
    ),
    "quickstart.py": "5\n",
    "priority_lanes.py": "urgent > soon > routine\n",
    "housekeeping.py": (
        "billing did 1 / shipping did 2\n"
        "billing sees 1 task(s)\n"
        "['taskq.billing.sqlite3', 'taskq.shipping.sqlite3']\n"
    ),
    "extending.py": (
        "invoice for order 42 sent to tenant acme\n"
        "stored headers: {'tenant': 'acme'}\n"
        "refused: examples.send_invoice: submitted outside any tenant's request\n"
    ),
    "flow_control.py": (
        "10 calls for acme, 0.1 s apart: True\n"
        "6 syncs for 2 customers, each customer's one at a time: True\n"
        "refused: __main__.export tenant=acme has 2 of 2 unfinished\n"
        "acme exported\n"
    ),
    "tags.py": (
        "intro rendered\n"
        "from default@gpu, on the gpu worker: True\n"
        "320\n"
        "no worker tagged eu yet: queued\n"
        "960\n"
    ),
    "workflows.py": (
        "chain: 5 words (succeeded)\n"
        "group: [5, 4, 7]\n"
        "chord: 16 words in all\n"
        "fan out and in: notified: stats ready\n"
        "  step 0 examples.download: 'a chord merges what a group returns'\n"
        "  step 1 examples.count_words: 7\n"
        "  step 2 examples.count_letters: 29\n"
        "  step 3 examples.summary: 'chords: 7 words, 29 letters'\n"
        "  step 4 examples.notify: 'notified: stats ready'\n"
        "refused: workflow step 1 (task 'examples.count_words') takes (text: 'str') -> 'int':"
        " too many positional arguments\n"
        "failed: LookupError: step 0 (task 'examples.download') failed: no page 'missing'\n"
        "  step 0 examples.download: failed LookupError\n"
        "  step 1 examples.count_words: cancelled ParentFailed\n"
        "  step 2 examples.count_letters: cancelled ParentFailed\n"
        "  step 3 examples.summary: cancelled ParentFailed\n"
        "  workflow: failed\n"
        "tolerant chord: 9 words; failed: [\"LookupError: no page 'missing'\"]\n"
        "cancel: True\n"
        "  result() raised TaskCancelled\n"
        "  workflow: cancelled\n"
        "  step 0 examples.slow_download: cancelled TaskCancelled\n"
        "  step 1 examples.count_words: cancelled -\n"
        "  step 2 examples.notify: cancelled -\n"
    ),
}


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_example_runs(name: str, tmp_path: Path) -> None:
    done = _run(name, tmp_path)  # the embedded default: no TASKQ_* from the environment
    assert done.returncode == 0, done.stderr
    if name in EXPECTED_OUTPUT:
        assert done.stdout == EXPECTED_OUTPUT[name]


def test_the_extending_example_logs_the_tenant_on_the_worker(tmp_path: Path) -> None:
    done = _run("extending.py", tmp_path)
    assert done.returncode == 0, done.stderr
    assert "task examples.send_invoice[" in done.stderr
    assert "] runs for tenant acme" in done.stderr


def test_transactions_example_on_postgres_and_rabbitmq(production: Backend, tmp_path: Path) -> None:
    """Transactional submit matters most on PostgreSQL, where the leader is woken by NOTIFY."""
    urls = {"TASKQ_BROKER_URL": production.broker_url, "TASKQ_STORE_URL": production.store_url}
    done = _run("client_transactions.py", tmp_path, urls)
    assert done.returncode == 0, done.stderr
    assert "its task is scheduled" in done.stdout
    assert "receipt for order 2 sent" in done.stdout
    assert "never existed" in done.stdout
    assert "orders stored: 2; tasks stored: 2" in done.stdout


def test_priority_lanes_example_on_quorum_queues_of_rabbitmq(
    production: Backend, tmp_path: Path
) -> None:
    urls = {"TASKQ_BROKER_URL": production.broker_url, "TASKQ_STORE_URL": production.store_url}
    done = _run("priority_lanes.py", tmp_path, urls)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "urgent > soon > routine\n"


def _run(
    name: str, cwd: Path, urls: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKQ_")}
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        cwd=cwd,
        env=env | (urls or {}),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_readme_quickstart_is_the_example() -> None:
    readme = (EXAMPLES.parent.parent / "README.md").read_text()
    example = (EXAMPLES / "quickstart.py").read_text()
    body = example.split("import asyncio\n", 1)[1].split("\n\nif __name__")[0]
    assert body.strip() in readme
