"""Real services for the suite: a fresh RabbitMQ vhost and PostgreSQL database per test.

URLs come from TASKQ_TEST_AMQP_URL and TASKQ_TEST_POSTGRES_URL (local defaults). A service
that cannot be reached fails the run; nothing is ever skipped for it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import aio_pika
import asyncpg
import pytest

import taskq
from taskq.store.migrations import upgrade_database as _upgrade

AMQP_URL = os.environ.get("TASKQ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
POSTGRES_URL = os.environ.get(
    "TASKQ_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
RUN = f"taskq_test_{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Backend:
    """Where a test's app points: the embedded default or the production services."""

    name: str
    broker_url: str
    store_url: str

    def app(self, **kwargs: object) -> taskq.App:
        return taskq.App(self.broker_url, self.store_url, **kwargs)  # type: ignore[arg-type]


def _with_path(url: str, path: str, scheme: str | None = None) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + path, scheme=scheme or parts.scheme))


def _rabbitmqctl(*args: str) -> None:
    done = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"rabbitmqctl {' '.join(args)} failed: {done.stderr.strip()}")


@pytest.fixture(scope="session")
def amqp_server() -> str:
    """The broker answers an AMQP handshake (not just an open port), or the run fails."""

    async def check() -> None:
        connection = await aio_pika.connect(AMQP_URL, timeout=10)
        await connection.close()

    try:
        asyncio.run(check())
    except Exception as exc:
        pytest.fail(f"RabbitMQ at {urlsplit(AMQP_URL).hostname} is not usable: {exc!r}")
    return AMQP_URL


class _Vhosts:
    """Fresh vhosts, made (and the finished ones deleted) `BATCH` at a time in one
    `rabbitmqctl eval`: each rabbitmqctl call starts an Erlang VM (0.4 s of CPU), and two
    calls per test (add, set permissions) took minutes of the suite."""

    BATCH = 32

    def __init__(self) -> None:
        self._fresh: list[str] = []
        self._finished: list[str] = []

    def take(self, user: str) -> str:
        if not self._fresh:
            made = [f"{RUN}_{uuid.uuid4().hex[:8]}" for _ in range(self.BATCH)]
            self._eval(create=made, delete=self._finished, user=user)
            self._fresh, self._finished = made, []
        return self._fresh.pop()

    def finished(self, vhost: str) -> None:
        self._finished.append(vhost)

    def close(self) -> None:
        if self._fresh or self._finished:
            self._eval(create=[], delete=self._fresh + self._finished, user="guest")
            self._fresh, self._finished = [], []

    @staticmethod
    def _eval(*, create: list[str], delete: list[str], user: str) -> None:
        assert all(name.replace("_", "").isalnum() for name in [*create, *delete, user])
        actor = '<<"taskq-tests">>'
        every = '<<".*">>'
        made = ", ".join(f'<<"{name}">>' for name in create)
        gone = ", ".join(f'<<"{name}">>' for name in delete)
        _rabbitmqctl(
            "eval",
            f"[rabbit_vhost:delete(V, {actor}) || V <- [{gone}]], "
            f"[begin ok = rabbit_vhost:add(V, {actor}), "
            f"ok = rabbit_auth_backend_internal:set_permissions("
            f'<<"{user}">>, V, {every}, {every}, {every}, {actor}) end || V <- [{made}]], ok.',
        )


_vhosts = _Vhosts()


@pytest.fixture
def amqp_url(amqp_server: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh vhost for this test, deleted afterwards (with the next batch)."""
    vhost = _vhosts.take(urlsplit(amqp_server).username or "guest")
    yield _with_path(amqp_server, quote(vhost, safe=""))
    _vhosts.finished(vhost)


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(POSTGRES_URL, timeout=10)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """A database migrated once with `taskq db upgrade`; tests get copies of it."""
    template = f"{RUN}_template"
    try:
        asyncio.run(_admin(f'CREATE DATABASE "{template}"'))
    except Exception as exc:
        pytest.fail(f"PostgreSQL at {urlsplit(POSTGRES_URL).hostname} is not usable: {exc!r}")
    asyncio.run(_upgrade(postgres_url_for(template), "head"))
    yield template
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)'))


def postgres_url_for(database: str) -> str:
    return _with_path(POSTGRES_URL, database, scheme="postgresql+asyncpg")


@pytest.fixture
def empty_postgres_url() -> Iterator[str]:
    """A new, empty database (no taskq schema)."""
    database = f"{RUN}_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(f'CREATE DATABASE "{database}"'))
    yield postgres_url_for(database)
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


@pytest.fixture
def postgres_url(postgres_template: str) -> Iterator[str]:
    """A migrated database of this test's own (a copy of the template)."""
    database = f"{RUN}_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(f'CREATE DATABASE "{database}" TEMPLATE "{postgres_template}"'))
    yield postgres_url_for(database)
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'taskq.sqlite3'}"


@pytest.fixture(params=["embedded", "production"])
def backend(request: pytest.FixtureRequest) -> Backend:
    """Each test using this runs twice: memory:// + SQLite, and RabbitMQ + PostgreSQL."""
    if request.param == "embedded":
        return Backend("embedded", "memory://", request.getfixturevalue("sqlite_url"))
    return Backend(
        "production",
        request.getfixturevalue("amqp_url"),
        request.getfixturevalue("postgres_url"),
    )


@pytest.fixture
def production(amqp_url: str, postgres_url: str) -> Backend:
    return Backend("production", amqp_url, postgres_url)


@pytest.fixture
async def opened(backend: Backend) -> AsyncIterator[taskq.App]:
    """An open app on `backend`; register tasks on it before starting a worker."""
    app = backend.app()
    async with app:
        yield app


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _vhosts.close()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--chaos-full",
        action="store_true",
        help="run the chaos scenarios in their long forms (tests/chaos)",
    )
