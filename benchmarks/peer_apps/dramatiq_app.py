"""Dramatiq with its defaults: RabbitmqBroker (pika), no confirms, no result backend.

Worker: `dramatiq benchmarks.peer_apps.dramatiq_app --processes 1 --threads 8` (or 16 threads,
or the default --processes, the CPU count): the same app each time. With
PEERS_RESULTS=redis://... the round trips use the Results middleware with RedisBackend:
Dramatiq ships no PostgreSQL or RabbitMQ result backend (only Redis, Memcached and a stub).
"""

from __future__ import annotations

import time
from typing import Any

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from benchmarks.peer_apps._marks import amqp_url, results, results_name, write_mark

QUEUE = "default"  # Dramatiq's default queue (classic, durable; plus default.DQ, default.XQ)

broker = RabbitmqBroker(url=amqp_url())
backend: Any = None
if results() is not None:
    from dramatiq.results import Results
    from dramatiq.results.backends import RedisBackend

    backend = RedisBackend(url=results(), namespace=results_name())
    broker.add_middleware(Results(backend=backend))
dramatiq.set_broker(broker)

# store_results is an option of the Results middleware: unknown to a broker without it.
_noop_options: dict[str, Any] = {"store_results": True} if backend is not None else {}


@dramatiq.actor(actor_name="noop", **_noop_options)
def noop() -> None:
    """The benchmarked task: nothing."""


@dramatiq.actor(actor_name="mark")
def mark(name: str) -> None:
    write_mark(name)


def fill(count: int) -> float:
    """Queue mark(start), N x noop, mark(end) with send(); → seconds the N send() calls took."""
    mark.send("start")
    started = time.perf_counter()
    for _ in range(count):
        noop.send()
    seconds = time.perf_counter() - started
    mark.send("end")
    broker.close()
    return seconds


def round_trips(pairs: int, warmup: int) -> dict[str, list[float]]:
    """Sequential send() → get_result(block=True); → {"default": [ms, ...]}."""
    if backend is None:
        raise SystemExit("dramatiq round trips need PEERS_RESULTS (a Redis URL)")
    try:
        for _ in range(warmup):
            noop.send().get_result(block=True, timeout=60_000)
        samples = []
        for _ in range(pairs):
            started = time.perf_counter()
            noop.send().get_result(block=True, timeout=30_000)
            samples.append((time.perf_counter() - started) * 1000)
    finally:
        for key in backend.client.scan_iter(f"{results_name()}*"):
            backend.client.delete(key)
        broker.close()
    return {"default": samples}
