"""The worker's inbox: deliveries waiting for a slot, the highest priority lane first."""

from __future__ import annotations

import asyncio

from taskq.broker.base import Delivery
from taskq.worker.inbox import Inbox


class Waiting(Delivery):
    def __init__(self, label: str, lane: int = 0) -> None:
        self.body = label.encode()
        self.queue = "default"
        self.redelivered = False
        self.message_id = label
        self.lane = lane

    async def ack(self) -> None:
        raise AssertionError("not settled here")

    async def reject(self, *, requeue: bool) -> None:
        raise AssertionError("not settled here")


async def taken(inbox: Inbox, count: int) -> list[str]:
    return [(await inbox.get()).message_id for _ in range(count)]  # type: ignore[union-attr]


async def test_one_lane_comes_out_first_in_first_out() -> None:
    inbox = Inbox()
    for label in ("a", "b", "c"):
        inbox.put(Waiting(label))
    assert await taken(inbox, 3) == ["a", "b", "c"]


async def test_the_highest_lane_comes_out_first_each_lane_in_arrival_order() -> None:
    inbox = Inbox()
    for label, lane in (("low1", 0), ("high1", 2), ("mid1", 1), ("low2", 0), ("high2", 2)):
        inbox.put(Waiting(label, lane))
    assert await taken(inbox, 5) == ["high1", "high2", "mid1", "low1", "low2"]


async def test_a_waiting_get_wakes_on_a_delivery_and_on_close() -> None:
    inbox = Inbox()
    getting = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    assert not getting.done()
    inbox.put(Waiting("a"))
    assert (await asyncio.wait_for(getting, 5)).message_id == "a"  # type: ignore[union-attr]
    getting = asyncio.ensure_future(inbox.get())
    inbox.close()
    assert await asyncio.wait_for(getting, 5) is None


async def test_closed_it_gives_nothing_more_and_hands_everything_back() -> None:
    inbox = Inbox()
    inbox.put(Waiting("a"))
    inbox.put(Waiting("b", 1))
    inbox.close()
    assert inbox.closing.is_set()
    assert await inbox.get() is None
    assert sorted(d.message_id for d in inbox.take_all()) == ["a", "b"]
    assert inbox.waited_longest() is None


async def test_deliveries_that_waited_too_long_are_taken_out_and_the_rest_stay() -> None:
    inbox = Inbox()
    inbox.put(Waiting("old"))
    await asyncio.sleep(0.05)
    inbox.put(Waiting("new", 1))
    assert (inbox.waited_longest() or 0) >= 0.05
    assert [d.message_id for d in inbox.take_older(0.04)] == ["old"]
    assert await taken(inbox, 1) == ["new"]
