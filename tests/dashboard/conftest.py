"""The dashboard's browser tests: per module, one vhost and database, one `taskq worker` of
`dashboard_app`, one `taskq dashboard` process with a token, and headless Debian chromium
driven by chromedriver (installed by .ci/services where missing)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import signal
import subprocess
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

import taskq
from tests.conftest import RUN, _admin, _vhosts, _with_path, postgres_url_for
from tests.dashboard import dashboard_app
from tests.e2e.processes import REPO_ROOT, TASKQ, Workers, cli_env
from tests.servers import free_port
from tests.support import eventually_sync

APP = "tests.dashboard.dashboard_app:app"
TOKEN = "dashboard-test-token-7f3a"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@dataclasses.dataclass
class Site:
    """A running dashboard over a backend that a worker serves."""

    url: str  # http://127.0.0.1:PORT
    broker_url: str
    store_url: str
    workdir: Path
    log: Path

    def app(self) -> taskq.App:
        """A client of the same backend, with the worker's tasks registered."""
        return dashboard_app.build(self.broker_url, self.store_url)

    def gates(self) -> Path:
        """A fresh folder for a task's gate files."""
        folder = self.workdir / f"gates-{uuid.uuid4().hex[:8]}"
        folder.mkdir()
        return folder


@pytest.fixture(scope="module")
def site(
    amqp_server: str, postgres_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    vhost = _vhosts.take("guest")
    database = f"{RUN}_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(f'CREATE DATABASE "{database}" TEMPLATE "{postgres_template}"'))
    broker_url = _with_path(amqp_server, quote(vhost, safe=""))
    store_url = postgres_url_for(database)
    workdir = tmp_path_factory.mktemp("dashboard")
    workers = Workers(amqp_url=broker_url, store_url=store_url, workdir=workdir)
    log = workdir / "dashboard.log"
    server: subprocess.Popen[bytes] | None = None
    try:
        asyncio.run(workers.start(concurrency=8, app=APP))
        port = free_port()
        env = cli_env(
            TASKQ_BROKER_URL=broker_url, TASKQ_STORE_URL=store_url, TASKQ_DASHBOARD_TOKEN=TOKEN
        )
        with log.open("wb") as output:
            server = subprocess.Popen(
                [*TASKQ, "dashboard", "--port", str(port)],
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                start_new_session=True,
            )
        url = f"http://127.0.0.1:{port}"
        eventually_sync(
            lambda: _answers(f"{url}/api/workers", server),
            what=f"taskq dashboard to answer on {url} (log: {log})",
            within=30,
        )
        yield Site(url, broker_url, store_url, workdir, log)
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        workers.stop_all()
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        _vhosts.finished(vhost)


def _answers(url: str, server: subprocess.Popen[bytes]) -> bool:
    if server.poll() is not None:
        raise AssertionError(f"taskq dashboard exited with {server.returncode}")
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """Headless chromium; a missing browser fails the run (.ci/services installs it)."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # (CI runs as root)
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        "--disable-gpu",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
async def client(site: Site) -> AsyncIterator[taskq.App]:
    app = site.app()
    async with app:
        yield app
