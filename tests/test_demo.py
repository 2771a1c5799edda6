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
