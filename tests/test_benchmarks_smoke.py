"""The benchmark scripts still run end to end, each with a small N: `benchmarks/*.py`."""

from __future__ import annotations

import re
import sys

import pytest

from tests.conftest import Backend
from tests.e2e.processes import REPO_ROOT, cli_env, run_command


async def benchmark(script: str, *argv: str, production: Backend, limit: float) -> tuple[int, str]:
    """Run `benchmarks/<script>` on this test's vhost and database; → (exit code, output)."""
    return await run_command(
        sys.executable,
        str(REPO_ROOT / "benchmarks" / script),
        *argv,
        cwd=REPO_ROOT,
        env=cli_env(
            TASKQ_BENCH_AMQP_URL=production.broker_url,
            TASKQ_BENCH_POSTGRES_URL=production.store_url,
        ),
        limit=limit,
    )


HEADER = ["count", "early", "p50", "ms", "p90", "ms", "p99", "ms", "max", "ms"]


async def test_delay_lateness_smoke_prints_its_table_and_no_early_task(
    production: Backend,
) -> None:
    # When the benchmark's smoke variant runs against this test's vhost and database
    code, output = await benchmark("delay_lateness.py", "--smoke", production=production, limit=90)
    # Then it succeeds and prints its table: all 20 tasks, none early (figures not asserted)
    assert code == 0, output
    lines = [line.split() for line in output.splitlines()]
    assert HEADER in lines, output
    row = lines[lines.index(HEADER) + 1]
    assert row[:2] == ["20", "0"], output
    assert len(row) == 6 and all(float(figure) >= 0 for figure in row[2:]), output


SUBMIT_MANY_HEADER = ["way", "tasks", "seconds", "tasks/s"]


async def test_submit_many_benchmark_prints_both_rates_and_completes_every_task(
    production: Backend,
) -> None:
    # When the benchmark runs with a small N against this test's vhost and database
    code, output = await benchmark(
        "submit_many.py", "--tasks", "200", production=production, limit=90
    )
    # Then it succeeds, prints a rate for each way and the ratio (figures not asserted),
    # and all 400 tasks succeeded
    assert code == 0, output
    lines = [line.split() for line in output.splitlines()]
    assert SUBMIT_MANY_HEADER in lines, output
    start = lines.index(SUBMIT_MANY_HEADER) + 1
    rows = {row[0]: row[1:] for row in lines[start : start + 2]}
    assert set(rows) == {"sequential", "submit_many"}, output
    for row in rows.values():
        assert row[0] == "200" and len(row) == 3, output
        assert all(float(figure) > 0 for figure in row[1:]), output
    ratio = next(line for line in lines if line and line[0] == "ratio:")
    assert ratio[-1] in ("PASS", "MISS"), output
    completion = next(line for line in lines if line and line[0] == "completion:")
    assert completion[1:4] == ["400", "of", "400"], output


DRAIN_HEADER = [
    "run",
    "mode",
    "tasks",
    "tasks/s",
    "drain",
    "s",
    "wall",
    "s",
    "cpu",
    "s",
    "prefill",
    "s",
]


async def test_drain_benchmark_prints_both_modes_and_the_sink_got_spans(
    production: Backend,
) -> None:
    # When the drain benchmark runs each tracing mode once with a small N against this
    # test's vhost and database
    code, output = await benchmark(
        "drain.py", "--tasks", "200", "--repeat", "1", production=production, limit=110
    )
    # Then it succeeds (every task succeeded) and prints a row per run and a median per
    # mode (figures not asserted)
    assert code == 0, output
    lines = [line.split() for line in output.splitlines()]
    assert DRAIN_HEADER in lines, output
    start = lines.index(DRAIN_HEADER) + 1
    rows = {(row[0], row[1]): row[2:] for row in lines[start : start + 6]}
    modes = ("off", "traces", "on")
    assert set(rows) == {(run, mode) for run in ("1", "median") for mode in modes}, output
    for row in rows.values():
        assert row[0] == "200" and len(row) == 6, output
        assert all(float(figure) > 0 for figure in row[1:]), output
    # And each traced run's worker and producer both exported spans to the benchmark's sink,
    # metrics only from the "on" run
    for mode, metric_exports in (("traces", "0"), ("on", "1")):
        prefix = f"sink, run 1 {mode}:"
        sink = next(line for line in output.splitlines() if line.startswith(prefix))
        spans = dict(re.findall(r"(taskq-bench-drain-\w+) (\d+)", sink))
        expected = {"taskq-bench-drain-producer": "200", "taskq-bench-drain-worker": "200"}
        assert spans == expected, sink
        exports = re.search(r"(\d+) trace export requests, (\d+) bytes", sink)
        assert exports is not None and int(exports[1]) > 0 and int(exports[2]) > 0, sink
        assert sink.endswith(f"; {metric_exports} metric export requests"), sink
    overhead = next(line for line in lines if line[:3] == ["tracing", "(spans)", "on:"])
    assert "(target < 15%): PASS;" in " ".join(overhead) or "MISS;" in " ".join(overhead), output
    # And each traced mode's overhead against the `off` run of its own round
    for mode in ("traces", "on"):
        paired = f"  {mode} against off of the same round: median "
        assert any(line.startswith(paired) for line in output.splitlines()), output


PEERS_HEADER = (
    "configuration processes tasks drain/s drain/s per process pairs rtt p50 ms rtt p99 ms "
    "enqueue/s"
).split()
PEERS_CONFIGURATIONS = (
    "celery prefork -c 2",
    "celery solo",
    "dramatiq ",  # dramatiq {CPU count} processes 8 threads: the documented defaults
    "dramatiq 1 process 8 threads",
    "dramatiq 1 process 16 threads",
    "taskiq quorum",
    "taskiq classic",
)
PEERS_INSTALL_HINT = "install the bench extra: pip install -e '.[bench]'"
PEER_MODULES = ("celery", "dramatiq", "pika", "taskiq", "taskiq_aio_pika", "taskiq_pg")


@pytest.mark.timeout(440)
async def test_peers_smoke_prints_its_table_or_how_to_install_the_peers(
    production: Backend,
) -> None:
    # When the peers benchmark's smoke variant runs (CI installs only .[dev]: no peers there);
    # seven configurations, each on a vhost of its own: ~100 s here
    code, output = await benchmark("peers.py", "--smoke", production=production, limit=420)
    # Then it succeeds, and prints either a row per configuration of each peer (figures not
    # asserted) and the fastest per process, or the hint
    assert code == 0, output
    if PEERS_INSTALL_HINT in output and "nothing measured" in output:
        return
    lines = output.splitlines()
    assert PEERS_HEADER in [line.split() for line in lines], output
    start = next(i for i, line in enumerate(lines) if line.split() == PEERS_HEADER) + 1
    rows = lines[start : start + len(PEERS_CONFIGURATIONS)]
    for row, name in zip(rows, PEERS_CONFIGURATIONS, strict=True):
        assert row.startswith(name), output
    assert "fastest per process (the one to beat): " in output, output


async def test_peers_without_the_bench_extra_says_how_to_install_it_and_exits_0() -> None:
    # Given a Python in which none of the peers' packages can be imported
    hide = "; ".join(f"sys.modules[{name!r}] = None" for name in PEER_MODULES)
    script = REPO_ROOT / "benchmarks" / "peers.py"
    # When the peers benchmark runs there
    code, output = await run_command(
        sys.executable,
        "-c",
        f"import runpy, sys; {hide}; sys.argv = [{str(script)!r}, '--smoke']; "
        f"runpy.run_path({str(script)!r}, run_name='__main__')",
        cwd=REPO_ROOT,
        env=cli_env(),
        limit=60,
    )
    # Then it names each missing peer, says how to install them, measures nothing and exits 0
    assert code == 0, output
    for peer in ("celery", "dramatiq", "taskiq"):
        assert f"{peer}: not installed" in output, output
    assert f"peers not installed, nothing measured: {PEERS_INSTALL_HINT}" in output, output
    assert "drain/s" not in output, output


WORKFLOW_HEADER = [
    "round",
    "kind",
    "tasks",
    "submit",
    "s",
    "members",
    "s",
    "total",
    "s",
    "tasks/s",
    "worker",
    "cpu",
    "s",
    "client",
    "cpu",
    "s",
]
CELERY_CHORD = ("celery chord: not run", "celery chord: 500 members")


@pytest.mark.timeout(200)
async def test_workflow_benchmark_times_a_chord_against_submit_many(production: Backend) -> None:
    # When the workflow benchmark's quick run (500 tasks each way, once) runs against this
    # test's vhost and database
    code, output = await benchmark("workflow.py", "--quick", production=production, limit=180)
    # Then it succeeds (every task succeeded, the body got all 500 values) and prints a row
    # per measurement, the medians and bests (figures not asserted)
    assert code == 0, output
    lines = [line.split() for line in output.splitlines()]
    assert WORKFLOW_HEADER in lines, output
    start = lines.index(WORKFLOW_HEADER) + 1
    rows = {(row[0], row[1]): row[2:] for row in lines[start : start + 6]}
    labels = ("1", "median", "best")
    assert set(rows) == {(label, kind) for label in labels for kind in ("plain", "chord")}
    for row in rows.values():
        assert row[0] == "500" and len(row) == 7, output
        assert all(float(figure.replace(",", "")) > 0 for figure in row[1:5]), output
    # And the chord's body timeline, both times, and the ratio with a verdict (a MISS is a
    # figure, not a failure)
    timeline = "chord, round 1: last member durable at "
    assert any(line.startswith(timeline) for line in output.splitlines()), output
    ratio = next(line for line in lines if line and line[0] == "ratio:")
    assert ratio[-3] in ("PASS", "MISS"), output
    # And Celery's chord ran, or a line says why not (CI installs only .[dev])
    assert any(line.startswith(CELERY_CHORD) for line in output.splitlines()), output


RUN_HEADER = ["measurement", "figure", "unit", "target", "verdict"]
RUN_ROWS = (
    "drain (200 tasks, 1 worker)",
    "drain vs fastest peer",
    "drain, 3 no-op middlewares",
    "drain, rate_limit never reached (--flow-control)",
    "drain, concurrency_limit 10 per key (--flow-control)",
    "submit sequential (200)",
    "submit 100 concurrent (200)",
    "submit_many (200)",
    "chord vs submit_many (200 tasks, ",
    "round trip p50 (20 pairs)",
    "round trip p99 (20 pairs)",
    "worker RSS idle",
    "worker RSS after drain of 200",
    "worker RSS after drain of 100,000",
)


@pytest.mark.timeout(200)
async def test_run_smoke_prints_every_row_of_the_table(production: Backend) -> None:
    # When the one-command runner's smoke variant runs (small N, no peers) against this
    # test's vhost and database
    code, output = await benchmark(
        "run.py", "--smoke", "--no-peers", production=production, limit=180
    )
    # Then it succeeds and prints the table: every row, in order, each with a verdict
    # (figures and verdicts not asserted: a MISS is not a failure)
    assert code == 0, output
    lines = output.splitlines()
    assert RUN_HEADER in [line.split() for line in lines], output
    start = next(i for i, line in enumerate(lines) if line.split() == RUN_HEADER) + 1
    rows = lines[start : start + len(RUN_ROWS)]
    for row, label in zip(rows, RUN_ROWS, strict=True):
        assert row.startswith(label), output
        assert row.split()[-1] in ("PASS", "MISS", "n/a", "-"), output
    assert "peers: not run (--no-peers)" in output, output


async def test_sync_submit_benchmark_prints_each_caller_and_completes_every_task(
    production: Backend,
) -> None:
    # When the benchmark runs with a small N against this test's vhost and database
    code, output = await benchmark(
        "sync_submit.py", "--calls", "50", production=production, limit=90
    )
    # Then it succeeds (every task ran) and prints a row per caller (figures not asserted)
    assert code == 0, output
    for caller in ("one plain thread", "view, 1 server thread(s)", "view, 8 server thread(s)"):
        row = rf"{re.escape(caller)}\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+"
        assert re.search(row, output), output


RETENTION_HEADER = [
    "run",
    "retention",
    "tasks",
    "tasks/s",
    "drain",
    "s",
    "worker",
    "cpu",
    "s",
    "pg",
    "cpu",
    "s",
    "busy",
    "%",
    "old",
    "left",
    "pruned",
    "at",
    "s",
    "prefill",
    "s",
]


async def test_retention_benchmark_prunes_every_old_row_and_leaves_the_unfinished_ones(
    production: Backend,
) -> None:
    # When the retention benchmark's small run drains 2,000 tasks without pruning, then
    # 2,000 more while the leader deletes 5,000 finished rows 40 days old
    code, output = await benchmark("retention.py", "--quick", production=production, limit=110)
    # Then it succeeds: every task succeeded, the worker led, every old row and its attempt
    # went under retention 30d and none under off, and the unfinished and dead-lettered rows
    # are as they were (the exit code says so)
    assert code == 0, output
    lines = [line.split() for line in output.splitlines()]
    assert RETENTION_HEADER in lines, output
    start = lines.index(RETENTION_HEADER) + 1
    rows = {(row[0], row[1]): row[2:] for row in lines[start : start + 4]}
    assert set(rows) == {(run, mode) for run in ("1", "median") for mode in ("off", "30d")}
    for (_, mode), row in rows.items():
        assert row[0] == "2000" and float(row[1]) > 0, output
        if mode == "off":
            assert row[6:8] == ["5000", "-"], output  # old rows left: all; none pruned
        else:
            assert float(row[7]) > 0, output  # none left, that many seconds after the spawn
    assert any(line.startswith("pruned, run 1: 5,000 old rows") for line in output.splitlines())
    # And it prints the rate with pruning against the rate without, and a verdict (figures
    # and verdict not asserted: a MISS is not a failure)
    verdict = next(line for line in lines if line[:4] == ["drain", "rate", "with", "pruning:"])
    assert verdict[-1] in ("PASS", "MISS"), output
    untouched = next(line for line in output.splitlines() if line.startswith("untouched: "))
    assert untouched.startswith("untouched: the 110 unfinished and dead-lettered rows"), output
    assert untouched.endswith(" after every phase: yes"), output


FLOW_HEADER = [
    "run",
    "variant",
    "tasks",
    "tasks/s",
    "drain",
    "s",
    "wall",
    "s",
    "worker",
    "cpu",
    "s",
    "pg",
    "cpu",
    "s",
    "held",
    "prefill",
    "s",
]


@pytest.mark.timeout(150)
async def test_flow_control_benchmark_drains_each_variant_and_counts_the_holds(
    production: Backend,
) -> None:
    # When the flow-control benchmark's quick run drains 1,000 tasks with no limit, with a
    # rate limit never reached and with a concurrency limit per customer, against this
    # test's vhost and database
    code, output = await benchmark("flow_control.py", "--quick", production=production, limit=140)
    # Then it succeeds (every task of every variant succeeded, with its limits on its row)
    # and prints a row per drain and a median per variant (figures not asserted)
    assert code == 0, output
    lines = [line.split() for line in output.splitlines()]
    assert FLOW_HEADER in lines, output
    start = lines.index(FLOW_HEADER) + 1
    rows = {(row[0], row[1]): row[2:] for row in lines[start : start + 6]}
    variants = ("none", "rate", "slots")
    assert set(rows) == {(run, v) for run in ("1", "median") for v in variants}, output
    for row in rows.values():
        assert row[0] == "1000" and len(row) == 8 and float(row[1]) > 0, output
    # And no task was held back (the rate is never reached; at most 100 run at once, over
    # 100 customers with 10 slots each), counted by the ledger for each variant
    for variant in variants:
        held = f"held back, {variant}: 0 times over 1 drain(s) of 1,000 (no task ever held)"
        assert held in output.splitlines(), output
    # And each limited variant's cost against no limit, with a verdict (a MISS is a figure,
    # not a failure)
    for variant in ("rate", "slots"):
        cost = next(line for line in lines if line[:3] == ["cost", "of", f"{variant}:"])
        assert cost[-1] in ("PASS", "MISS"), output


DASHBOARD_HEADER = "page rows p50 ms p95 ms max ms cpu ms/load verdict path".split()
DASHBOARD_PAGES = {
    "tasks": "/tasks",
    "filtered": "/tasks?state=failed&name=app.emails.send",
    "filtered-2": "/tasks?state=failed&name=app.emails.send&after=",
    "queue-1d": "/tasks?queue=reports&since=1d",
    "overview": "/",
    "api-tasks": "/api/tasks",
}


async def test_dashboard_benchmark_times_each_page_over_http(production: Backend) -> None:
    # When the dashboard benchmark's quick run fills 10,000 task rows in this test's database
    # and loads each page 10 times from a `taskq dashboard` subprocess
    code, output = await benchmark("dashboard.py", "--quick", production=production, limit=60)
    # Then it succeeds (every page answered 200 with tasks on it) and says what it filled
    assert code == 0, output
    filled = "dashboard: 10,000 rows in taskq_tasks ("
    assert any(line.startswith(filled) for line in output.splitlines()), output
    # And prints a row per page: tasks shown, p50 / p95 / max, the server's CPU per load
    # and a verdict for the task pages (figures not asserted: a MISS is not a failure)
    lines = [line.split() for line in output.splitlines()]
    assert DASHBOARD_HEADER in lines, output
    start = lines.index(DASHBOARD_HEADER) + 1
    rows = {row[0]: row[1:] for row in lines[start : start + len(DASHBOARD_PAGES)]}
    assert list(rows) == list(DASHBOARD_PAGES), output
    for page, row in rows.items():
        assert row[-1].startswith(DASHBOARD_PAGES[page]), output
        assert row[0] == ("-" if page == "overview" else "50"), output
        assert all(float(figure) >= 0 for figure in row[1:5]), output
        targeted = page not in ("overview", "api-tasks")
        assert row[5] in (("PASS", "MISS") if targeted else ("-",)), output
    pages = "tasks, filtered, filtered-2, queue-1d"
    verdict = rf"^target p95 < 300 ms \({pages}\): (PASS|MISS \(.+\))$"
    assert re.search(verdict, output, re.MULTILINE), output
