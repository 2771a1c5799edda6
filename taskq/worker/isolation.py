"""After a crash, each task that was in flight runs alone before it is blamed again.

A task delivered again without an outcome (`deliveries > 1`) is a suspect: it may be the
one that killed its worker, or an innocent that happened to run beside it. Run alone, only
the guilty one dies again, so only it reaches `max_deliveries`; the innocents finish.

Redelivered messages take their claims one at a time (a suspect waiting its turn has not
been claimed, so another's crash does not count against it); a suspect then waits for the
tasks already running to end, and no new task starts until it ends, is handed off to a
lease, or has run alone for `ALONE_FOR` seconds (a crash most likely comes early: a worker
must not stall for as long as one long suspect runs).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

ALONE_FOR = 60.0


class Isolation:
    def __init__(self) -> None:
        self._suspects = asyncio.Lock()  # held by a redelivery until its claim, or its end
        self._running = 0  # turns that may be running a task now
        self._idle: asyncio.Event | None = None  # a suspect waits for _running == 0
        self._open = asyncio.Event()  # cleared while a suspect runs alone
        self._open.set()

    async def turn(self, *, redelivered: bool) -> Turn:
        """A delivery's place for its claim and run (see the module's docstring); the
        caller must call its `done()` at the end, whatever happens."""
        if redelivered:
            await self._suspects.acquire()
        elif not self._open.is_set():
            await self._open.wait()
        self._count(+1)
        return Turn(self, holds_lock=redelivered)

    @contextlib.asynccontextmanager
    async def place(self, *, redelivered: bool) -> AsyncIterator[Turn]:
        """`turn()` for an `async with` block (tests; the executor saves the frames)."""
        turn = await self.turn(redelivered=redelivered)
        try:
            yield turn
        finally:
            turn.done()

    def _count(self, change: int) -> None:
        self._running += change
        if self._running == 0 and self._idle is not None:
            self._idle.set()


class Turn:
    """One delivery's place: `claimed()` once its claim is made, `alone()` if it is a
    suspect, `done()` when it ends or is handed off to a lease (idempotent)."""

    def __init__(self, isolation: Isolation, *, holds_lock: bool) -> None:
        self._isolation = isolation
        self._holds_lock = holds_lock
        self._counted = True
        self._alone = False
        self._alone_until: asyncio.TimerHandle | None = None

    def claimed(self, *, suspect: bool) -> None:
        """A redelivery that is no suspect lets the next redelivery claim."""
        if self._holds_lock and not suspect:
            self._release()

    async def alone(self) -> None:
        """Wait until nothing else runs; keep new tasks from starting until `done()`."""
        isolation = self._isolation
        self._uncount()
        if not self._holds_lock:
            await isolation._suspects.acquire()
            self._holds_lock = True
        self._alone = True
        isolation._open.clear()
        while isolation._running:
            isolation._idle = asyncio.Event()
            await isolation._idle.wait()
        isolation._idle = None
        isolation._count(+1)
        self._counted = True
        self._alone_until = asyncio.get_running_loop().call_later(ALONE_FOR, self.done)

    def done(self) -> None:
        if self._alone_until is not None:
            self._alone_until.cancel()
            self._alone_until = None
        self._uncount()
        if self._alone:
            self._alone = False
            self._isolation._open.set()
        if self._holds_lock:
            self._release()

    def _uncount(self) -> None:
        if self._counted:
            self._counted = False
            self._isolation._count(-1)

    def _release(self) -> None:
        self._holds_lock = False
        self._isolation._suspects.release()
