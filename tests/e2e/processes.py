"""Helpers for the end-to-end tests: `taskq worker` subprocesses, RabbitMQ and SQL probes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aio_pika
import asyncpg

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER_APP = "tests.e2e.worker_app:app"
WORKER_COMMAND = (sys.executable, "-m", "taskq", "worker", WORKER_APP)
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


async def rabbitmqctl(*args: str) -> str:
    code, output = await run_command("rabbitmqctl", "-q", *args)
    assert code == 0, f"rabbitmqctl {' '.join(args)} exited {code}: {output.strip()}"
    return output


async def consumer_count(vhost: str, queue: str) -> int:
    output = await rabbitmqctl("list_consumers", "-p", vhost, "--no-table-headers", "queue_name")
    return sum(1 for line in output.splitlines() if line.strip() == queue)


async def wait_until(
    condition: Callable[[], Awaitable[bool]], *, within: float, what: str, interval: float = 0.2
) -> None:
    """Poll `condition` until it holds; fail naming `what` if `within` seconds pass first."""
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(interval)


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
    """One `taskq worker` subprocess; its stderr goes to a file (a pipe could fill up)."""

    def __init__(self, process: subprocess.Popen[bytes], log: Path) -> None:
        self.process = process
        self.log = log

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        """SIGTERM, up to STOP_GRACE seconds to drain, then SIGKILL."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process.wait()


class Workers:
    """Starts `taskq worker` subprocesses against one vhost + database, stops them all later."""

    def __init__(self, *, amqp_url: str, store_url: str, workdir: Path) -> None:
        self.amqp_url = amqp_url
        self.store_url = store_url
        self.vhost = vhost_of(amqp_url)
        self.workdir = workdir
        self.order_file = workdir / "order.txt"
        self.started: list[WorkerProcess] = []

    def env(self) -> dict[str, str]:
        return cli_env(
            TASKQ_BROKER_URL=self.amqp_url,
            TASKQ_STORE_URL=self.store_url,
            E2E_ORDER_FILE=str(self.order_file),
        )

    def _spawn(self, concurrency: int) -> WorkerProcess:
        log = self.workdir / f"worker-{len(self.started)}.log"
        with log.open("wb") as stderr:
            process = subprocess.Popen(
                [*WORKER_COMMAND, "--concurrency", str(concurrency)],
                cwd=REPO_ROOT,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
            )
        worker = WorkerProcess(process, log)
        self.started.append(worker)
        return worker

    def alive(self) -> list[WorkerProcess]:
        return [w for w in self.started if w.process.poll() is None]

    async def start(self, *, concurrency: int) -> WorkerProcess:
        """Start a worker and return once RabbitMQ shows it consuming queue `default`."""
        worker = await asyncio.to_thread(self._spawn, concurrency)
        await self.wait_consumers(len(self.alive()), also=worker)
        return worker

    async def wait_consumers(self, count: int, *, also: WorkerProcess | None = None) -> None:
        """Wait until exactly `count` consumers are on `default` (a killed one is gone)."""

        async def reached() -> bool:
            if also is not None and also.process.poll() is not None:
                raise AssertionError(
                    f"taskq worker exited with {also.process.returncode} before consuming:\n"
                    + also.output()
                )
            return await consumer_count(self.vhost, "default") == count

        await wait_until(
            reached, within=START_DEADLINE, what=f"{count} consumer(s) on queue 'default'"
        )

    async def kill(self, worker: WorkerProcess) -> None:
        """`kill -9` the worker and wait until RabbitMQ has dropped its consumer."""
        os.kill(worker.pid, signal.SIGKILL)
        code = await asyncio.to_thread(worker.process.wait, 10)
        assert code == -signal.SIGKILL, f"worker exited with {code}, not by SIGKILL"
        await self.wait_consumers(len(self.alive()))

    def stop_all(self) -> None:
        for worker in self.started:
            worker.stop()

    def outputs(self) -> list[tuple[str, str]]:
        """(title, last 20,000 characters of stderr) per worker, for a failure report."""
        return [
            (
                f"taskq worker #{index} (pid {worker.pid}, exit {worker.process.returncode})",
                worker.output()[-20_000:],
            )
            for index, worker in enumerate(self.started)
        ]
