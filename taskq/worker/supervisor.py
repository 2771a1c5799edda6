"""`taskq worker --processes N`: N worker processes, kept alive and within their limits.

A child that dies is replaced, after a backoff that grows while it keeps dying soon after
starting. A child that dies before it ever registered as a worker cannot start (a wrong
URL, a bad app): past a limit the supervisor gives up on it and says why. One that had
started was killed by what it ran (a poison task, out of memory): it is always replaced,
so no task can take a slot out of service. A child that exits with RECYCLE_EXIT reached
its task or memory limit, finished its tasks, and is replaced at once. The first
SIGTERM/SIGINT is passed on to every child (each drains gracefully); a second one kills
them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from taskq.exceptions import StoreError
from taskq.store import Store
from taskq.telemetry import prometheus
from taskq.worker import health, heartbeat, http
from taskq.worker.reachability import Reachability

logger = logging.getLogger(__name__)

# Set for children when the supervisor serves /metrics: where each child's socket goes.
SNAPSHOT_DIR_ENV = "TASKQ_METRICS_SNAPSHOT_DIR"
RECYCLE_EXIT = 3  # a child over its limit: replace it, it did nothing wrong
FAST_CRASH = 10.0  # a child dying sooner than this after its start is crashing at start
MAX_FAST_CRASHES = 5
MAX_BACKOFF = 30.0


class Supervisor:
    def __init__(
        self,
        child_argv: Sequence[str],
        processes: int,
        new_store: Callable[[], Store],
        *,
        health: tuple[str, int] | None = None,
        metrics: tuple[str, int] | None = None,
        reachability: Reachability | None = None,
    ) -> None:
        self._argv = list(child_argv)
        self._reachability = reachability  # what /readyz checks besides the children
        self._health = health
        self._metrics = metrics
        self._snapshot_dir: Path | None = None
        # The latest snapshot of each live child, and the sum of those of children gone,
        # so that the counters a scrape shows never go back when a child is replaced.
        self._snapshots: dict[int, prometheus.Snapshot] = {}
        self._retired: prometheus.Snapshot = {}
        self._processes = processes
        self._new_store = new_store  # (one for each dead child to mark)
        self._stopping = False
        self._children: dict[int, asyncio.subprocess.Process] = {}

    async def run(self) -> int:
        """→ the exit code: 0 after a requested stop, 1 if children kept crashing."""
        loop = asyncio.get_running_loop()
        signals = 0

        def on_signal(signum: int) -> None:
            nonlocal signals
            signals += 1
            self._stopping = True
            # The second signal is passed on too: a child's own second signal makes it hand
            # its running tasks back at once. Only a third one kills.
            forward = signal.SIGTERM if signals <= 2 else signal.SIGKILL
            logger.info(
                "%s: passing %s to %d children",
                signal.Signals(signum).name,
                forward.name,
                len(self._children),
            )
            for child in list(self._children.values()):
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(forward)

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        async with contextlib.AsyncExitStack() as probes:
            if self._health is not None:
                # One port for the whole worker: ready while every child process is up.
                await probes.enter_async_context(health.http_probes(*self._health, self._ready))
                if self._reachability is not None:
                    probes.push_async_callback(self._reachability.close)
            if self._metrics is not None:
                self._snapshot_dir = Path(probes.enter_context(tempfile.TemporaryDirectory()))
                host, port = self._metrics
                bound = await probes.enter_async_context(
                    http.serving(host, port, {"/metrics": self._scrape})
                )
                logger.info("metrics of all children on http://%s:%d/metrics", host, bound)
            slots = await asyncio.gather(*(self._keep(slot) for slot in range(self._processes)))
        return 0 if all(slots) else 1

    async def _scrape(self) -> tuple[str, str, bytes]:
        """Every child's metrics, merged into one worker's."""
        assert self._snapshot_dir is not None
        pids = [child.pid for child in self._children.values()]
        taken = await asyncio.gather(
            *(prometheus.read_snapshot(self._snapshot_dir / f"{pid}.sock") for pid in pids)
        )
        alive = {child.pid for child in self._children.values()}
        for pid, snapshot in zip(pids, taken, strict=True):
            # (A child that exited meanwhile is counted in the retired totals already.)
            if snapshot is not None and pid in alive:
                self._snapshots[pid] = snapshot
        merged = prometheus.merge([self._retired, *self._snapshots.values()])
        return "200 OK", prometheus.CONTENT_TYPE, prometheus.render(merged).encode()

    def _retire(self, pid: int) -> None:
        """A child is gone: keep its last counts in the totals."""
        last = self._snapshots.pop(pid, None)
        if self._snapshot_dir is not None:
            last = prometheus.read_final_snapshot(self._snapshot_dir / f"{pid}.sock") or last
        if last is not None:
            gone = {name: m for name, m in last.items() if m["kind"] in ("counter", "histogram")}
            self._retired = prometheus.merge([self._retired, gone])

    async def _ready(self) -> dict[str, bool]:
        """Ready while every child runs and (as the children need) the broker and the store
        answer."""
        checks = {"children": len(self._children) == self._processes}
        if self._reachability is not None:
            checks |= await self._reachability.check()
        return checks

    async def _keep(self, slot: int) -> bool:
        """Keep one child running until a stop; → False if it kept crashing at start."""
        fast_crashes = 0
        while not self._stopping:
            started = time.monotonic()
            # A session of its own: a Ctrl-C to the terminal's process group reaches only the
            # supervisor, which passes it on once (a child must not count it twice).
            token = heartbeat.new_token()  # (the child's id ends with it: `_mark_dead`)
            env = {**os.environ, heartbeat.TOKEN_ENV: token}
            if self._snapshot_dir is not None:
                env[SNAPSHOT_DIR_ENV] = str(self._snapshot_dir)
            child = await asyncio.create_subprocess_exec(
                *self._argv, start_new_session=True, env=env
            )
            self._children[slot] = child
            logger.info(
                "child %d started (pid %d)", slot, child.pid, extra={"action": "child_started"}
            )
            code = await child.wait()
            del self._children[slot]
            self._retire(child.pid)
            if self._stopping:
                return True
            if code == RECYCLE_EXIT:
                logger.info("child %d (pid %d) reached its limit: replacing it", slot, child.pid)
                fast_crashes = 0
                continue
            had_started = await self._mark_dead(heartbeat.process_id(child.pid, token))
            lived = time.monotonic() - started
            fast_crashes = fast_crashes + 1 if lived < FAST_CRASH else 0
            if fast_crashes >= MAX_FAST_CRASHES and not had_started:
                logger.error(
                    "child %d died %d times within %.0f s of starting (last exit code %s); "
                    "not restarting it: read its output above, fix the cause, then restart",
                    slot,
                    fast_crashes,
                    FAST_CRASH,
                    code,
                    extra={"action": "child_gave_up"},
                )
                return False
            backoff = min(0.5 * 2 ** max(fast_crashes - 1, 0), MAX_BACKOFF) if fast_crashes else 0.2
            logger.warning(
                "child %d (pid %d) died (exit code %s) after %.1f s; restarting in %.1f s",
                slot,
                child.pid,
                code,
                lived,
                backoff,
                extra={"action": "child_died"},
            )
            await asyncio.sleep(backoff)
        return True

    async def _mark_dead(self, worker_id: str) -> bool:
        """The child cannot say goodbye itself; its row must not look alive for 30 s.
        → whether it had registered as a worker (it started, then something killed it).
        By its id, not host and pid: processes of two hosts (containers) can share both."""
        store = self._new_store()
        try:
            await store.open()
            return bool(await store.mark_process_dead(worker_id))
        except StoreError as exc:
            logger.warning("could not mark dead child %s in the workers table: %s", worker_id, exc)
            return False
        finally:
            await store.close()


def memory_limit(text: str) -> int:
    """'150MB', '1.5GiB', '200m' or plain bytes → bytes."""
    units = {
        "": 1,
        "b": 1,
        "k": 10**3,
        "kb": 10**3,
        "kib": 2**10,
        "m": 10**6,
        "mb": 10**6,
        "mib": 2**20,
        "g": 10**9,
        "gb": 10**9,
        "gib": 2**30,
    }
    cleaned = text.strip().lower()
    number = cleaned.rstrip("abgikm")
    unit = cleaned[len(number) :]
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if unit not in units or value <= 0:
        raise ValueError(f"{text!r} is not a memory size; write e.g. 150MB or 1GiB")
    return int(value * units[unit])
