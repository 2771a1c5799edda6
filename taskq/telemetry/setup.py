"""Configure the OpenTelemetry SDK for `taskq worker` from the standard OTEL_* variables.

The library itself only uses the API; this is what the CLI does so that a worker exports
spans and metrics without code: OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER (`otlp`,
`console` or `none`), or just OTEL_EXPORTER_OTLP_ENDPOINT, plus OTEL_SERVICE_NAME and
OTEL_RESOURCE_ATTRIBUTES. `--metrics-port` adds an in-process reader for Prometheus.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from taskq.exceptions import ConfigurationError

DEFAULT_SERVICE_NAME = "taskq-worker"


@dataclasses.dataclass
class Telemetry:
    """What was configured; `shutdown()` flushes spans and metrics still buffered."""

    providers: list[Any] = dataclasses.field(default_factory=list)
    reader: Any = None  # the InMemoryMetricReader behind /metrics, if asked for

    def shutdown(self) -> None:
        for provider in self.providers:
            provider.shutdown()


def configure(*, prometheus: bool = False, environ: dict[str, str] | None = None) -> Telemetry:
    """Set the global tracer and meter providers as the environment asks (nothing if it
    asks for nothing); `prometheus`: also keep metrics in memory for `/metrics`."""
    env = dict(os.environ if environ is None else environ)
    telemetry = Telemetry()
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        if prometheus:
            raise ConfigurationError("--metrics-port needs metrics, but OTEL_SDK_DISABLED=true")
        return telemetry
    traces = _exporter_choice(env, "TRACES")
    metrics = _exporter_choice(env, "METRICS")
    if traces == "none" and metrics == "none" and not prometheus:
        return telemetry
    try:
        from opentelemetry.sdk.resources import Resource
    except ImportError:
        raise ConfigurationError(
            "OpenTelemetry export (OTEL_* variables or --metrics-port) needs the SDK: "
            "pip install 'taskq[otel]'"
        ) from None
    attributes = {} if "OTEL_SERVICE_NAME" in env else {"service.name": DEFAULT_SERVICE_NAME}
    resource = Resource.create(attributes)
    if traces != "none":
        telemetry.providers.append(_tracing(resource, traces, env))
    if metrics != "none" or prometheus:
        provider, telemetry.reader = _metering(resource, metrics, prometheus, env)
        telemetry.providers.append(provider)
    return telemetry


def _exporter_choice(env: dict[str, str], signal: str) -> str:
    chosen = env.get(f"OTEL_{signal}_EXPORTER", "").strip().lower()
    if chosen:
        if chosen not in ("otlp", "console", "none"):
            raise ConfigurationError(
                f"OTEL_{signal}_EXPORTER={chosen!r}: taskq worker knows otlp, console and none"
            )
        if chosen == "otlp":
            _check_protocol(env, signal)
        return chosen
    endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(
        f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"
    )
    if endpoint:
        _check_protocol(env, signal)
    return "otlp" if endpoint else "none"


def _check_protocol(env: dict[str, str], signal: str) -> None:
    """taskq exports OTLP over HTTP only: a gRPC setting would send HTTP to a gRPC port."""
    for name in (f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = env.get(name, "").strip().lower()
        if protocol and protocol != "http/protobuf":
            raise ConfigurationError(
                f"{name}={protocol!r}: taskq worker exports OTLP over HTTP (http/protobuf) "
                "only; point OTEL_EXPORTER_OTLP_ENDPOINT at the collector's HTTP port (4318) "
                "and set the protocol to http/protobuf, or leave it unset"
            )
        if protocol:
            return


def _tracing(resource: Any, exporter_name: str, env: dict[str, str]) -> Any:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    provider = TracerProvider(resource=resource)
    if exporter_name == "otlp":
        try:  # the package only (light): the helper process imports the exporter itself
            import opentelemetry.exporter.otlp.proto.http  # noqa: F401
        except ImportError:
            raise ConfigurationError(
                "OTLP export needs its exporter: pip install 'taskq[otel]'"
            ) from None
        from taskq.telemetry import tracing
        from taskq.telemetry.export_helper import HelperSpanProcessor
        from taskq.telemetry.lean_span import LeanSpans

        helper = HelperSpanProcessor(resource, env)  # OTLP encoding in another process
        provider.add_span_processor(helper)
        tracing.use_lean_spans(
            LeanSpans(provider.sampler, provider.id_generator, helper.end_lean, tracing.SCOPE)
        )
    else:
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


def _metering(
    resource: Any, exporter_name: str, prometheus: bool, env: dict[str, str]
) -> tuple[Any, Any]:
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
    from opentelemetry.sdk.metrics.export import (
        ConsoleMetricExporter,
        InMemoryMetricReader,
        MetricReader,
        PeriodicExportingMetricReader,
    )

    from taskq.telemetry import metrics as taskq_metrics

    readers: list[MetricReader] = []
    memory = InMemoryMetricReader() if prometheus else None
    if memory is not None:
        readers.append(memory)
    if exporter_name == "otlp":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    elif exporter_name == "console":
        readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))
    # Exemplars cost a sampling decision per measurement; on only if asked for.
    exemplars = None if "OTEL_METRICS_EXEMPLAR_FILTER" in env else AlwaysOffExemplarFilter()
    provider = MeterProvider(resource=resource, metric_readers=readers, exemplar_filter=exemplars)
    metrics.set_meter_provider(provider)
    taskq_metrics.batched.enabled = exemplars is not None  # (an exemplar needs its trace)
    return provider, memory
