"""Leadership: hold a PostgreSQL advisory lock on a dedicated connection, or wait for it.

Any number of candidates run `campaign()`; exactly one holds the lock and runs the leader's
work. If its process dies (even `kill -9`), PostgreSQL drops the connection and the lock,
and another candidate wins within `retry_interval`. If the connection fails or stops
answering, the leader steps down at once (its work is cancelled before anything else).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from taskq.exceptions import BrokerError, StoreConnectionError, StoreError
from taskq.store import Store
from taskq.store.locks import LeaderLock

logger = logging.getLogger(__name__)

LOCK_NAME = "taskq.leader"


async def campaign(
    store: Store,
    process_id: str,
    lead: Callable[[], Coroutine[Any, Any, None]],
    *,
    retry_interval: float = 1.0,
    check_interval: float = 1.0,
) -> None:
    """Stand for leadership for ever; run `lead()` while leading (until cancelled)."""
    lock = store.session_lock(LOCK_NAME, application_name=f"taskq leader {process_id}")
    try:
        await _campaign(lock, process_id, lead, retry_interval, check_interval)
    finally:
        await lock.release()


async def _campaign(
    lock: LeaderLock,
    process_id: str,
    lead: Callable[[], Coroutine[Any, Any, None]],
    retry_interval: float,
    check_interval: float,
) -> None:
    while True:
        try:
            elected = await lock.try_acquire()
        except StoreError as exc:
            logger.warning("cannot stand for leadership: %s", exc)
            elected = False
        if elected:
            logger.info("%s leads", process_id, extra={"action": "leader_elected"})
            try:
                await _hold(lock, lead, check_interval)
            except* (StoreError, BrokerError) as failures:
                logger.warning(
                    "%s steps down: %s",
                    process_id,
                    "; ".join(_reasons(failures)),
                    extra={"action": "leader_stepped_down"},
                )
            finally:
                await lock.release()
        await asyncio.sleep(retry_interval)
        # Not elected: the lock keeps its connection for the next attempt.


async def _hold(
    lock: LeaderLock, lead: Callable[[], Coroutine[Any, Any, None]], check_interval: float
) -> None:
    async with asyncio.TaskGroup() as leading:
        leading.create_task(_watch(lock, check_interval), name="taskq-leader-watch")
        leading.create_task(lead(), name="taskq-leader-work")


async def _watch(lock: LeaderLock, check_interval: float) -> None:
    """Raise (ending the term) as soon as the lock's connection fails."""
    while True:
        await asyncio.sleep(check_interval)
        try:
            await lock.check(within=max(check_interval, 1.0) * 2)
        except StoreError as exc:
            raise StoreConnectionError(f"lost the leadership connection: {exc}") from None


def _reasons(group: BaseExceptionGroup[BaseException]) -> list[str]:
    """The messages of every exception in a (nested) group, not the group's own text."""
    reasons: list[str] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            reasons += _reasons(exc)
        else:
            reasons.append(f"{type(exc).__name__}: {exc}")
    return reasons
