"""`scaling.py`'s private servers and its meters: what the broker's and the database's own
processes spent, and what the database wrote.

The servers are a private RabbitMQ node and a private PostgreSQL cluster (`tests/servers.py`),
started for the run and removed after it, so that every CPU second their processes spend is
this benchmark's: nothing else talks to them. PostgreSQL runs with fsync on (the tests' private
clusters skip it), so a commit costs what it costs in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import asyncpg
import psutil

from benchmarks.services import REPO_ROOT, asyncpg_url, clean_env
from tests.servers import PostgresCluster, RabbitNode

TEMPLATE = "taskq_template"  # migrated once; each measurement gets a copy


@dataclasses.dataclass
class Servers:
    node: RabbitNode
    postgres: PostgresCluster
    broker_cpu: TreeCpu
    database_cpu: TreeCpu

    @property
    def broker_url(self) -> str:
        return self.node.url

    def store_url(self, database: str) -> str:
        return self.postgres.url(database)


@contextlib.contextmanager
def private_servers() -> Iterator[Servers]:
    """A RabbitMQ node and a PostgreSQL cluster of our own, with a migrated template
    database; both stopped and removed on the way out, whatever happens."""
    node, postgres = RabbitNode(), PostgresCluster(fsync=True)
    try:
        node.start()
        postgres.start()
        migrate(postgres.url(TEMPLATE), postgres)
        beam, postmaster = listening("beam.smp", node.port), listening("postgres", postgres.port)
        yield Servers(node, postgres, TreeCpu(beam), TreeCpu(postmaster))
    finally:
        node.stop()
        postgres.remove()


def listening(name: str, port: int) -> int:
    """The pid of the process called `name` that listens on `port` (the node's name is not
    on beam.smp's command line; the port tells the private servers from the shared ones)."""
    for connection in psutil.net_connections(kind="tcp"):
        if connection.status == psutil.CONN_LISTEN and getattr(connection.laddr, "port", 0) == port:
            if connection.pid is not None and psutil.Process(connection.pid).name() == name:
                return connection.pid
    raise SystemExit(f"FAIL: no {name} process listens on port {port}")


def migrate(store_url: str, postgres: PostgresCluster) -> None:
    admin_url = asyncpg_url(postgres.url("postgres"))
    asyncio.run(execute(admin_url, f'CREATE DATABASE "{TEMPLATE}"'))
    done = subprocess.run(
        [sys.executable, "-m", "taskq", "db", "upgrade"],
        cwd=REPO_ROOT,
        env={**clean_env(), "TASKQ_STORE_URL": store_url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise SystemExit(f"taskq db upgrade failed:\n{done.stdout}{done.stderr}")


async def execute(url: str, statement: str) -> None:
    connection = await asyncpg.connect(url, timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def fresh_database(servers: Servers, name: str) -> AsyncIterator[str]:
    """A copy of the migrated template (empty tables), dropped afterwards; → its store URL."""
    admin = asyncpg_url(servers.store_url("postgres"))
    await execute(admin, f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
    try:
        yield servers.store_url(name)
    finally:
        await execute(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- CPU --------------------------------------------------------------------------------------


def own_cpu(process: psutil.Process) -> float:
    """User + system seconds of the process and of its children it has reaped."""
    times = process.cpu_times()
    return times.user + times.system + times.children_user + times.children_system


class TreeCpu:
    """CPU seconds of a server's process tree: the root's own, what its reaped children
    spent (the postmaster reaps every backend that ends), and each live descendant's. The
    difference between two readings is then exact, whichever backends came and went."""

    def __init__(self, root: int) -> None:
        self.root = psutil.Process(root)

    def read(self, *, leave_out: int | None = None) -> float:
        """Now; `leave_out`: a descendant whose CPU is not counted (this script's own
        connection's backend, which polls the tasks table)."""
        total = own_cpu(self.root)
        for child in self.root.children(recursive=True):
            if child.pid == leave_out:
                continue
            with contextlib.suppress(psutil.Error):
                total += own_cpu(child)
        return total


class WorkerCpu:
    """The workers' CPU from the moment each one registered (its start-up, mostly imports,
    is left out: 4 processes' start-up would weigh on a 20,000-task drain): each process is
    read once when first seen registered, again at the end."""

    def __init__(self, roots: list[int]) -> None:
        self._roots = [psutil.Process(pid) for pid in roots]
        self._start: dict[int, float] = {}
        self.startup = 0.0  # CPU seconds spent before registering, summed

    def processes(self) -> list[psutil.Process]:
        found = list(self._roots)
        for root in self._roots:
            with contextlib.suppress(psutil.Error):
                found += root.children(recursive=True)
        return found

    def mark(self, registered: set[int], everyone: bool) -> None:
        """Read each registered process not read yet; with `everyone` (all have registered)
        the others too (a --processes supervisor, which never registers)."""
        for process in self.processes():
            if process.pid in self._start or not (everyone or process.pid in registered):
                continue
            with contextlib.suppress(psutil.Error):
                self._start[process.pid] = own_cpu(process)
                self.startup += self._start[process.pid]

    def spent(self) -> float:
        total = 0.0
        for process in self.processes():
            with contextlib.suppress(psutil.Error):
                total += own_cpu(process) - self._start.get(process.pid, 0.0)
        return total


class Machine:
    """Busy share of the whole machine (all cores) between `start()` and `stop()`."""

    def start(self) -> None:
        self._before = psutil.cpu_times()

    def stop(self) -> float:
        after = psutil.cpu_times()
        total = sum(after) - sum(self._before)
        idle = (after.idle - self._before.idle) + (after.iowait - self._before.iowait)
        return 1 - idle / total if total > 0 else 0.0


# -- what PostgreSQL and RabbitMQ counted -----------------------------------------------------

COUNTERS = (
    "SELECT xact_commit, tup_inserted, tup_updated, tup_deleted, "
    "pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint AS wal "
    "FROM pg_stat_database WHERE datname = current_database()"
)


@dataclasses.dataclass(frozen=True)
class DbCounters:
    commits: int
    inserted: int
    updated: int
    deleted: int
    wal: int  # bytes of WAL written, the whole cluster

    def __sub__(self, other: DbCounters) -> DbCounters:
        return DbCounters(*(a - b for a, b in zip(self.fields(), other.fields(), strict=True)))

    def fields(self) -> tuple[int, ...]:
        return (self.commits, self.inserted, self.updated, self.deleted, self.wal)

    @property
    def rows(self) -> int:
        return self.inserted + self.updated + self.deleted


async def db_counters(connection: asyncpg.Connection) -> DbCounters:
    """pg_stat_database's counters for this database. A backend reports its counts when its
    transaction ends (at most once a second) and when it exits, so read this once the
    writers have closed their connections; each read is itself one commit."""
    await connection.execute("SELECT pg_stat_clear_snapshot()")
    row = await connection.fetchrow(COUNTERS)
    return DbCounters(*(int(value) for value in row.values()))


def queue_messages(node: RabbitNode, queue: str) -> int:
    """Messages (ready + unacknowledged) in `queue`, from rabbitmqctl (-1: no such queue)."""
    done = node.ctl_sync("list_queues", "name", "messages")
    for line in done.stdout.splitlines():
        name, _, count = line.partition("\t")
        if name == queue:
            return int(count)
    return -1


def connection_bytes(node: RabbitNode) -> tuple[int, int]:
    """Bytes the node received and sent on all its client connections now open."""
    done = node.ctl_sync("list_connections", "recv_oct", "send_oct")
    received = sent = 0
    for line in done.stdout.splitlines():
        if re.fullmatch(r"\d+\t\d+", line.strip()):
            got, gave = line.split("\t")
            received, sent = received + int(got), sent + int(gave)
    return received, sent
