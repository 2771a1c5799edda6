"""taskq.telemetry.prometheus: snapshots of SDK metrics, merged across processes, rendered
in the Prometheus text format.

Snapshots come from a real SDK `MeterProvider` of each test's own (never the global one)
with an `InMemoryMetricReader`; the rendered text is read back with the tests' own parser.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pytest
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from taskq.telemetry import prometheus, semconv
from tests.prometheus_text import Exposition, parse


@dataclass
class Process:
    """One process's metrics: a private provider, its reader and meter."""

    provider: MeterProvider
    reader: InMemoryMetricReader
    meter: Meter

    def snapshot(self) -> prometheus.Snapshot:
        return prometheus.snapshot(self.reader)


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    """Make private meter providers with `new_process(processes)`; all shut down after."""
    made: list[Process] = []
    yield made
    for process in made:
        process.provider.shutdown()


def new_process(made: list[Process]) -> Process:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    process = Process(provider, reader, provider.get_meter("taskq-test"))
    made.append(process)
    return process


@dataclass
class Instruments:
    """taskq-like instruments on one process's meter; the gauge reports `gauge_value`."""

    process: Process
    gauge_value: float | None = None

    def __post_init__(self) -> None:
        meter = self.process.meter
        name, unit, description = semconv.TASKS_SUBMITTED
        self.submitted = meter.create_counter(name, unit=unit, description=description)
        name, unit, description = semconv.TASK_DURATION
        self.duration = meter.create_histogram(
            name,
            unit=unit,
            description=description,
            explicit_bucket_boundaries_advisory=[0.1, 1.0, 10.0],
        )
        name, unit, description = semconv.TASKS_ACTIVE
        self.active = meter.create_up_down_counter(name, unit=unit, description=description)
        name, unit, description = semconv.LOOP_LAG
        meter.create_observable_gauge(
            name, callbacks=[self._observe], unit=unit, description=description
        )

    def _observe(self, _options: CallbackOptions) -> Iterable[Observation]:
        if self.gauge_value is not None:
            yield Observation(self.gauge_value)


TASK = {"taskq.task.name": "reports.build", "messaging.destination.name": "default"}
PROM_TASK = {"taskq_task_name": "reports.build", "messaging_destination_name": "default"}


def rendered(snapshot: prometheus.Snapshot) -> Exposition:
    return parse(prometheus.render(snapshot))


# -- render -----------------------------------------------------------------------------------


def test_render_counter_has_help_type_and_total_suffix(processes: list[Process]) -> None:
    instruments = Instruments(new_process(processes))
    instruments.submitted.add(3, TASK)
    instruments.submitted.add(4, TASK)

    text = prometheus.render(instruments.process.snapshot())
    exposition = parse(text)

    # `{task}` adds no unit suffix; a counter's name ends in _total
    assert exposition.helps == {"taskq_tasks_submitted_total": "Tasks submitted (stored and sent)."}
    assert exposition.types == {"taskq_tasks_submitted_total": "counter"}
    assert exposition.value("taskq_tasks_submitted_total", **PROM_TASK) == 7
    # HELP, then TYPE, then the sample, with labels sorted by name
    assert text.splitlines() == [
        "# HELP taskq_tasks_submitted_total Tasks submitted (stored and sent).",
        "# TYPE taskq_tasks_submitted_total counter",
        'taskq_tasks_submitted_total{messaging_destination_name="default",'
        'taskq_task_name="reports.build"} 7',
    ]


def test_render_histogram_has_cumulative_buckets_up_to_inf_then_sum_and_count(
    processes: list[Process],
) -> None:
    instruments = Instruments(new_process(processes))
    for seconds in (0.05, 0.05, 0.5, 5.0, 50.0):
        instruments.duration.record(seconds, TASK)

    text = prometheus.render(instruments.process.snapshot())
    exposition = parse(text)

    # The unit `s` becomes the suffix _seconds
    assert exposition.types == {"taskq_task_duration_seconds": "histogram"}
    assert exposition.helps["taskq_task_duration_seconds"] == (
        "How long each attempt ran, by outcome."
    )
    # Buckets count every observation at or below their bound (cumulative), ending at +Inf
    assert exposition.buckets("taskq_task_duration_seconds", **PROM_TASK) == [
        (0.1, 2),
        (1.0, 3),
        (10.0, 4),
        (math.inf, 5),
    ]
    assert 'le="+Inf"' in text
    assert exposition.value("taskq_task_duration_seconds_count", **PROM_TASK) == 5
    assert exposition.value("taskq_task_duration_seconds_sum", **PROM_TASK) == pytest.approx(55.6)
    # In order: the buckets by bound, then _sum, then _count
    names = [line.split("{")[0] for line in text.splitlines() if not line.startswith("#")]
    assert names == ["taskq_task_duration_seconds_bucket"] * 4 + [
        "taskq_task_duration_seconds_sum",
        "taskq_task_duration_seconds_count",
    ]


def test_render_updown_counter_and_gauge_as_gauges_without_total(
    processes: list[Process],
) -> None:
    instruments = Instruments(new_process(processes), gauge_value=0.25)
    instruments.active.add(3, TASK)
    instruments.active.add(-1, TASK)

    exposition = rendered(instruments.process.snapshot())

    assert exposition.types == {
        "taskq_tasks_active": "gauge",
        "taskq_event_loop_lag_seconds": "gauge",
    }
    assert exposition.value("taskq_tasks_active", **PROM_TASK) == 2
    # A point without attributes has no braces at all
    assert exposition.value("taskq_event_loop_lag_seconds") == 0.25


def test_render_escapes_label_values_and_help_text(processes: list[Process]) -> None:
    process = new_process(processes)
    weird = 'say "hi"\\now\nnext line'
    counter = process.meter.create_counter(
        "odd.counter", unit="{x}", description="first line\nsecond \\ line"
    )
    counter.add(1, {"note": weird, "dotted.key": "v"})

    text = prometheus.render(process.snapshot())
    exposition = parse(text)

    # Quote, backslash and newline are escaped in label values (backslash, newline in HELP),
    # so each sample stays on one line and reads back as the original value
    assert exposition.value("odd_counter_total", note=weird, dotted_key="v") == 1
    assert exposition.helps["odd_counter_total"] == "first line\nsecond \\ line"
    assert r'note="say \"hi\"\\now\nnext line"' in text
    assert "# HELP odd_counter_total first line\\nsecond \\\\ line" in text
    assert len(text.splitlines()) == 3


@pytest.mark.parametrize(
    ("name", "unit", "expected"),
    [
        ("taskq.task.duration", "s", "taskq_task_duration_seconds"),
        ("taskq.event_loop.lag", "s", "taskq_event_loop_lag_seconds"),
        ("taskq.tasks.submitted", "{task}", "taskq_tasks_submitted"),
        ("taskq.queue.depth", "{message}", "taskq_queue_depth"),
        ("http.latency", "ms", "http_latency_milliseconds"),
        ("process.memory", "By", "process_memory_bytes"),
        ("cache.hits", "1", "cache_hits_ratio"),
        ("cache.hit-ratio", "1", "cache_hit_ratio"),  # not doubled
        ("no.unit", "", "no_unit"),
        ("already_seconds", "s", "already_seconds"),  # not doubled
        ("disk.io", "MiBy", "disk_io_MiBy"),  # unknown units are kept, sanitised
    ],
)
def test_prometheus_name_replaces_dots_and_adds_the_unit_suffix(
    name: str, unit: str, expected: str
) -> None:
    assert prometheus.prometheus_name(name, unit) == expected


def test_render_uses_the_unit_suffix_of_each_metric(processes: list[Process]) -> None:
    process = new_process(processes)
    process.meter.create_counter("payload.sent", unit="By").add(512)
    process.meter.create_histogram("fetch.time", unit="ms").record(12)

    exposition = rendered(process.snapshot())

    assert exposition.types == {
        "payload_sent_bytes_total": "counter",
        "fetch_time_milliseconds": "histogram",
    }
    assert exposition.value("payload_sent_bytes_total") == 512
    assert exposition.value("fetch_time_milliseconds_count") == 1


# -- merge ------------------------------------------------------------------------------------


def test_merge_sums_counters_and_histograms_and_takes_the_largest_gauge(
    processes: list[Process],
) -> None:
    # Given two processes with the same instruments, and different values
    one = Instruments(new_process(processes), gauge_value=0.5)
    two = Instruments(new_process(processes), gauge_value=0.125)
    one.submitted.add(3, TASK)
    two.submitted.add(4, TASK)
    for seconds in (0.05, 0.5):
        one.duration.record(seconds, TASK)
    for seconds in (0.05, 5.0, 50.0):
        two.duration.record(seconds, TASK)
    one.active.add(2, TASK)
    two.active.add(1, TASK)
    snapshots = [one.process.snapshot(), two.process.snapshot()]
    before = copy.deepcopy(snapshots)

    # When their snapshots are merged
    merged = prometheus.merge(snapshots)
    exposition = rendered(merged)

    # Then counters are summed, and so are up-down counters (tasks running in either)
    assert exposition.value("taskq_tasks_submitted_total", **PROM_TASK) == 7
    assert exposition.value("taskq_tasks_active", **PROM_TASK) == 3
    # And histograms are summed bucket by bucket, with their sums and counts
    point = merged["taskq.task.duration"]["points"][0]
    assert point["counts"] == [2, 1, 1, 1]
    assert point["count"] == 5
    assert point["sum"] == pytest.approx(55.6)
    assert exposition.buckets("taskq_task_duration_seconds", **PROM_TASK) == [
        (0.1, 2),
        (1.0, 3),
        (10.0, 4),
        (math.inf, 5),
    ]
    assert exposition.value("taskq_task_duration_seconds_count", **PROM_TASK) == 5
    # And a gauge is the largest of the processes' values, not their sum
    assert exposition.value("taskq_event_loop_lag_seconds") == 0.5
    # And the snapshots merged are left as they were
    assert snapshots == before


def test_merge_keeps_points_and_metrics_that_only_one_process_has(
    processes: list[Process],
) -> None:
    one = Instruments(new_process(processes))
    two = Instruments(new_process(processes))
    other = {"taskq.task.name": "mail.send", "messaging.destination.name": "mail"}
    one.submitted.add(2, TASK)
    two.submitted.add(5, other)
    two.duration.record(0.5, other)

    exposition = rendered(prometheus.merge([one.process.snapshot(), two.process.snapshot()]))

    assert exposition.value("taskq_tasks_submitted_total", **PROM_TASK) == 2
    mail = {"taskq_task_name": "mail.send", "messaging_destination_name": "mail"}
    assert exposition.value("taskq_tasks_submitted_total", **mail) == 5
    assert exposition.value("taskq_task_duration_seconds_count", **mail) == 1
    assert exposition.find("taskq_task_duration_seconds_count", **PROM_TASK) == []


def test_merge_of_one_snapshot_renders_like_it(processes: list[Process]) -> None:
    instruments = Instruments(new_process(processes), gauge_value=1.5)
    instruments.submitted.add(1, TASK)
    instruments.duration.record(0.2, TASK)
    instruments.active.add(1, TASK)
    taken = instruments.process.snapshot()

    assert prometheus.render(prometheus.merge([taken])) == prometheus.render(taken)
    assert prometheus.merge([]) == {}
