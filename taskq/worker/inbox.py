"""Deliveries waiting in the worker for a free slot.

With classic queues RabbitMQ orders messages by priority itself, and the worker's prefetch
equals its slots: a delivery rarely waits here, and they come out in arrival order. Quorum
queues have no priorities, so a queue is split into lanes (a queue per band of priorities,
each with its own prefetch): every lane may have a message waiting here, and a slot that
frees takes the highest lane's first, each lane first in, first out.
"""

from __future__ import annotations

import asyncio
import collections
import time

from taskq.broker.base import Delivery


class Inbox:
    def __init__(self) -> None:
        self._lanes: list[collections.deque[tuple[float, Delivery]]] = [collections.deque()]
        self._waiting = 0
        self.closing = asyncio.Event()  # set by `close()`
        self._wakeup: asyncio.Future[None] | None = None
        self._clock = time.monotonic

    def put(self, delivery: Delivery) -> None:
        """A delivery arrived (the broker's callback)."""
        while delivery.lane >= len(self._lanes):
            self._lanes.append(collections.deque())
        self._lanes[delivery.lane].append((self._clock(), delivery))
        self._waiting += 1
        self._wake()

    def close(self) -> None:
        """No more taking: `get()` returns None from now on, even with deliveries here."""
        self.closing.set()
        self._wake()

    async def get(self) -> Delivery | None:
        """The next delivery to run (highest lane first), once there is one; None once closed."""
        while not self._waiting and not self.closing.is_set():
            self._wakeup = asyncio.get_running_loop().create_future()
            try:
                await self._wakeup
            finally:
                self._wakeup = None
        if self.closing.is_set():
            return None
        for lane in reversed(self._lanes):
            if lane:
                self._waiting -= 1
                return lane.popleft()[1]
        raise AssertionError("a waiting delivery is in no lane")  # (unreachable)

    def waited_longest(self) -> float | None:
        """Seconds the oldest delivery here has waited; None if none waits."""
        arrivals = [lane[0][0] for lane in self._lanes if lane]
        return self._clock() - min(arrivals) if arrivals else None

    def take_older(self, than: float) -> list[Delivery]:
        """Remove and return the deliveries that have waited at least `than` seconds."""
        cutoff = self._clock() - than
        taken: list[Delivery] = []
        for lane in self._lanes:
            while lane and lane[0][0] <= cutoff:
                taken.append(lane.popleft()[1])
        self._waiting -= len(taken)
        return taken

    def take_all(self) -> list[Delivery]:
        """Remove and return every delivery still here (to hand back at shutdown)."""
        taken = [delivery for lane in self._lanes for _, delivery in lane]
        for lane in self._lanes:
            lane.clear()
        self._waiting = 0
        return taken

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)
