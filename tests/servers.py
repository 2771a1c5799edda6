"""Throwaway servers for tests that stop, restart or reconfigure one: a private RabbitMQ node
on other ports with its own data directory, removed afterwards. The machine's shared node is
never stopped (other test runs and developers use it).

The node runs as the `rabbitmq` user (its Erlang cookie lives in that user's home), started
the way Debian's wrapper starts the shared one, with every path and port of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

RABBITMQ_HOME = "/var/lib/rabbitmq"
RABBITMQ_BIN = "/usr/lib/rabbitmq/bin"
START_DEADLINE = 60.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RabbitNode:
    """A private RabbitMQ node: `start()`, `ctl(...)` (rabbitmqctl against it), `stop()`."""

    def __init__(self, *, consumer_timeout_ms: int | None = None, listen_all: bool = False) -> None:
        self.name = f"taskq-{uuid.uuid4().hex[:8]}@localhost"
        self.port = free_port()
        self._dist_port = free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="taskq-rabbit-"))
        self._process: subprocess.Popen[bytes] | None = None
        # (listen_all: also on the root side of tests/netns.py's hosts, not loopback only)
        listen = "0.0.0.0" if listen_all else "127.0.0.1"
        settings = [f"listeners.tcp.default = {listen}:{self.port}", "loopback_users = none"]
        if consumer_timeout_ms is not None:
            settings.append(f"consumer_timeout = {consumer_timeout_ms}")
        (self._dir / "rabbitmq.conf").write_text("\n".join(settings) + "\n")
        (self._dir / "enabled_plugins").write_text("[].\n")
        (self._dir / "env.conf").write_text("")
        for sub in ("mnesia", "log"):
            (self._dir / sub).mkdir()
        self._dir.chmod(0o755)
        shutil.chown(self._dir, "rabbitmq", "rabbitmq")
        for path in self._dir.iterdir():
            shutil.chown(path, "rabbitmq", "rabbitmq")

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def start(self) -> None:
        environment = {
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self._dist_port),
            "RABBITMQ_MNESIA_BASE": str(self._dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self._dir / "log"),
            "RABBITMQ_CONFIG_FILE": str(self._dir / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self._dir / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(self._dir / "env.conf"),
            "HOME": RABBITMQ_HOME,
        }
        assignments = " ".join(f"{key}={value}" for key, value in environment.items())
        log = os.open(self._dir / "server.out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._process = subprocess.Popen(
            [
                "su",
                "rabbitmq",
                "-s",
                "/bin/sh",
                "-c",
                f"env {assignments} {RABBITMQ_BIN}/rabbitmq-server",
            ],
            cwd=RABBITMQ_HOME,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        os.close(log)  # (the server holds its own copy)
        deadline = time.monotonic() + START_DEADLINE
        while True:  # (await_startup fails at once until the node has registered with epmd)
            if self._process.poll() is not None:
                raise RuntimeError(f"RabbitMQ node {self.name} exited: {self.output()}")
            if self.ctl_sync("await_startup", "--timeout", "30").returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"RabbitMQ node {self.name} did not start: {self.output()}")
            time.sleep(0.5)

    def output(self) -> str:
        path = self._dir / "server.out"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def log_tail(self, characters: int = 6000) -> str:
        """The end of the node's own log: what it did and why, for a failed test's report."""
        logs = sorted((self._dir / "log").glob("*.log"), key=lambda path: path.stat().st_mtime)
        return logs[-1].read_text(errors="replace")[-characters:] if logs else self.output()

    def ensure_running(self) -> None:
        """Start the `rabbit` app again if an earlier test left it stopped, so that one failed
        scenario does not fail every one after it."""
        if self.ctl_sync("await_startup", "--timeout", "5").returncode == 0:
            return
        started = self.ctl_sync("start_app")
        if started.returncode != 0:
            raise RuntimeError(f"RabbitMQ node {self.name}: start_app: {started.stderr}")

    def ctl_sync(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = " ".join(f"'{arg}'" for arg in args)
        return subprocess.run(
            [
                "su",
                "rabbitmq",
                "-s",
                "/bin/sh",
                "-c",
                f"HOME={RABBITMQ_HOME} {RABBITMQ_BIN}/rabbitmqctl -q -n {self.name} {command}",
            ],
            cwd=RABBITMQ_HOME,
            capture_output=True,
            text=True,
        )

    async def ctl(self, *args: str) -> str:
        """rabbitmqctl against this node (e.g. `stop_app`, `start_app`); fails loudly."""
        done = await asyncio.to_thread(self.ctl_sync, *args)
        assert done.returncode == 0, f"rabbitmqctl {args} on {self.name}: {done.stderr}"
        return done.stdout

    def stop(self) -> None:
        self.ctl_sync("stop")
        if self._process is not None:
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, 9)
        shutil.rmtree(self._dir, ignore_errors=True)


class RabbitCluster:
    """Private RabbitMQ nodes joined into one cluster (3 by default): `start()`, `nodes`,
    `url` (every node's address, comma-separated, as taskq takes a cluster), `stop()`.
    They share the `rabbitmq` user's Erlang cookie, so they can join."""

    def __init__(self, size: int = 3, *, listen_all: bool = False) -> None:
        self.nodes = [RabbitNode(listen_all=listen_all) for _ in range(size)]

    @property
    def url(self) -> str:
        return self.url_via("127.0.0.1")

    def url_via(self, address: str) -> str:
        """The cluster's URL with every node at `address` (a host's gateway: listen_all)."""
        hosts = ",".join(f"{address}:{node.port}" for node in self.nodes)
        return f"amqp://guest:guest@{hosts}/"

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        first = self.nodes[0]
        for node in self.nodes[1:]:
            for args in (("stop_app",), ("reset",), ("join_cluster", first.name), ("start_app",)):
                done = node.ctl_sync(*args)
                if done.returncode != 0:
                    raise RuntimeError(f"rabbitmqctl {args} on {node.name}: {done.stderr}")

    def node_named(self, name: str) -> RabbitNode:
        return next(node for node in self.nodes if node.name == name)

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()


@contextlib.contextmanager
def running(node: RabbitNode) -> Iterator[RabbitNode]:
    """The node started, and stopped and removed afterwards."""
    node.start()
    try:
        yield node
    finally:
        node.stop()


POSTGRES_BIN = Path("/usr/lib/postgresql")


def _postgres_bin() -> Path:
    versions = sorted(POSTGRES_BIN.glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if not versions:
        raise RuntimeError(f"no PostgreSQL server binaries under {POSTGRES_BIN}")
    return versions[-1].parent


class PostgresCluster:
    """A private PostgreSQL cluster (its own data directory and port, trust auth), run as
    the `postgres` user: `start()`, `stop()`, `restart()`, `kill()`, `remove()`. With
    `standby_of`, a streaming standby of that (running) cluster, copied by pg_basebackup:
    `promote()` makes it a primary. Without `fsync` (the tests' default) commits skip the
    disk flush; a benchmark that counts what a commit costs asks for it, as production runs."""

    def __init__(
        self,
        *,
        standby_of: PostgresCluster | None = None,
        fsync: bool = False,
        listen_all: bool = False,
    ) -> None:
        self.port = free_port()
        self._fsync = "on" if fsync else "off"
        self._listen_all = listen_all  # (also tests/netns.py's hosts: trusted from 10.77/16)
        self._bin = _postgres_bin()
        self._dir = Path(tempfile.mkdtemp(prefix="taskq-postgres-"))
        self._dir.chmod(0o755)
        shutil.chown(self._dir, "postgres", "postgres")
        self._data = self._dir / "data"
        if standby_of is None:
            self._as_postgres(
                "initdb", "-D", str(self._data), "-A", "trust", "-U", "postgres", "--no-sync"
            )
        else:  # (initdb's trust lines let 127.0.0.1 replicate)
            self._as_postgres(
                "pg_basebackup", "-D", str(self._data), "-h", "127.0.0.1",
                "-p", str(standby_of.port), "-U", "postgres", "-R", "-X", "stream",
                "-c", "fast", "--no-sync",
            )  # fmt: skip
        if listen_all and standby_of is None:  # (a standby copies its primary's lines)
            with (self._data / "pg_hba.conf").open("a") as hba:
                hba.write("host all all 10.77.0.0/16 trust\n")

    def url(self, database: str = "postgres", host: str = "127.0.0.1") -> str:
        return f"postgresql+asyncpg://postgres@{host}:{self.port}/{database}"

    def _as_postgres(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["runuser", "-u", "postgres", "--", str(self._bin / tool), *args],
            capture_output=True,
            text=True,
            cwd=self._dir,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{tool} {args}: {done.stdout}{done.stderr}")
        return done

    def start(self) -> None:
        listen = "*" if self._listen_all else "127.0.0.1"
        options = (
            f"-p {self.port} -k {self._dir} -c listen_addresses={listen} -c fsync={self._fsync}"
        )
        self._as_postgres(
            "pg_ctl", "-D", str(self._data), "-o", options, "-l", str(self._dir / "log"), "-w",
            "start",
        )  # fmt: skip

    def stop(self) -> None:
        self._as_postgres("pg_ctl", "-D", str(self._data), "-m", "fast", "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL to the postmaster and every backend at once: the machine died."""
        pid = int((self._data / "postmaster.pid").read_text().split()[0])
        subprocess.run(["pkill", "-9", "-P", str(pid)], check=False)
        os.kill(pid, 9)

    def promote(self) -> None:
        """A standby stops following and takes writes (pg_ctl promote, waited for)."""
        self._as_postgres("pg_ctl", "-D", str(self._data), "-w", "promote")

    def log_tail(self, characters: int = 4000) -> str:
        path = self._dir / "log"
        return path.read_text(errors="replace")[-characters:] if path.exists() else ""

    def remove(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)
