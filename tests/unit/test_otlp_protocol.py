"""taskq exports OTLP over HTTP only: a gRPC protocol setting is refused, not ignored (it
would send HTTP to the collector's gRPC port and lose every span)."""

from __future__ import annotations

import pytest

import taskq
from taskq.telemetry import setup


@pytest.mark.parametrize(
    "setting",
    [
        {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
        {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"},
        {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
    ],
)
def test_a_protocol_other_than_http_protobuf_is_refused(setting: dict[str, str]) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", **setting}
    with pytest.raises(taskq.ConfigurationError) as caught:
        setup.configure(environ=env)
    assert "http/protobuf" in str(caught.value) and "4318" in str(caught.value)


def test_http_protobuf_or_no_protocol_is_taken() -> None:
    for env in (
        {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"},
        {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
    ):
        assert setup.configure(environ=env).providers == []
    assert (
        setup._exporter_choice(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            },
            "TRACES",
        )
        == "otlp"
    )
