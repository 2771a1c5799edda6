"""`taskq --version` prints the installed version and exits 0."""

from __future__ import annotations

from importlib import metadata

from typer.testing import CliRunner

from taskq.cli import app


def test_version_prints_the_installed_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"taskq {metadata.version('taskq')}\n"
