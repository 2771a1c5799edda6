"""OpenTelemetry: spans, metrics, logs and their setup for `taskq worker`."""

from __future__ import annotations
