"""Polling with a deadline, for what no event announces (RabbitMQ dead-letters on its own
time; a consumer's registration, a row written behind): the one helper every test uses."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

DEADLINE = 10.0


def _holds(value: Any) -> bool:
    return bool(value)


async def eventually(
    read: Callable[[], Awaitable[T]],
    done: Callable[[T], bool] = _holds,
    *,
    what: str,
    within: float = DEADLINE,
    interval: float = 0.05,
) -> T:
    """Await `read()` until `done` holds for its value (by default: the value is truthy);
    → that value. At the deadline, fail naming `what` and the last value seen."""
    deadline = time.monotonic() + within
    while not done(value := await read()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still {value!r} after {within} s")
        await asyncio.sleep(interval)
    return value


def eventually_sync(
    read: Callable[[], T],
    done: Callable[[T], bool] = _holds,
    *,
    what: str,
    within: float = DEADLINE,
    interval: float = 0.02,
) -> T:
    """`eventually` for a test with no event loop (a thread serves what it reads)."""
    deadline = time.monotonic() + within
    while not done(value := read()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still {value!r} after {within} s")
        time.sleep(interval)
    return value
