"""`taskq demo` (the README's first command) runs on the embedded default and shows tasks
moving through their states."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_demo_exits_0_and_shows_states_changing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKQ_")}
    done = subprocess.run(
        [sys.executable, "-m", "taskq", "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    # Not a terminal: one line per state change, then the summary
    for shown in ("→ running", "→ succeeded", "→ failed", "summary:", "12 succeeded"):
        assert shown in done.stdout, done.stdout
    assert "card declined" in done.stdout
    assert (tmp_path / "taskq-demo.sqlite3").exists()


def test_the_demos_hint_is_a_command_that_works_as_printed(tmp_path: Path) -> None:
    # Given the demo run as `bash .ci/demo` runs it: the venv's taskq script, not on PATH
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKQ_")}
    env["PATH"] = "/usr/bin:/bin"
    script = Path(sys.executable).with_name("taskq")
    done = subprocess.run(
        [str(script), "demo"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    # When its hint is run as printed, in the same directory
    hint = done.stdout.rsplit("inspect any task with:", 1)[1].split()
    shown = subprocess.run(hint, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    # Then it shows the task
    assert shown.returncode == 0, shown.stderr
    assert "task " in shown.stdout and "failed" in shown.stdout, shown.stdout
