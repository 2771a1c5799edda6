"""Worker "hosts" on one machine: each a network namespace with its own address, reached
from the root namespace over a veth pair, and its own hostname for what runs in it.

    root namespace                       host namespace (`Host.name`)
    10.77.<n>.1/24 (`gateway`) ── veth ── 10.77.<n>.2/24 (`address`), default route via it

Servers in the root namespace that listen on 0.0.0.0 (tests/servers.py, `listen_all`) are
reached from a host at its `gateway`. `link_down()` is a partition, not a local failure: the
root end goes down, so the host's end loses its carrier and keeps its routes (its packets
vanish, a connect times out, as behind a pulled cable), and the root's packets to the host
vanish in a blackhole route instead of leaving by the default route. Names carry the
creating process's pid and a random part, so parallel runs never collide; a run killed
before its teardown leaves namespaces that the next `Host` removes (their pid is gone).
Needs root and iproute2.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

PREFIX = "taskq-"
SUBNET = "10.77"
BLACKHOLE_METRIC = "4077"  # (the root's fallback route to a host whose link is down)
_LOCK = Path("/run/lock/taskq-netns.lock")  # one run at a time picks a free subnet
_NAME = re.compile(rf"^{PREFIX}(\d+)-[0-9a-f]+$")


def ip(*args: str, check: bool = True) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


class Host:
    """One worker host: `create()`, `prefix` (a command runs inside: `[*prefix, *argv]`),
    `link_down()`, `link_up()`, `remove()` (also kills what still runs inside)."""

    def __init__(self, label: str) -> None:
        token = uuid.uuid4().hex[:6]
        self.name = f"{PREFIX}{os.getpid()}-{token}"
        self.hostname = f"{label}-{token}"
        self._root_end = f"tq{token}r"  # (interface names: 15 characters at most)
        self._host_end = f"tq{token}h"
        self.subnet = 0
        self.created = False

    @property
    def gateway(self) -> str:
        """The root namespace's address on this host's link: where its servers are reached."""
        return f"{SUBNET}.{self.subnet}.1"

    @property
    def address(self) -> str:
        return f"{SUBNET}.{self.subnet}.2"

    @property
    def prefix(self) -> tuple[str, ...]:
        """Runs the command that follows in the namespace, under the host's own hostname
        (a UTS namespace of its own); the command keeps the pid of the process started."""
        return (
            "ip", "netns", "exec", self.name, "unshare", "--uts",
            "sh", "-c", 'hostname "$0" && exec "$@"', self.hostname,
        )  # fmt: skip

    def create(self) -> None:
        _LOCK.parent.mkdir(parents=True, exist_ok=True)
        with _LOCK.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            sweep_stale()
            self.subnet = _free_subnet()
            ip("netns", "add", self.name)
            self.created = True
            ip("link", "add", self._root_end, "type", "veth", "peer", "name", self._host_end)
            ip("link", "set", self._host_end, "netns", self.name)
            ip("addr", "add", f"{self.gateway}/24", "dev", self._root_end)
            ip("route", "add", "blackhole", self._network, "metric", BLACKHOLE_METRIC)
            ip("link", "set", self._root_end, "up")
        inside = ("-n", self.name)
        ip(*inside, "addr", "add", f"{self.address}/24", "dev", self._host_end)
        ip(*inside, "link", "set", self._host_end, "up")
        ip(*inside, "link", "set", "lo", "up")
        ip(*inside, "route", "add", "default", "via", self.gateway)

    @property
    def _network(self) -> str:
        return f"{SUBNET}.{self.subnet}.0/24"

    def link_down(self) -> None:
        ip("link", "set", self._root_end, "down")

    def link_up(self) -> None:
        ip("link", "set", self._root_end, "up")

    def remove(self) -> None:
        if not self.created:
            return
        remove_namespace(self.name)
        ip("link", "del", self._root_end, check=False)  # (gone with the namespace, usually)
        ip("route", "del", "blackhole", self._network, "metric", BLACKHOLE_METRIC, check=False)
        self.created = False


def remove_namespace(name: str) -> None:
    """Kill what runs in the namespace, then delete it (its end of the veth pair goes with
    it, and so the pair)."""
    for pid in ip("netns", "pids", name, check=False).split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    ip("netns", "del", name, check=False)


def _free_subnet() -> int:
    used = {int(n) for n in re.findall(rf"{SUBNET}\.(\d+)\.", ip("-4", "addr") + ip("route"))}
    free = next((n for n in range(1, 255) if n not in used), None)
    if free is None:
        raise RuntimeError(f"no free {SUBNET}.N.0/24 left for a test host")
    return free


def sweep_stale() -> None:
    """Namespaces left by runs whose process is gone, and blackhole routes to hosts whose
    link no longer exists (the caller holds the lock)."""
    for line in ip("netns", "list", check=False).splitlines():
        name = line.split()[0] if line.split() else ""
        if (found := _NAME.match(name)) and not _alive(int(found.group(1))):
            remove_namespace(name)
    addresses = ip("-4", "addr")
    for line in ip("route", "show", "type", "blackhole").splitlines():
        found = re.match(rf"blackhole ({SUBNET}\.(\d+)\.0/24) metric {BLACKHOLE_METRIC}", line)
        if found and f"{SUBNET}.{found.group(2)}.1/24" not in addresses:
            ip("route", "del", "blackhole", found.group(1), "metric", BLACKHOLE_METRIC, check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def hosts(*labels: str) -> Iterator[Sequence[Host]]:
    """Hosts made for the block, and removed afterwards whatever happened in it."""
    made: list[Host] = []
    try:
        for label in labels:
            host = Host(label)
            made.append(host)
            host.create()
        yield made
    finally:
        for host in made:
            host.remove()
