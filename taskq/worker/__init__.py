"""Workers: the consumer loop, the per-delivery executor, the supervisor."""

from __future__ import annotations

from taskq.worker.options import WorkerOptions
from taskq.worker.worker import Worker, running_worker

__all__ = ["Worker", "WorkerOptions", "running_worker"]
