"""`BatchedRecords`: histogram measurements held and recorded a few hundred at a time, every one
of them recorded once, and all of them before a collection reads the histogram."""

from __future__ import annotations

import threading

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from taskq.telemetry import metrics, prometheus


def histogram_count(reader: InMemoryMetricReader) -> int:
    taken = prometheus.snapshot(reader).get("held.seconds", {"points": []})
    return sum(int(point["count"]) for point in taken["points"])


def test_measurements_are_held_until_a_batch_is_full_or_a_collection_starts() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    meter = provider.get_meter("tests")
    histogram = meter.create_histogram("held.seconds", unit="s")
    batched = metrics.BatchedRecords()
    batched.enabled = True

    def flush_first(_options: CallbackOptions) -> list[Observation]:
        batched.flush()
        return []  # (none: it only marks the start)

    # A collection starts with the observable instruments' callbacks, as taskq's does
    meter.create_observable_gauge("flushes", callbacks=[flush_first])

    # When fewer measurements than a batch are recorded, none has reached the SDK
    for _ in range(batched.SIZE - 1):
        batched.record(histogram, 0.5, {"queue": "q"})
    assert len(batched._held) == batched.SIZE - 1
    # Then a collection reads them all
    assert histogram_count(reader) == batched.SIZE - 1
    assert not batched._held
    # And a full batch is recorded at once
    for _ in range(batched.SIZE):
        batched.record(histogram, 0.5, {"queue": "q"})
    assert not batched._held
    provider.shutdown()


def test_flushes_from_two_threads_record_each_measurement_once() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    histogram = provider.get_meter("tests").create_histogram("held.seconds", unit="s")
    batched = metrics.BatchedRecords()
    batched.enabled = True
    batched.SIZE = 10**9  # flushed only by the two threads below
    for _ in range(20_000):
        batched.record(histogram, 1.0, {})
    threads = [threading.Thread(target=batched.flush) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert histogram_count(reader) == 20_000
    provider.shutdown()
