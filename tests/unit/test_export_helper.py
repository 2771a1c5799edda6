"""The span export helper process (`taskq.telemetry.export_helper`), for real: spans handed to
`HelperSpanProcessor` reach an OTLP/HTTP endpoint (a sink this module serves), a flush waits
for them, shutdown sends what is left, a helper that died is replaced, and a helper whose
worker was killed exits by itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import msgpack
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Status, StatusCode

from taskq.exceptions import ConfigurationError
from taskq.telemetry import export_helper, tracing
from taskq.telemetry.export_helper import HelperSpanProcessor
from taskq.telemetry.lean_span import LeanSpans
from tests.support import eventually_sync

DEADLINE = 10.0


class Sink:
    """An OTLP/HTTP endpoint that keeps the spans it is sent."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path == "/v1/traces":
                    sink.requests.append(ExportTraceServiceRequest.FromString(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def spans(self) -> dict[str, Any]:
        """name → the span (protobuf), with its resource's service.name as `.service`."""
        found = {}
        for request in list(self.requests):
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        found[span.name] = (span, resource_spans.resource, scope_spans.scope)
        return found

    def wait_for(self, count: int) -> dict[str, Any]:
        found: dict[str, Any] = eventually_sync(
            self.spans, lambda found: len(found) >= count, what=f"{count} spans at the sink"
        )
        return found


@pytest.fixture
def sink() -> Iterator[Sink]:
    sink = Sink()
    yield sink
    sink.server.shutdown()
    sink.server.server_close()


def provider_to(sink: Sink) -> tuple[TracerProvider, HelperSpanProcessor]:
    resource = Resource.create({"service.name": "helper-test"})
    environ = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": sink.url}
    processor = HelperSpanProcessor(resource, environ)
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(processor)
    return provider, processor


def test_spans_reach_the_endpoint_whole_once_flushed(sink: Sink) -> None:
    provider, processor = provider_to(sink)
    tracer = provider.get_tracer("tests", "1.0")
    with tracer.start_as_current_span("outer") as outer:
        with tracer.start_as_current_span(
            "inner", attributes={"n": 7, "tags": ("a", "b")}
        ) as inner:
            inner.add_event("progress", {"fraction": 0.5})
            inner.set_status(Status(StatusCode.ERROR, "it broke"))
    assert processor.force_flush(int(DEADLINE * 1000))
    spans = sink.spans()  # no waiting: the flush returned once they were sent
    assert set(spans) == {"outer", "inner"}
    (got_outer, resource, scope), (got_inner, _, _) = spans["outer"], spans["inner"]
    assert got_outer.span_id == outer.get_span_context().span_id.to_bytes(8, "big")
    assert got_inner.trace_id == outer.get_span_context().trace_id.to_bytes(16, "big")
    assert got_inner.parent_span_id == got_outer.span_id
    attributes = {a.key: a.value for a in got_inner.attributes}
    assert attributes["n"].int_value == 7
    assert [v.string_value for v in attributes["tags"].array_value.values] == ["a", "b"]
    assert [e.name for e in got_inner.events] == ["progress"]
    assert got_inner.status.message == "it broke"
    assert got_inner.status.code == 2  # STATUS_CODE_ERROR
    assert (scope.name, scope.version) == ("tests", "1.0")
    service = {a.key: a.value.string_value for a in resource.attributes}["service.name"]
    assert service == "helper-test"
    provider.shutdown()


def test_shutdown_sends_the_rest_and_ends_the_helper(sink: Sink) -> None:
    provider, processor = provider_to(sink)
    tracer = provider.get_tracer("tests")
    for name in ("one", "two", "three"):
        tracer.start_span(name).end()
    helper = processor._helper
    provider.shutdown()  # no flush first
    assert set(sink.spans()) == {"one", "two", "three"}
    assert helper.poll() == 0


def test_a_helper_that_died_is_replaced(sink: Sink) -> None:
    provider, processor = provider_to(sink)
    tracer = provider.get_tracer("tests")
    tracer.start_span("before").end()
    assert processor.force_flush(int(DEADLINE * 1000))
    processor._helper.kill()
    processor._helper.wait()
    tracer.start_span("after").end()
    assert processor.force_flush(int(DEADLINE * 1000))
    assert set(sink.spans()) == {"before", "after"}
    provider.shutdown()


WORKER = """
import os, sys
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from taskq.exceptions import ConfigurationError
from taskq.telemetry import export_helper, tracing
from taskq.telemetry.export_helper import HelperSpanProcessor
from taskq.telemetry.lean_span import LeanSpans

processor = HelperSpanProcessor(Resource.create({}), dict(os.environ))
provider = TracerProvider()
provider.add_span_processor(processor)
provider.get_tracer("tests").start_span("flushed").end()
assert processor.force_flush(10_000)
provider.get_tracer("tests").start_span("pending").end()  # in the batch, never handed over
sys.stdout.write(f"{processor._helper.pid}\\n")
sys.stdout.flush()
sys.stdin.read()  # until the test kills this process
"""


def test_the_helper_of_a_killed_worker_exits(sink: Sink) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", WORKER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": sink.url},
    ) as worker:
        assert worker.stdout is not None
        helper_pid = int(worker.stdout.readline())
        assert set(sink.spans()) == {"flushed"}
        worker.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + DEADLINE
    while _alive(helper_pid):
        assert time.monotonic() < deadline, "the helper outlived its worker"
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie counts as gone: its parent (killed) can no longer reap it, init will.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ")[-1][0] != "Z"


def test_a_bad_batch_setting_is_a_clear_error(sink: Sink) -> None:
    environ = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": sink.url}
    with pytest.raises(ConfigurationError, match="OTEL_BSP_SCHEDULE_DELAY='5s': expected a whole"):
        HelperSpanProcessor(Resource.create({}), {**environ, "OTEL_BSP_SCHEDULE_DELAY": "5s"})


def test_the_helper_runs_without_the_client_and_at_low_priority(sink: Sink) -> None:
    provider, processor = provider_to(sink)
    provider.get_tracer("tests").start_span("ready").end()
    assert processor.force_flush(int(DEADLINE * 1000))  # it has exported: fully started
    helper = processor._helper.pid
    # Then neither SQLAlchemy nor asyncpg nor aio-pika was loaded into it (their compiled
    # modules would be mapped), and it yields the CPU to the worker
    with open(f"/proc/{helper}/maps") as maps:
        loaded = maps.read()
    for client_part in ("sqlalchemy", "asyncpg", "aiormq", "multidict", "yarl"):
        assert f"/{client_part}/" not in loaded, f"{client_part} is loaded in the helper"
    assert os.getpriority(os.PRIO_PROCESS, helper) >= os.getpriority(os.PRIO_PROCESS, 0) + 10
    provider.shutdown()


@pytest.mark.parametrize("length", [0, 1, 15, 16, 65_535, 65_536])
def test_lean_spans_packed_as_they_end_are_framed_as_one_msgpack_array(length: int) -> None:
    items = [msgpack.packb([i, "x"]) for i in range(length)]
    framed = export_helper._array_header(length) + b"".join(items)
    assert msgpack.unpackb(framed) == [[i, "x"] for i in range(length)]


def test_lean_spans_reach_the_endpoint_with_their_standard_attributes(sink: Sink) -> None:
    provider, processor = provider_to(sink)
    lean = LeanSpans(provider.sampler, provider.id_generator, processor.end_lean, tracing.SCOPE)
    for i in range(20):  # (more than fit in the shortest msgpack array header)
        span = lean.start_remote_child(
            f"process {i}", 0xABC, 0xDEF, True, ("q", f"id-{i}", "t", 0, 1)
        )
        span.set_attribute("taskq.task.state", "succeeded")
        span.end()
    assert processor.force_flush(int(DEADLINE * 1000))
    spans = sink.spans()
    assert set(spans) == {f"process {i}" for i in range(20)}
    got, _, scope = spans["process 7"]
    attributes = {a.key: a.value.string_value or a.value.int_value for a in got.attributes}
    assert attributes["taskq.task.id"] == attributes["messaging.message.id"] == "id-7"
    assert attributes["taskq.task.state"] == "succeeded" and attributes["taskq.task.attempt"] == 1
    assert got.parent_span_id == (0xDEF).to_bytes(8, "big") and scope.name == "taskq"
    provider.shutdown()
