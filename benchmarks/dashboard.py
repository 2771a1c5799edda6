"""How fast do the dashboard's task pages answer with a million task rows in PostgreSQL?

    .venv/bin/python benchmarks/dashboard.py              # 1,000,000 rows, 50 loads a page
    .venv/bin/python benchmarks/dashboard.py --quick      # 10,000 rows, 10 loads (the smoke run)
    .venv/bin/python benchmarks/dashboard.py --rows 100000 --loads 100

The target: "with 1,000,000 task rows in PostgreSQL, the tasks page and a filtered page
answer in under 300 ms (p95 of 50 loads)".

One vhost and one migrated database for the run. `--rows` task rows are inserted with plain
SQL (`INSERT ... SELECT FROM generate_series`, `--chunk` rows a statement, random() seeded:
every run draws the same states, names and times), then the table is VACUUM ANALYZEd (as
autovacuum would have, and so that it does not start during the loads). The rows: created over
the last 7 days in order; six task names on five queues (40% `app.emails.send`); 94.5%
succeeded, 3% failed (dead-lettered, an error with a traceback), 1% cancelled, 0.5% expired,
1% scheduled (due 1 to 8 days after their creation), and among the rows of the last 6 hours 2%
queued, of the last 10 minutes 1% running (older rows of those draws succeeded); small JSON
args, kwargs and results, a traceparent header, attempts, retries, and started / finished
times that fit the state. No attempts rows: the pages measured do not read them.

Then `taskq dashboard --port P` runs as a subprocess (uvicorn, one process, as deployed) and
each page gets `--warmup` loads, then `--loads` sequential GETs over one keep-alive HTTP
connection, each timed from the request to the last byte of the body:

- tasks: `/tasks`, the newest 50 tasks;
- filtered: `/tasks?state=failed&name=app.emails.send`;
- filtered-2: the same filter's second page (`&after=` the "next" mark of `/api/tasks`);
- queue-1d: `/tasks?queue=reports&since=1d`;
- overview: `/` and api-tasks: `/api/tasks` (figures only, no target).

Printed: the rows counted in the table, the fill's and the VACUUM ANALYZE's time, then a row
per page: the task rows it showed, p50 / p95 / max in ms (nearest rank), the dashboard
process's CPU per load, and PASS/MISS against p95 < 300 ms for the four task pages (a figure,
not a failure: exit code 0). Exit code 1 if a page did not answer 200 or showed no task.

The services come from --amqp-url / --postgres-url (a migrated database), defaulting to
TASKQ_BENCH_AMQP_URL / TASKQ_BENCH_POSTGRES_URL. Without them, a throwaway vhost and database
are made for the run and removed at the end (on an error too). In a given database the rows
are added to what is there (the count printed is the table's) and deleted at the end (they
carry the header `"bench": "dashboard"`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import math
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

import asyncpg
import httpx
import psutil

# Run as a script, only benchmarks/ is on sys.path: add the repository root, so that
# `benchmarks.*` names these modules here as in the other benchmarks.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from benchmarks.services import (  # noqa: E402
    REPO_ROOT,
    add_service_options,
    asyncpg_url,
    clean_env,
    services,
)

DEFAULT_ROWS = 1_000_000
DEFAULT_LOADS = 50
DEFAULT_WARMUP = 5
DEFAULT_CHUNK = 250_000
QUICK_ROWS = 10_000  # enough for two pages of the filter (about 120 rows match)
QUICK_LOADS = 10
QUICK_WARMUP = 2
TARGET_MS = 300.0  # p95 of the task pages
START_WITHIN = 60.0  # seconds for `taskq dashboard` to answer
SEED = 0.42
FILTER_NAME = "app.emails.send"
FILTER_QUEUE = "reports"
MARK = "dashboard"  # headers->>'bench' of the rows this benchmark inserts

# -- the rows ---------------------------------------------------------------------------------

# Rows $1..$2 of $3, created over the 7 days before $4 in order (row $3 at $4). Draws: `a`
# the state, `b` the name (and so the queue), `c` times and attempts.
INSERT_ROWS = f"""
WITH drawn AS (
    SELECT i, $4::timestamptz - ($3::int - i) * (interval '7 days' / $3::int) AS created_at,
           random() AS a, random() AS b, random() AS c
    FROM generate_series($1::int, $2::int) AS i
), kind AS (
    SELECT drawn.*,
           CASE WHEN b < 0.40 THEN 'app.emails.send'
                WHEN b < 0.60 THEN 'app.images.resize'
                WHEN b < 0.78 THEN 'app.reports.build'
                WHEN b < 0.90 THEN 'app.billing.charge'
                WHEN b < 0.98 THEN 'app.sync.pull'
                ELSE 'app.cleanup.purge' END AS name,
           CASE WHEN a < 0.030 THEN 'failed'
                WHEN a < 0.040 THEN 'cancelled'
                WHEN a < 0.045 THEN 'expired'
                WHEN a < 0.055 THEN 'scheduled'
                WHEN a < 0.075 AND created_at > $4::timestamptz - interval '6 hours'
                    THEN 'queued'
                WHEN a < 0.085 AND created_at > $4::timestamptz - interval '10 minutes'
                    THEN 'running'
                ELSE 'succeeded' END AS state,
           created_at + c * interval '2 s' AS picked_at,
           CASE WHEN b < 0.40 THEN interval '300 ms' WHEN b < 0.60 THEN interval '2 s'
                WHEN b < 0.78 THEN interval '20 s' ELSE interval '1 s' END * (0.2 + 2 * c)
               AS took
    FROM drawn
), timed AS (
    SELECT kind.*,
           CASE WHEN state = 'failed' THEN 3
                WHEN state = 'succeeded' AND c > 0.9 THEN 2
                WHEN state IN ('succeeded', 'running') OR (state = 'cancelled' AND c > 0.5)
                    THEN 1
                ELSE 0 END AS attempts
    FROM kind
)
INSERT INTO taskq_tasks (id, name, queue, priority, state, args, kwargs, result, error,
                         attempts, timeout, worker_id, created_at, started_at, finished_at,
                         run_at, retries, max_retries, deliveries, dead_reason, headers)
SELECT gen_random_uuid(), name,
       CASE name WHEN 'app.emails.send' THEN 'emails' WHEN 'app.images.resize' THEN 'images'
                 WHEN 'app.reports.build' THEN 'reports' WHEN 'app.billing.charge' THEN 'billing'
                 ELSE 'default' END,
       CASE WHEN c < 0.05 THEN 5 ELSE 0 END,
       state,
       jsonb_build_array(i, 'user-' || (i % 9973)),
       CASE WHEN b < 0.40 THEN jsonb_build_object('template', 'welcome', 'locale', 'en')
            ELSE '{{}}'::jsonb END,
       CASE WHEN state = 'succeeded' THEN jsonb_build_object('ok', true, 'n', i) END,
       CASE WHEN state = 'failed' THEN jsonb_build_object(
           'type', 'TimeoutError',
           'message', 'upstream did not answer within 30 s (task ' || i || ')',
           'traceback', 'Traceback (most recent call last):' || repeat(
               E'\\n  File "/srv/app/tasks.py", line 42, in run\\n    await client.call()',
               6) || E'\\nTimeoutError: upstream did not answer within 30 s') END,
       attempts,
       CASE WHEN b < 0.78 THEN 30.0 END,
       CASE WHEN attempts > 0 THEN 'worker-' || (i % 8) || '@app-host-' || (i % 3) END,
       created_at,
       CASE WHEN attempts > 0 THEN picked_at END,
       CASE WHEN state IN ('succeeded', 'failed')
                THEN least(picked_at + took * attempts, $4::timestamptz)
            WHEN state = 'cancelled' THEN least(picked_at + took, $4::timestamptz)
            WHEN state = 'expired' THEN least(created_at + interval '1 hour', $4::timestamptz)
            END,
       CASE WHEN state = 'scheduled' THEN created_at + interval '1 day' * (1 + 7 * c) END,
       CASE WHEN state = 'failed' THEN 2 WHEN attempts = 2 THEN 1 ELSE 0 END,
       CASE WHEN state = 'failed' OR attempts = 2 THEN 2 ELSE 0 END,
       attempts,
       CASE WHEN state IN ('failed', 'expired') THEN state END,
       jsonb_build_object('traceparent', '00-' || md5(i::text) || '-'
                          || left(md5((i + 1)::text), 16) || '-01', 'bench', '{MARK}')
FROM timed
"""

DELETE_ROWS = f"DELETE FROM taskq_tasks WHERE headers->>'bench' = '{MARK}'"


@contextlib.asynccontextmanager
async def connected(store_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(asyncpg_url(store_url), timeout=10)
    try:
        yield connection
    finally:
        await connection.close()


@dataclasses.dataclass
class Filled:
    rows: int  # in the table afterwards (all of them, not only this run's)
    fill: float  # seconds for the INSERTs
    vacuum: float  # seconds for VACUUM ANALYZE
    states: dict[str, int]


async def fill(store_url: str, rows: int, chunk: int) -> Filled:
    """Insert the rows, `chunk` a statement, then VACUUM ANALYZE the table."""
    anchor = datetime.now(UTC)
    async with connected(store_url) as connection:
        await connection.execute(f"SELECT setseed({SEED})")
        started = time.perf_counter()
        for first in range(1, rows + 1, chunk):
            last = min(first + chunk - 1, rows)
            await connection.execute(INSERT_ROWS, first, last, rows, anchor)
            took = time.perf_counter() - started
            print(f"  filled {last:,} of {rows:,} rows ({took:.1f} s)", file=sys.stderr, flush=True)
        filled = time.perf_counter() - started
        started = time.perf_counter()
        await connection.execute("VACUUM ANALYZE taskq_tasks")
        vacuumed = time.perf_counter() - started
        count = await connection.fetchval("SELECT count(*) FROM taskq_tasks")
        states = await connection.fetch(
            "SELECT state, count(*) AS n FROM taskq_tasks GROUP BY state ORDER BY n DESC"
        )
    return Filled(count, filled, vacuumed, {row["state"]: row["n"] for row in states})


async def unfill(store_url: str) -> None:
    """Delete this benchmark's rows (from a given database; a throwaway one is dropped)."""
    async with connected(store_url) as connection:
        await connection.execute(DELETE_ROWS)


# -- the dashboard ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def dashboard_process(
    broker_url: str, store_url: str, workdir: Path
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`taskq dashboard` on a free port, logging to `workdir`/dashboard.log; → (the process,
    its base URL). Stopped with SIGTERM (killed after 10 s); its log's end printed if it
    failed."""
    port = free_port()
    log_path = workdir / "dashboard.log"
    env = {**clean_env(), "TASKQ_BROKER_URL": broker_url, "TASKQ_STORE_URL": store_url}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "taskq", "dashboard", "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    try:
        yield process, f"http://127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.returncode not in (0, -signal.SIGTERM):
            print(f"taskq dashboard exited {process.returncode}; its log ends:", file=sys.stderr)
            print(log_path.read_text(errors="replace")[-5000:], file=sys.stderr)


async def wait_answering(client: httpx.AsyncClient, process: subprocess.Popen[bytes]) -> float:
    """Until the dashboard answers /api/tasks?limit=1 with 200; → seconds waited."""
    started = time.perf_counter()
    last = "no answer"
    while True:
        if process.poll() is not None:
            raise SystemExit(f"FAIL: taskq dashboard exited {process.returncode} at start")
        try:
            response = await client.get("/api/tasks", params={"limit": 1})
        except httpx.TransportError as exc:
            last = f"no answer ({exc!r})"
        else:
            if response.status_code == 200:
                return time.perf_counter() - started
            last = f"{response.status_code}: {response.text[:300]}"
        if time.perf_counter() - started > START_WITHIN:
            raise SystemExit(
                f"FAIL: taskq dashboard did not answer 200 within {START_WITHIN:g} s; last: {last}"
            )
        await asyncio.sleep(0.1)


# -- the loads --------------------------------------------------------------------------------


@dataclasses.dataclass
class Page:
    label: str
    path: str
    target: bool  # p95 against TARGET_MS (otherwise a figure only)
    shown: int | None = None  # task rows on the page (None: not a list of tasks)
    times: list[float] = dataclasses.field(default_factory=list)  # ms, in load order
    cpu: float = 0.0  # the dashboard process's CPU seconds over the loads
    problem: str | None = None

    def percentile(self, q: float) -> float:
        """Nearest rank: the smallest time that q% of the loads took no longer than."""
        ordered = sorted(self.times)
        return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]

    @property
    def verdict(self) -> str:
        if not self.target or not self.times:
            return "-"
        return "PASS" if self.percentile(95) < TARGET_MS else "MISS"


def tasks_shown(page: Page, response: httpx.Response) -> int | None:
    if page.path.startswith("/api/tasks"):
        return len(response.json()["tasks"])
    if page.path.startswith("/tasks"):
        return len(re.findall(r'<tr data-task="', response.text))
    return None


async def load(client: httpx.AsyncClient, page: Page) -> float:
    """One GET of the page, body and all; → milliseconds. A page that is not a 200, or a
    task page that shows no task, is the page's problem (and the run's failure)."""
    started = time.perf_counter()
    response = await client.get(page.path)
    took = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        page.problem = f"{page.path} answered {response.status_code}: {response.text[:300]}"
    else:
        page.shown = tasks_shown(page, response)
        if page.shown == 0:
            page.problem = f"{page.path} showed no task"
    return took


async def measure(
    client: httpx.AsyncClient, process: psutil.Process, page: Page, loads: int, warmup: int
) -> None:
    for _ in range(warmup):
        await load(client, page)
    before = process.cpu_times()
    for _ in range(loads):
        page.times.append(await load(client, page))
    after = process.cpu_times()
    page.cpu = (after.user + after.system) - (before.user + before.system)


async def second_page_mark(client: httpx.AsyncClient, query: dict[str, str]) -> str | None:
    """The "next" mark of the filter's first page (None: it has one page only)."""
    response = await client.get("/api/tasks", params=query)
    response.raise_for_status()
    mark: str | None = response.json()["next"]
    return mark


def pages(mark: str | None) -> list[Page]:
    filtered = {"state": "failed", "name": FILTER_NAME}
    found = [
        Page("tasks", "/tasks", True),
        Page("filtered", "/tasks?" + urlencode(filtered), True),
    ]
    if mark is not None:
        found.append(Page("filtered-2", "/tasks?" + urlencode({**filtered, "after": mark}), True))
    return [
        *found,
        Page("queue-1d", "/tasks?" + urlencode({"queue": FILTER_QUEUE, "since": "1d"}), True),
        Page("overview", "/", False),
        Page("api-tasks", "/api/tasks", False),
    ]


async def run_pages(
    broker_url: str, store_url: str, loads: int, warmup: int
) -> tuple[list[Page], float]:
    """→ (the pages measured, seconds from the dashboard's spawn until it answered)."""
    with (
        tempfile.TemporaryDirectory(prefix="taskq-dashboard-bench-") as tmp,
        dashboard_process(broker_url, store_url, Path(tmp)) as (process, url),
    ):
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
            answered = await wait_answering(client, process)
            mark = await second_page_mark(client, {"state": "failed", "name": FILTER_NAME})
            measured = pages(mark)
            watched = psutil.Process(process.pid)
            for page in measured:
                await measure(client, watched, page, loads, warmup)
                if page.times:
                    print(
                        f"  {page.label}: p95 {page.percentile(95):.1f} ms",
                        file=sys.stderr,
                        flush=True,
                    )
    return measured, answered


# -- the report -------------------------------------------------------------------------------

HEADER = ("page", "rows", "p50 ms", "p95 ms", "max ms", "cpu ms/load", "verdict", "path")
WIDTHS = (10, 5, 8, 8, 8, 11, 7, 0)


def line(cells: tuple[str, ...]) -> str:
    shown = [
        f"{cell:<{width}}" if i in (0, len(cells) - 1) else f"{cell:>{width}}"
        for i, (cell, width) in enumerate(zip(cells, WIDTHS, strict=True))
    ]
    return "  ".join(shown).rstrip()


def report(
    filled: Filled, measured: list[Page], options: argparse.Namespace, answered: float, load: str
) -> None:
    states = ", ".join(f"{state} {n:,}" for state, n in filled.states.items())
    print(
        f"dashboard: {filled.rows:,} rows in taskq_tasks ({states}); filled in "
        f"{filled.fill:.1f} s ({options.rows / max(filled.fill, 1e-9):,.0f} rows/s), "
        f"VACUUM ANALYZE {filled.vacuum:.1f} s"
    )
    print(
        f"taskq dashboard (1 uvicorn process) answered {answered:.1f} s after its spawn; each "
        f"page: {options.warmup} warm-up loads, then {options.loads} sequential GETs over one "
        f"keep-alive connection; {psutil.cpu_count()} CPUs, load average {load}"
    )
    print(line(HEADER))
    for page in measured:
        if not page.times:
            continue
        figures = (page.percentile(50), page.percentile(95), max(page.times))
        print(
            line(
                (
                    page.label,
                    "-" if page.shown is None else str(page.shown),
                    *(f"{figure:.1f}" for figure in figures),
                    f"{page.cpu / len(page.times) * 1000:.1f}",
                    page.verdict,
                    page.path,
                )
            )
        )
    print(
        "(rows: task rows on the page; p50 / p95: nearest rank; cpu: the dashboard process's "
        "user + system time per load)"
    )
    if not any(page.label == "filtered-2" for page in measured):
        print("filtered-2: n/a: the filter matches one page only (fewer than 50 rows)")
    targeted = [page for page in measured if page.target and page.times]
    missed = [page.label for page in targeted if page.verdict == "MISS"]
    print(
        f"target p95 < {TARGET_MS:g} ms ({', '.join(page.label for page in targeted)}): "
        + (f"MISS ({', '.join(missed)})" if missed else "PASS")
    )


def parse_options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rows",
        type=int,
        default=None,
        help=f"task rows to insert (default {DEFAULT_ROWS:,}; {QUICK_ROWS:,} --quick)",
    )
    parser.add_argument(
        "--loads",
        type=int,
        default=None,
        help=f"timed loads of each page (default {DEFAULT_LOADS}; {QUICK_LOADS} --quick)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help=f"untimed loads a page first (default {DEFAULT_WARMUP}; {QUICK_WARMUP} --quick)",
    )
    parser.add_argument(
        "--chunk",
        type=int,
        default=DEFAULT_CHUNK,
        help=f"rows per INSERT statement (default {DEFAULT_CHUNK:,})",
    )
    parser.add_argument("--quick", action="store_true", help="the small run (the smoke test's)")
    add_service_options(parser, throwaway="for the run")
    options = parser.parse_args()
    for name, full, quick in (
        ("rows", DEFAULT_ROWS, QUICK_ROWS),
        ("loads", DEFAULT_LOADS, QUICK_LOADS),
        ("warmup", DEFAULT_WARMUP, QUICK_WARMUP),
    ):
        if getattr(options, name) is None:
            setattr(options, name, quick if options.quick else full)
    if min(options.rows, options.loads, options.chunk) < 1 or options.warmup < 0:
        parser.error("--rows, --loads and --chunk must be at least 1, --warmup at least 0")
    return options


async def main() -> int:
    options = parse_options()
    load = f"{psutil.getloadavg()[0]:.2f}"
    given = options.postgres_url is not None
    async with services(options.amqp_url, options.postgres_url) as (broker_url, store_url):
        try:
            filled = await fill(store_url, options.rows, options.chunk)
            measured, answered = await run_pages(
                broker_url, store_url, options.loads, options.warmup
            )
        finally:
            if given:
                await unfill(store_url)
    load += f" / {psutil.getloadavg()[0]:.2f}"
    report(filled, measured, options, answered, load)
    problems = [page.problem for page in measured if page.problem]
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
