"""`taskq workers` on a fleet of several hosts: each process under its own host, host by
host, with its pid (the id alone is folded in narrow terminals); both backends."""

from __future__ import annotations

import asyncio
import json

from typer.testing import CliRunner

from taskq.cli import app as cli
from taskq.store import coordination
from tests.conftest import Backend


def invoke(*argv: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(argv))
    return result.exit_code, result.output


async def test_workers_of_two_hosts_with_the_same_pids_are_listed_host_by_host(
    backend: Backend,
) -> None:
    # Given processes of two hosts that both number a worker 7 (containers do), the second
    # host's started first
    app = backend.app()
    async with app:
        assert app.store._engine is not None
        async with app.store._engine.begin() as conn:
            for worker_id, host, pid in (
                ("zulu:7:b", "zulu", 7),
                ("alpha:7:a", "alpha", 7),
                ("zulu:8:c", "zulu", 8),
            ):
                await coordination.register_worker(
                    conn, worker_id=worker_id, role="worker", host=host, pid=pid,
                    queues=["default"], concurrency=2,
                )  # fmt: skip
    # When `taskq workers` lists them, as JSON and as a table
    code, output = await asyncio.to_thread(
        invoke, "workers", "--json", "--store-url", backend.store_url
    )
    assert code == 0, output
    rows = [json.loads(line) for line in output.splitlines()]
    code, table = await asyncio.to_thread(invoke, "workers", "--store-url", backend.store_url)
    assert code == 0, table
    # Then they come host by host, each with its own host and pid
    assert [(r["id"], r["host"], r["pid"]) for r in rows] == [
        ("alpha:7:a", "alpha", 7),
        ("zulu:7:b", "zulu", 7),
        ("zulu:8:c", "zulu", 8),
    ]
    lines = [line for line in table.splitlines() if ":7:" in line or ":8:" in line]
    assert [line.split("│")[2:4] for line in lines] == [
        [" alpha ", "   7 "],
        [" zulu  ", "   7 "],
        [" zulu  ", "   8 "],
    ], table
