"""Helpers for the end-to-end tests: `taskq worker` subprocesses, RabbitMQ and SQL probes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika
import asyncpg
import psutil

from tests.support import eventually

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER_APP = "tests.e2e.worker_app:app"
TASKQ = (sys.executable, "-m", "taskq")
WORKER_COMMAND = (*TASKQ, "worker", WORKER_APP)
START_DEADLINE = 30.0
STOP_GRACE = 20.0


def vhost_of(amqp_url: str) -> str:
    return unquote(urlsplit(amqp_url).path[1:]) or "/"


def plain_postgres_url(store_url: str) -> str:
    """asyncpg's form of a SQLAlchemy URL (`postgresql+asyncpg://` → `postgresql://`)."""
    return "postgresql://" + store_url.partition("://")[2]


def cli_env(**overrides: str) -> dict[str, str]:
    """The environment of a deployed process: no terminal width, no stray taskq settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("TASKQ_") and key not in ("COLUMNS", "LINES", "PYTHONPATH")
    }
    env.update(overrides)
    return env


async def run_command(
    *argv: str, limit: float = 60.0, cwd: Path | None = None, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run a short command; → (exit code, stdout + stderr)."""
    process = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        async with asyncio.timeout(limit):
            output, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"{' '.join(argv)} did not finish within {limit} s") from None
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


async def run_cli(*argv: str, env: dict[str, str], limit: float = 60.0) -> tuple[int, str, str]:
    """Run `python -m taskq ARGV...` from the repository; → (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        *TASKQ,
        *argv,
        cwd=REPO_ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(limit):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"taskq {' '.join(argv)} did not finish within {limit} s") from None
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def json_values(text: str) -> list[Any]:
    """Every JSON value in `text`, one after another (whatever whitespace separates them)."""
    decoder = json.JSONDecoder()
    values: list[Any] = []
    position = 0
    while (position := _skip_space(text, position)) < len(text):
        value, position = decoder.raw_decode(text, position)
        values.append(value)
    return values


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position].isspace():
        position += 1
    return position


async def taskq_workers(store_url: str) -> list[dict[str, Any]]:
    """The rows `taskq workers --json` prints (running processes, the leader marked)."""
    code, out, err = await run_cli("workers", "--json", env=cli_env(TASKQ_STORE_URL=store_url))
    assert code == 0, f"taskq workers --json exited {code}:\n{err}"
    return json_values(out)


async def leader_pid(store_url: str) -> int | None:
    """The pid of the process `taskq workers --json` marks as leader (None if none is)."""
    leaders = [row for row in await taskq_workers(store_url) if row["leader"]]
    assert len(leaders) <= 1, f"more than one leader: {leaders}"
    return int(leaders[0]["pid"]) if leaders else None


async def rabbitmqctl(*args: str) -> str:
    code, output = await run_command("rabbitmqctl", "-q", *args)
    assert code == 0, f"rabbitmqctl {' '.join(args)} exited {code}: {output.strip()}"
    return output


Ctl = Callable[..., Awaitable[str]]


async def consumer_count(connection: aio_pika.abc.AbstractConnection, queue: str) -> int:
    """Consumers on `queue` of `connection`'s vhost right now (0 while it does not exist yet),
    by a passive declare: milliseconds of CPU, where each `rabbitmqctl list_consumers` starts
    an Erlang VM (half a second of CPU: the polls of worker starts took minutes of the suite)."""
    channel = await connection.channel()
    try:
        declared = await channel.declare_queue(queue, passive=True)
    except aio_pika.exceptions.ChannelNotFoundEntity:  # (it closes the channel)
        return 0
    finally:
        if not channel.is_closed:
            await channel.close()
    assert declared.declaration_result is not None
    return declared.declaration_result.consumer_count or 0


async def queue_messages(vhost: str, queue: str) -> int:
    """Messages in `queue` (ready + unacknowledged), as `rabbitmqctl list_queues` counts them."""
    output = await rabbitmqctl("list_queues", "-p", vhost, "--no-table-headers", "name", "messages")
    counts = dict(line.split() for line in output.splitlines() if line.strip())
    return int(counts[queue])


async def wait_until(
    condition: Callable[[], Awaitable[bool]], *, within: float, what: str, interval: float = 0.2
) -> None:
    """Poll `condition` until it holds; fail naming `what` if `within` seconds pass first."""
    await eventually(condition, what=what, within=within, interval=interval)


async def wait_for_amqp(amqp_url: str, *, within: float = 90.0) -> None:
    """Wait until RabbitMQ completes an AMQP handshake on `amqp_url` again."""

    async def handshake() -> bool:
        try:
            connection = await aio_pika.connect(amqp_url, timeout=5)
        except Exception:
            return False
        await connection.close()
        return True

    await wait_until(handshake, within=within, what="RabbitMQ to accept AMQP", interval=0.5)


async def sql(store_url: str, query: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(plain_postgres_url(store_url), timeout=10)
    try:
        return list(await connection.fetch(query))
    finally:
        await connection.close()


async def state_counts(store_url: str) -> dict[str, int]:
    rows = await sql(store_url, "SELECT state, count(*) FROM taskq_tasks GROUP BY state")
    return {row["state"]: row["count"] for row in rows}


class WorkerProcess:
    """One `taskq worker` (or `taskq scheduler`) subprocess; its stderr goes to a file.

    It leads a process group of its own, so that a supervisor's children die with it when
    it does not stop in time. `consumers` is how many consumers it keeps on queue `default`
    once up: one per process (`--processes N` has N).
    """

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        log: Path,
        role: str = "worker",
        *,
        consumers: int = 1,
        grace: float = STOP_GRACE,
    ) -> None:
        self.process = process
        self.log = log
        self.role = role
        self.consumers = consumers
        self.grace = grace

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def children(self) -> list[int]:
        """Pids of the live worker processes a supervisor (`--processes`) runs, oldest first."""
        try:
            found = psutil.Process(self.pid).children()
        except psutil.NoSuchProcess:
            return []
        alive = []
        for child in found:
            with contextlib.suppress(psutil.NoSuchProcess):
                if child.status() != psutil.STATUS_ZOMBIE:
                    alive.append((child.create_time(), child.pid))
        return [pid for _, pid in sorted(alive)]

    def stop(self) -> None:
        """SIGTERM, up to `grace` seconds to drain, then SIGKILL (with its children)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(self.grace)
            except subprocess.TimeoutExpired:
                for child in self.children():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child, signal.SIGKILL)
                self.process.kill()
        self.process.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)  # children left behind by a killed supervisor


class Workers:
    """Starts `taskq worker` (and `taskq scheduler`) subprocesses against one vhost +
    database, and stops them all later. With `prefix`, each command runs after it (e.g. in a
    network namespace: tests/netns.py `Host.prefix`; the process started keeps its pid)."""

    def __init__(
        self,
        *,
        amqp_url: str,
        store_url: str,
        workdir: Path,
        ctl: Ctl = rabbitmqctl,
        prefix: Sequence[str] = (),
    ) -> None:
        # rabbitmqctl against the node the workers use, for callers (the waits for consumers
        # are passive declares over `amqp_url`: see `consumer_count`)
        self.ctl = ctl
        self.amqp_url = amqp_url
        self.store_url = store_url
        self.vhost = vhost_of(amqp_url)
        self.workdir = workdir
        self.prefix = tuple(prefix)
        self.order_file = workdir / "order.txt"
        self.ticks_file = workdir / "ticks.txt"
        self.started: list[WorkerProcess] = []

    def env(self) -> dict[str, str]:
        return cli_env(
            TASKQ_BROKER_URL=self.amqp_url,
            TASKQ_STORE_URL=self.store_url,
            E2E_ORDER_FILE=str(self.order_file),
            E2E_TICKS_FILE=str(self.ticks_file),
        )

    def _spawn(
        self,
        argv: Sequence[str],
        role: str,
        env: Mapping[str, str] | None = None,
        *,
        consumers: int = 1,
        grace: float = STOP_GRACE,
    ) -> WorkerProcess:
        log = self.workdir / f"{role}-{len(self.started)}.log"
        with log.open("wb") as stderr:
            process = subprocess.Popen(
                [*self.prefix, *argv],
                cwd=REPO_ROOT,
                env={**self.env(), **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
            )
        worker = WorkerProcess(process, log, role, consumers=consumers, grace=grace)
        self.started.append(worker)
        return worker

    def alive(self) -> list[WorkerProcess]:
        return [w for w in self.started if w.process.poll() is None]

    def consuming(self) -> list[WorkerProcess]:
        """Live `taskq worker` processes (a `taskq scheduler` consumes nothing)."""
        return [w for w in self.alive() if w.role == "worker"]

    def expected_consumers(self) -> int:
        """Consumers on `default` once every live worker has all its processes up."""
        return sum(w.consumers for w in self.consuming())

    async def start(
        self,
        *,
        concurrency: int,
        app: str = WORKER_APP,
        scheduler: bool = True,
        env: Mapping[str, str] | None = None,
        processes: int = 1,
        options: Sequence[str] = (),
        grace: float = STOP_GRACE,
    ) -> WorkerProcess:
        """Start a worker and return once RabbitMQ shows it consuming queue `default` (with
        `processes` > 1: every one of its processes).

        `env` adds variables to the worker's environment (e.g. TASKQ_LEASE_AFTER); `options`
        are further `taskq worker` flags; `grace` is how long teardown waits after SIGTERM."""
        worker = await self.spawn(
            concurrency=concurrency,
            app=app,
            scheduler=scheduler,
            env=env,
            processes=processes,
            options=options,
            grace=grace,
        )
        await self.wait_consumers(self.expected_consumers(), also=worker)
        return worker

    async def spawn(
        self,
        *,
        concurrency: int,
        app: str = WORKER_APP,
        scheduler: bool = True,
        env: Mapping[str, str] | None = None,
        processes: int = 1,
        options: Sequence[str] = (),
        grace: float = STOP_GRACE,
    ) -> WorkerProcess:
        """Start a worker and return at once (for a worker that may die before it is seen
        consuming, e.g. one that picks up a task that kills its process)."""
        argv = [*TASKQ, "worker", app, "--concurrency", str(concurrency)]
        if not scheduler:
            argv.append("--no-scheduler")
        if processes != 1:
            argv += ["--processes", str(processes)]
        argv += options
        return await asyncio.to_thread(
            self._spawn, argv, "worker", env, consumers=processes, grace=grace
        )

    async def start_scheduler(self, *, app: str = WORKER_APP) -> WorkerProcess:
        """Start `taskq scheduler APP`; return once its row in the workers table is running."""
        scheduler = await asyncio.to_thread(self._spawn, [*TASKQ, "scheduler", app], "scheduler")

        async def registered() -> bool:
            if scheduler.process.poll() is not None:
                raise AssertionError(
                    f"taskq scheduler exited with {scheduler.process.returncode}:\n"
                    + scheduler.output()
                )
            found = await sql(
                self.store_url,
                f"SELECT 1 FROM taskq_workers WHERE pid = {scheduler.pid} AND state = 'running'",
            )
            return bool(found)

        await wait_until(registered, within=START_DEADLINE, what="taskq scheduler to register")
        return scheduler

    async def wait_consumers(self, count: int, *, also: WorkerProcess | None = None) -> None:
        """Wait until exactly `count` consumers are on `default` (a killed one is gone)."""

        async def reached() -> bool:
            if also is not None and also.process.poll() is not None:
                raise AssertionError(
                    f"taskq worker exited with {also.process.returncode} before consuming:\n"
                    + also.output()
                )
            return await consumer_count(connection, "default") == count

        async with await aio_pika.connect(self.amqp_url, timeout=10) as connection:
            await wait_until(
                reached,
                within=START_DEADLINE,
                what=f"{count} consumer(s) on queue 'default'",
                interval=0.05,
            )

    async def kill(self, worker: WorkerProcess) -> None:
        """`kill -9` the worker and wait until RabbitMQ has dropped its consumer."""
        os.kill(worker.pid, signal.SIGKILL)
        code = await asyncio.to_thread(worker.process.wait, 10)
        assert code == -signal.SIGKILL, f"worker exited with {code}, not by SIGKILL"
        await self.wait_consumers(self.expected_consumers())

    def stop_all(self) -> None:
        for worker in self.started:
            worker.stop()

    def outputs(self) -> list[tuple[str, str]]:
        """(title, last 20,000 characters of stderr) per worker, for a failure report."""
        return [
            (
                f"taskq {worker.role} #{index} (pid {worker.pid}, "
                f"exit {worker.process.returncode})",
                worker.output()[-20_000:],
            )
            for index, worker in enumerate(self.started)
        ]


def reply(text: str) -> None:
    """A helper process's answer to the test that started it: lines on its stdout."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
