"""Workers: the consumer loop, the per-delivery executor, and (later) the supervisor."""

from __future__ import annotations

from taskq.worker.worker import Worker, running_worker

__all__ = ["Worker", "running_worker"]
