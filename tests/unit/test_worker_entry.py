"""`taskq worker` reads its options with typer, then becomes `python -m taskq.worker_entry`:
the process that runs tasks never holds typer, click or pydantic (typer 0.29 parses through
pydantic: 8 MB of every worker)."""

from __future__ import annotations

import dataclasses
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from taskq import worker_entry
from taskq.cli import app as cli
from taskq.cli import worker as cli_worker

NOT_IN_A_WORKER_PROCESS = ("typer", "click", "pydantic", "pydantic_core")

EVERY_OPTION = worker_entry.Command(
    app="proj.tasks:app",
    concurrency=5,
    queues=("a", "b"),
    scheduler=False,
    shutdown_timeout=2.5,
    processes=3,
    max_tasks_per_child=100,
    max_memory_per_child=10**9,
    health_port=8466,
    health_host="0.0.0.0",
    blocked_threshold=0.5,
    hard_time_limit=60.0,
    memory_limit=2 * 2**30,
    metrics_port=9464,
    metrics_host="::",
    middleware=("audit", "tenant"),
    child=True,
    log_level="DEBUG",
    log_format="json",
    debug=True,
)


def test_a_command_survives_its_arguments() -> None:
    argv = EVERY_OPTION.argv()

    assert argv[0] == "proj.tasks:app"
    assert '--queues=["a","b"]' in argv and "--scheduler=false" in argv
    assert worker_entry.Command.from_argv(argv) == EVERY_OPTION
    assert worker_entry.Command.from_argv(["m:app", "--queues=[]"]).queues == ()


def test_options_at_their_default_are_left_out() -> None:
    command = worker_entry.Command(app="m:app", concurrency=50)

    assert command.argv() == ["m:app", "--concurrency=50"]
    assert worker_entry.command_line(command) == [
        sys.executable, "-m", "taskq.worker_entry", "m:app", "--concurrency=50"
    ]  # fmt: skip


@pytest.mark.parametrize("argument", ["--nope=1", "--concurrency", "concurrency=1", '--app="x"'])
def test_an_argument_it_does_not_know_is_refused(argument: str) -> None:
    with pytest.raises(ValueError, match="not an option"):
        worker_entry.Command.from_argv(["m:app", argument])


def test_every_option_of_the_command_line_is_in_the_command_with_its_default() -> None:
    parameters = inspect.signature(cli_worker.worker).parameters
    renamed = {"memory_limit_": "memory_limit"}
    given = {renamed.get(name, name): p.default for name, p in parameters.items()}
    fields = {field.name: field.default for field in dataclasses.fields(worker_entry.Command)}
    # (debug is the root's --debug; the memory sizes arrive as bytes, the rest as given)
    assert set(given) == set(fields) - {"debug"}
    assert {name: given[name] for name in ("log_format", "middleware", "tags")} == {
        "log_format": cli_worker.LogFormatChoice.text,
        "middleware": None,
        "tags": None,  # (a comma-separated string, split into a tuple)
    }
    same = set(fields) - {"app", "debug", "log_format", "middleware", "tags"}
    assert {name: given[name] for name in same} == {name: fields[name] for name in same}


def test_the_command_line_execs_the_options_it_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    became: list[worker_entry.Command] = []
    monkeypatch.setattr(worker_entry, "become", became.append)
    argv = [
        "--debug", "worker", "proj.tasks:app", "--queues", " a, b,", "--no-scheduler",
        "--max-memory-per-child", "1GiB", "--memory-limit", "2GB", "--middleware", "x,y",
        "--middleware", "z", "--log-format", "json", "--processes", "2",
    ]  # fmt: skip

    result = CliRunner().invoke(cli, argv, env={"TASKQ_CONCURRENCY": "7"})

    assert result.exit_code == 0, result.output
    assert became == [
        worker_entry.Command(
            app="proj.tasks:app",
            concurrency=7,
            queues=("a", "b"),
            scheduler=False,
            processes=2,
            max_memory_per_child=2**30,
            memory_limit=2 * 10**9,
            middleware=("x", "y", "z"),
            log_format="json",
            debug=True,
        )
    ]


def test_a_bad_memory_size_is_refused_before_the_worker_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    became: list[worker_entry.Command] = []
    monkeypatch.setattr(worker_entry, "become", became.append)

    result = CliRunner().invoke(cli, ["worker", "m:app", "--memory-limit", "lots"])

    assert result.exit_code == 1
    assert "--memory-limit: 'lots' is not a memory size" in result.output
    assert became == []


def test_a_supervisors_child_is_one_process_without_probes_or_metrics() -> None:
    child = worker_entry.child_of(EVERY_OPTION)

    assert child == dataclasses.replace(
        EVERY_OPTION, processes=1, health_port=None, metrics_port=None, child=True
    )
    assert worker_entry.Command(app="m:app", processes=1).supervised is False
    assert worker_entry.Command(app="m:app", memory_limit=10**9).supervised is True


def test_the_worker_process_is_the_same_process_without_typer_or_pydantic(
    tmp_path: Path,
) -> None:
    # A module that reports, when the worker process imports it as the app, what that
    # process holds; it has no app, so the worker stops there with its one-line error.
    probe = f"""
import json, os, sys
names = [n for n in sys.modules if n.partition(".")[0] in {NOT_IN_A_WORKER_PROCESS!r}
         or n == "taskq.cli" or n.startswith("taskq.cli.")]
print(json.dumps({{"pid": os.getpid(), "argv": sys.argv, "loaded": sorted(names)}}))
"""
    (tmp_path / "probe.py").write_text(probe)

    process = subprocess.Popen(
        [sys.executable, "-m", "taskq", "worker", "probe:app", "--concurrency", "3"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = process.communicate(timeout=60)

    assert process.returncode == 1, err
    assert "error: probe.app is not a taskq.App" in err
    seen = json.loads(out)
    assert seen["loaded"] == []
    assert seen["pid"] == process.pid  # (exec: the same process, not a child)
    assert seen["argv"][1:] == ["probe:app", "--concurrency=3"]
