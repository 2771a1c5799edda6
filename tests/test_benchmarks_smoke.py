"""The benchmark scripts still run: `benchmarks/delay_lateness.py --smoke` end to end."""

from __future__ import annotations

import sys

from tests.conftest import Backend
from tests.e2e.processes import REPO_ROOT, cli_env, run_command

HEADER = ["count", "early", "p50", "ms", "p90", "ms", "p99", "ms", "max", "ms"]


async def test_delay_lateness_smoke_prints_its_table_and_no_early_task(
    production: Backend,
) -> None:
    # When the benchmark's smoke variant runs against this test's vhost and database
    code, output = await run_command(
        sys.executable,
        str(REPO_ROOT / "benchmarks" / "delay_lateness.py"),
        "--smoke",
        cwd=REPO_ROOT,
        env=cli_env(
            TASKQ_BENCH_AMQP_URL=production.broker_url,
            TASKQ_BENCH_POSTGRES_URL=production.store_url,
        ),
        limit=90,
    )
    # Then it succeeds and prints its table: all 20 tasks, none early (figures not asserted)
    assert code == 0, output
    lines = [line.split() for line in output.splitlines()]
    assert HEADER in lines, output
    row = lines[lines.index(HEADER) + 1]
    assert row[:2] == ["20", "0"], output
    assert len(row) == 6 and all(float(figure) >= 0 for figure in row[2:]), output
