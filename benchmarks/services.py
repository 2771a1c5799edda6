"""The benchmarks' services: throwaway RabbitMQ vhosts and PostgreSQL databases, or the given ones.

Every benchmark script imports these; run as `python benchmarks/NAME.py`, a script first puts
the repository root on `sys.path` (see `benchmarks/run.py`), so that `benchmarks.*` is the one
name for these modules in the script and in the worker subprocesses that import its app.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCAL_AMQP = "amqp://guest:guest@127.0.0.1:5672/"
LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


def asyncpg_url(url: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme.split('+')[0]}://{rest}"


def store_url_of(url: str) -> str:
    return "postgresql+asyncpg://" + url.split("://", 1)[1]


def with_path(url: str, path: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + path))


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@contextlib.contextmanager
def throwaway_vhost() -> Iterator[str]:
    vhost = f"taskq_bench_{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield with_path(LOCAL_AMQP, quote(vhost, safe=""))
    finally:
        rabbitmqctl("delete_vhost", vhost)


@contextlib.asynccontextmanager
async def throwaway_database() -> AsyncIterator[str]:
    name = f"taskq_bench_{uuid.uuid4().hex[:8]}"
    await admin(f'CREATE DATABASE "{name}"')
    try:
        url = store_url_of(with_path(LOCAL_POSTGRES, name))
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "taskq", "db", "upgrade"],
            cwd=REPO_ROOT,
            env={**clean_env(), "TASKQ_STORE_URL": url},
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise SystemExit(f"taskq db upgrade failed:\n{done.stdout}{done.stderr}")
        yield url
    finally:
        await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def admin(statement: str) -> None:
    connection = await asyncpg.connect(LOCAL_POSTGRES, timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def clean_env() -> dict[str, str]:
    """This process's environment less taskq settings, PYTHONPATH and every OTEL_* variable."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TASKQ_", "OTEL_")) and k != "PYTHONPATH"
    }


@contextlib.asynccontextmanager
async def services(amqp: str | None, postgres: str | None) -> AsyncIterator[tuple[str, str]]:
    """(broker URL, store URL): the given ones, or throwaway ones removed afterwards."""
    async with contextlib.AsyncExitStack() as stack:
        if amqp is None:
            amqp = stack.enter_context(throwaway_vhost())
        if postgres is None:
            postgres = await stack.enter_async_context(throwaway_database())
        yield amqp, store_url_of(postgres)


@contextlib.contextmanager
def worker_process(
    command: list[str],
    env: dict[str, str],
    workdir: Path,
    *,
    stop_within: float = 60,
    new_session: bool = False,
) -> Iterator[subprocess.Popen[bytes]]:
    """A worker subprocess logging to `workdir`/worker.log; stopped with SIGTERM (killed
    after `stop_within` s) on the way out, its log's end printed if it failed. `new_session`:
    a session of its own, as a service manager starts each worker; Linux's autogroup
    scheduler shares the CPU between sessions first, so workers started in this script's
    session would share one session's part of it."""
    log_path = workdir / "worker.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=new_session,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(stop_within)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.returncode not in (0, -signal.SIGTERM):
            print(f"worker exited {process.returncode}; its log ends:", file=sys.stderr)
            print(log_path.read_text(errors="replace")[-5000:], file=sys.stderr)


def add_service_options(parser: argparse.ArgumentParser, *, throwaway: str) -> None:
    """--amqp-url and --postgres-url; without them, throwaway ones (`throwaway` says how
    many: "per measurement", say)."""
    parser.add_argument(
        "--amqp-url",
        default=os.environ.get("TASKQ_BENCH_AMQP_URL"),
        help=f"RabbitMQ to use (default: TASKQ_BENCH_AMQP_URL, else a throwaway local vhost "
        f"{throwaway})",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("TASKQ_BENCH_POSTGRES_URL"),
        help="a migrated PostgreSQL database (default: TASKQ_BENCH_POSTGRES_URL, else a "
        f"throwaway local one {throwaway})",
    )
