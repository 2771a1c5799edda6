"""The CLI's first-run manners: `taskq --version`, and errors as one line (their traceback
behind `taskq --debug`)."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest
from typer.testing import CliRunner

from taskq.cli import app, common


def test_version_prints_the_installed_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"taskq {metadata.version('taskq')}\n"


def test_an_unknown_revision_is_one_line(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    result = CliRunner().invoke(app, ["db", "upgrade", "--store-url", url, "--revision", "9999"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot upgrade to revision '9999'")


def test_an_unexpected_error_is_one_line_and_its_traceback_is_behind_debug(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken() -> None:
        raise RuntimeError("the socket went away")

    with pytest.raises(SystemExit):
        common.run(broken())
    monkeypatch.setattr(common, "debug", True)
    with pytest.raises(RuntimeError, match="the socket went away"):
        common.run(broken())
