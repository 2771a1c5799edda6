"""`scaling.py`'s records and its report: one row per measurement, then each configuration's
medians, the prefills, and where the drain's CPU went."""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys

import psutil

from benchmarks.scaling_servers import DbCounters


@dataclasses.dataclass
class Phase:
    """What one phase (prefill or drain) cost: CPU seconds and the database's counts."""

    seconds: float
    worker_cpu: float  # the prefill's: this process (the client)
    broker_cpu: float
    database_cpu: float
    busy: float  # share of all the machine's cores
    db: DbCounters


@dataclasses.dataclass
class Measurement:
    run: int
    workers: int
    mode: str  # "commands" or "--processes"
    tasks: int
    prefill: Phase
    drain: Phase
    steady: float | None  # tasks/s once every worker had started one
    up: float  # spawn to the last worker's registration, seconds
    startup_cpu: float  # the workers' CPU before registering (left out of drain.worker_cpu)
    broker_bytes: tuple[int, int]  # received, sent on the workers' connections
    shares: tuple[int, int]  # fewest and most tasks a worker process ran
    load: float

    @property
    def label(self) -> str:
        return "1" if self.workers == 1 else f"{self.workers} {self.mode}"

    @property
    def rate(self) -> float:
        return self.tasks / self.drain.seconds


DRAIN_HEADER = (
    ("run", 6), ("workers", 14), ("tasks/s", 8), ("steady/s", 9), ("up s", 5),
    ("worker ms", 9), ("broker ms", 9), ("db ms", 6), ("busy %", 6), ("commits", 7),
    ("rows i/u/d", 14), ("WAL B", 6), ("amqp B in/out", 13), ("load", 5),
)  # fmt: skip
PREFILL_HEADER = (
    ("run", 6), ("before", 14), ("tasks/s", 8), ("client ms", 9), ("broker ms", 9),
    ("db ms", 6), ("busy %", 6), ("commits", 7), ("rows i/u/d", 14), ("WAL B", 6),
)  # fmt: skip


def line(cells: tuple[str, ...], header: tuple[tuple[str, int], ...]) -> str:
    return "  ".join(f"{cell:>{width}}" for cell, (_, width) in zip(cells, header, strict=True))


def per_task(value: float, tasks: int, scale: float = 1000.0, digits: int = 3) -> str:
    return f"{value / tasks * scale:.{digits}f}"


def phase_cells(p: Phase, tasks: int) -> tuple[str, ...]:
    """CPU ms per task (workers or client, broker, database), busy %, then per task: commits,
    rows written, WAL bytes."""
    return (
        per_task(p.worker_cpu, tasks),
        per_task(p.broker_cpu, tasks),
        per_task(p.database_cpu, tasks),
        f"{p.busy * 100:.0f}",
        per_task(p.db.commits, tasks, 1, 3),
        "/".join(per_task(n, tasks, 1, 2) for n in (p.db.inserted, p.db.updated, p.db.deleted)),
        per_task(p.db.wal, tasks, 1, 0),
    )


def drain_cells(m: Measurement) -> tuple[str, ...]:
    steady = "-" if m.steady is None else f"{m.steady:.0f}"
    cpu = phase_cells(m.drain, m.tasks)
    amqp = f"{m.broker_bytes[0] / m.tasks:.0f}/{m.broker_bytes[1] / m.tasks:.0f}"
    return (f"{m.rate:.0f}", steady, f"{m.up:.2f}", *cpu[:3], cpu[3], *cpu[4:], amqp)


def median_cells(rows: list[tuple[str, ...]]) -> tuple[str, ...]:
    """Each column's median (a column of a/b/c cells: each part's)."""
    cells = []
    for column in zip(*rows, strict=True):
        if "/" in column[0]:
            sides = [[float(x) for x in cell.split("/")] for cell in column]
            digits = len(column[0].split("/")[0].partition(".")[2])
            cells.append(
                "/".join(f"{statistics.median(s):.{digits}f}" for s in zip(*sides, strict=True))
            )
        elif "-" in column:
            cells.append("-")
        else:
            values = [float(cell) for cell in column]
            digits = len(column[0].partition(".")[2])
            cells.append(f"{statistics.median(values):.{digits}f}")
    return tuple(cells)


def report(results: list[Measurement], options: argparse.Namespace, loads: str) -> None:
    print(
        f"scaling: {options.tasks} no-op tasks per measurement, worker --concurrency "
        f"{options.concurrency} --no-scheduler, {options.queue_type} queue; private RabbitMQ "
        f"node and PostgreSQL cluster (fsync on); {psutil.cpu_count()} CPUs, Python "
        f"{sys.version.split()[0]}, load average {loads}"
    )
    print("drain (CPU ms per task; commits, rows written and WAL bytes per task):")
    print(line(tuple(name for name, _ in DRAIN_HEADER), DRAIN_HEADER))
    labels = list(dict.fromkeys(m.label for m in results))
    for m in results:
        print(line((str(m.run), m.label, *drain_cells(m), f"{m.load:.2f}"), DRAIN_HEADER))
    for label in labels:
        rows = [drain_cells(m) for m in results if m.label == label]
        loads_of = [m.load for m in results if m.label == label]
        cells = (*median_cells(rows), f"{statistics.median(loads_of):.2f}")
        print(line(("median", label, *cells), DRAIN_HEADER))
    print("prefill, before each drain (submit_many; client = this process):")
    print(line(tuple(name for name, _ in PREFILL_HEADER), PREFILL_HEADER))
    for m in results:
        p = m.prefill
        cells = (f"{m.tasks / p.seconds:.0f}", *phase_cells(p, m.tasks))
        print(line((str(m.run), m.label, *cells), PREFILL_HEADER))
    print("per drain: worker start-up CPU left out (s), tasks per worker process (fewest-most):")
    for m in results:
        print(
            f"  run {m.run} {m.label}: start-up {m.startup_cpu:.2f} s, tasks {m.shares[0]}-"
            f"{m.shares[1]}, drain {m.drain.seconds:.2f} s, CPU shares: " + shares(m.drain)
        )


def shares(p: Phase) -> str:
    total = p.worker_cpu + p.broker_cpu + p.database_cpu
    if total <= 0:
        return "-"
    parts = (("workers", p.worker_cpu), ("broker", p.broker_cpu), ("db", p.database_cpu))
    return ", ".join(f"{name} {value / total * 100:.0f}%" for name, value in parts)
