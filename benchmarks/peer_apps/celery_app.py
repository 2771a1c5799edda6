"""Celery with its defaults: prefork pool, py-amqp transport, json, no result backend.

Worker: `celery -A benchmarks.peer_apps.celery_app worker -P prefork -c 2` (the defaults
here), or `-P solo`: the pool is the worker command's, the app is the same. With
PEERS_RESULTS=rpc:// the round trips use the RPC result backend (replies over RabbitMQ).
"""

from __future__ import annotations

import time

from celery import Celery

from benchmarks.peer_apps._marks import TASK_MARK, TASK_NOOP, amqp_url, results, write_mark

QUEUE = "celery"  # Celery's default queue (classic, durable)

# amqp:// in kombu would pick librabbitmq when installed; pyamqp:// is py-amqp, as documented.
app = Celery("bench", broker="pyamqp://" + amqp_url().split("://", 1)[1], backend=results())


@app.task(name=TASK_NOOP)
def noop() -> None:
    """The benchmarked task: nothing."""


@app.task(name=TASK_MARK)
def mark(name: str) -> None:
    write_mark(name)


def fill(count: int) -> float:
    """Queue mark(start), N x noop, mark(end) with delay(); → seconds the N delay() calls took."""
    mark.delay("start")
    started = time.perf_counter()
    for _ in range(count):
        noop.delay()
    seconds = time.perf_counter() - started
    mark.delay("end")
    return seconds


def round_trips(pairs: int, warmup: int) -> dict[str, list[float]]:
    """Sequential delay() → AsyncResult.get(); → {"default": [ms, ...]}."""
    for _ in range(warmup):
        noop.delay().get(timeout=60)
    samples = []
    for _ in range(pairs):
        started = time.perf_counter()
        noop.delay().get(timeout=30)
        samples.append((time.perf_counter() - started) * 1000)
    return {"default": samples}
