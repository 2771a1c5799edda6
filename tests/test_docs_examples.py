"""Every program in docs/examples runs (the README's quickstart among them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "docs" / "examples"
EXPECTED_OUTPUT = {"quickstart.py": "5\n"}


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_example_runs(name: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKQ_")}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    if name in EXPECTED_OUTPUT:
        assert done.stdout == EXPECTED_OUTPUT[name]


def test_readme_quickstart_is_the_example() -> None:
    readme = (EXAMPLES.parent.parent / "README.md").read_text()
    example = (EXAMPLES / "quickstart.py").read_text()
    body = example.split("import asyncio\n", 1)[1].split("\n\nif __name__")[0]
    assert body.strip() in readme
