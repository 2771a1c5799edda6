"""Per queue, what the broker and the store say about it: messages ready and unacked,
consumers, dead letters, tasks running and scheduled, and the tags a worker needs for the
tasks waiting in a tagged queue nobody consumes (`taskq queues`, the dashboard)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from taskq.broker import Broker, QueueStats, topology
from taskq.status import TaskStatus
from taskq.store import Store


async def known_queues(store: Store) -> list[str]:
    """The queues of every worker (a tagged one's with all its tags), and those tasks wait
    `queued` in: a task whose tags no worker has waits in a queue no worker names."""
    known = await store.list_workers(include_stopped=True)
    names = {queue for row in known for queue in row.queues}
    names |= {topology.tagged_queue(queue, row.tags) for row in known for queue in row.queues}
    return sorted(names | set(await store.queued_queues()))


async def queue_rows(store: Store, broker: Broker, names: Sequence[str]) -> list[dict[str, Any]]:
    """One row per queue named (store open, broker connected)."""
    counts = await store.count_waiting(names)
    rows = []
    for name in names:
        stats = await broker.stats(name)
        dead = await broker.stats(topology.dlq_name(name))
        running = counts[name].get(TaskStatus.RUNNING.value, 0)
        rows.append(
            {
                "queue": name,
                "ready": None if stats is None else stats.ready,
                # AMQP does not report unacked messages: a task running holds one.
                "unacked": running if stats is None or stats.unacked is None else stats.unacked,
                "consumers": None if stats is None else stats.consumers,
                "dlq": None if dead is None else dead.ready,
                "running": running,
                "scheduled": counts[name].get(TaskStatus.SCHEDULED.value, 0),
                "waiting_for_tags": _unserved_tags(name, stats, counts[name]),
            }
        )
    return rows


def _unserved_tags(name: str, stats: QueueStats | None, counts: dict[str, int]) -> list[str] | None:
    """The tags of a tagged queue that has tasks waiting and no consumer, else None."""
    tags = topology.split_tagged(name)[1]
    waiting = (stats is not None and stats.ready > 0) or counts.get(TaskStatus.QUEUED.value, 0)
    if tags and waiting and (stats is None or not stats.consumers):
        return tags
    return None
