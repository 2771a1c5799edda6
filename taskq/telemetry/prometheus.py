"""Metrics for Prometheus: snapshots of the SDK's metrics, merged across processes.

Each worker process takes a JSON-able snapshot of its own metrics. A single worker renders
its snapshot on `/metrics`; under `--processes N` each child hands its snapshot to the
supervisor over a Unix socket and the supervisor serves the merged whole, so one scrape
shows the whole worker: counters and histograms summed, gauges of shared things (queue
depths, loop lag) taken at their maximum.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

Snapshot = dict[str, dict[str, Any]]  # metric name → {kind, unit, description, points}
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_UNITS = {"s": "seconds", "ms": "milliseconds", "By": "bytes", "1": "ratio"}
_NOT_NAME = re.compile(r"[^a-zA-Z0-9_]")


def snapshot(reader: Any) -> Snapshot:
    """The current values of an SDK `InMemoryMetricReader` (cumulative)."""
    data = reader.get_metrics_data()
    taken: Snapshot = {}
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                taken[metric.name] = _metric(metric)
    return taken


def _metric(metric: Any) -> dict[str, Any]:
    points = metric.data.data_points
    kind = type(metric.data).__name__  # Sum, Gauge or Histogram
    if kind == "Sum":
        kind = "counter" if metric.data.is_monotonic else "updown"
    entry: dict[str, Any] = {
        "kind": kind.lower(),
        "unit": metric.unit or "",
        "description": metric.description or "",
        "points": [],
    }
    for point in points:
        labels = {str(k): str(v) for k, v in (point.attributes or {}).items()}
        if entry["kind"] == "histogram":
            entry["points"].append(
                {
                    "labels": labels,
                    "bounds": list(point.explicit_bounds),
                    "counts": list(point.bucket_counts),
                    "sum": point.sum,
                    "count": point.count,
                }
            )
        else:
            entry["points"].append({"labels": labels, "value": point.value})
    return entry


def merge(snapshots: Iterable[Snapshot]) -> Snapshot:
    """One snapshot for many processes: sums, except gauges (the maximum)."""
    merged: Snapshot = {}
    for taken in snapshots:
        for name, metric in taken.items():
            into = merged.setdefault(name, {**metric, "points": []})
            by_labels = {_key(p["labels"]): p for p in into["points"]}
            for point in metric["points"]:
                existing = by_labels.get(_key(point["labels"]))
                if existing is None:
                    copied = json.loads(json.dumps(point))
                    into["points"].append(copied)
                    by_labels[_key(point["labels"])] = copied
                elif metric["kind"] == "histogram" and existing["bounds"] == point["bounds"]:
                    existing["counts"] = [
                        a + b for a, b in zip(existing["counts"], point["counts"], strict=True)
                    ]
                    existing["sum"] += point["sum"]
                    existing["count"] += point["count"]
                elif metric["kind"] == "gauge":
                    existing["value"] = max(existing["value"], point["value"])
                elif metric["kind"] != "histogram":
                    existing["value"] += point["value"]
    return merged


def render(taken: Snapshot) -> str:
    """Prometheus text exposition format 0.0.4."""
    lines: list[str] = []
    for name, metric in sorted(taken.items()):
        base = prometheus_name(name, metric["unit"])
        kind = metric["kind"]
        if kind == "counter":
            base += "_total"
        prom_type = {"counter": "counter", "histogram": "histogram"}.get(kind, "gauge")
        lines.append(f"# HELP {base} {_escape_help(metric['description'])}")
        lines.append(f"# TYPE {base} {prom_type}")
        for point in metric["points"]:
            labels = point["labels"]
            if kind != "histogram":
                lines.append(f"{base}{_labels(labels)} {_number(point['value'])}")
                continue
            cumulative = 0
            for bound, count in zip([*point["bounds"], math.inf], point["counts"], strict=True):
                cumulative += count
                le = {**labels, "le": "+Inf" if bound == math.inf else _number(bound)}
                lines.append(f"{base}_bucket{_labels(le)} {cumulative}")
            lines.append(f"{base}_sum{_labels(labels)} {_number(point['sum'])}")
            lines.append(f"{base}_count{_labels(labels)} {point['count']}")
    return "\n".join(lines) + "\n"


def prometheus_name(name: str, unit: str) -> str:
    """OpenTelemetry name and UCUM unit → a Prometheus name (`taskq_task_duration_seconds`)."""
    converted = _NOT_NAME.sub("_", name)
    suffix = _UNITS.get(unit, "" if unit.startswith("{") or not unit else _NOT_NAME.sub("_", unit))
    if suffix and not converted.endswith("_" + suffix):
        converted += "_" + suffix
    return converted


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(
        f'{_NOT_NAME.sub("_", k)}="{_escape_value(v)}"' for k, v in sorted(labels.items())
    )
    return "{" + inner + "}"


def _escape_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


# -- children hand their snapshots to the supervisor ------------------------------------


@contextlib.asynccontextmanager
async def serve_snapshots(path: Path, reader: Any) -> AsyncIterator[None]:
    """Answer each connection on the Unix socket `path` with this process's snapshot."""

    async def answer(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(json.dumps(snapshot(reader)).encode())
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_unix_server(answer, path=str(path))
    try:
        yield
    finally:
        server.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # noqa: ASYNC240 (a local socket file: instant)
        # The last word, for the supervisor to keep after this process is gone.
        final = json.dumps(snapshot(reader))
        with contextlib.suppress(OSError):
            path.with_suffix(".json").write_text(final)


def read_final_snapshot(socket_path: Path) -> Snapshot | None:
    """What a child wrote as it exited (see `serve_snapshots`), if it could."""
    try:
        loaded: Snapshot = json.loads(socket_path.with_suffix(".json").read_text())
        return loaded
    except (OSError, ValueError):
        return None


async def read_snapshot(path: Path, within: float = 2.0) -> Snapshot | None:
    """A child's snapshot, or None if it does not answer in time (it may be exiting)."""
    try:
        async with asyncio.timeout(within):
            reader, writer = await asyncio.open_unix_connection(str(path))
            try:
                data = await reader.read()
            finally:
                writer.close()
        loaded: Snapshot = json.loads(data)
        return loaded
    except (OSError, TimeoutError, ValueError) as exc:
        logger.debug("no metrics from %s: %s", path, exc)
        return None
