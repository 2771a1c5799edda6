"""OTLP span export from a helper process, so that encoding spans never holds the worker's GIL.

The OTLP exporter turns each span into a protobuf message in Python: about 50 µs per span,
and more on a worker, where the export thread and the event loop take turns at the GIL (the
loop waits up to a switch interval whenever it lets go of it for a socket write). For short
tasks that was most of tracing's cost. `HelperSpanProcessor` takes the place of the SDK's
batch span processor: it packs each finished span with msgpack (a few µs) and a writer
thread, which holds the GIL only to hand over bytes, passes batches into the stdin of a
helper process running `otlp_wire` as a script (see there why not `-m`). That process
writes the OTLP bytes and sends them with the OTLP exporter's client, configured by the
same OTEL_* variables. It lives as long as its pipe: it exports what it has and exits at
end of input, also when the worker was killed.
"""

from __future__ import annotations

import logging
import queue
import subprocess
import sys
import threading
from typing import Any, cast

import msgpack
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.trace import SpanContext

from taskq.exceptions import ConfigurationError
from taskq.telemetry import otlp_wire, semconv
from taskq.telemetry.lean_span import LeanSpan

logger = logging.getLogger(__name__)

SHUTDOWN_WITHIN = 30.0  # seconds the helper gets to send what it holds; the SDK's own default


class HelperSpanProcessor(SpanProcessor):
    """Sends finished, sampled spans to an export helper process (started at once).

    Like the SDK's batch span processor it sends `batch_size` spans at a time, or what it
    has after `delay` seconds, and drops spans (with a warning) when more than `queue_size`
    wait to be written because the helper cannot keep up; OTEL_BSP_* set all three.
    """

    def __init__(self, resource: Resource, environ: dict[str, str]) -> None:
        self._environ = environ
        self._resource = resource
        self._batch_size = _whole_number(environ, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)
        self._delay = _whole_number(environ, "OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000
        self._queue_size = _whole_number(environ, "OTEL_BSP_MAX_QUEUE_SIZE", 2048)
        self._lock = threading.Lock()
        # SDK spans, packed when handed over; lean spans, packed as they end: bytes hold no
        # references, so the collector need not look at the spans waiting here.
        self._batch: list[ReadableSpan | bytes] = []
        self._frames: queue.SimpleQueue[tuple[int, bytes] | threading.Event | None] = (
            queue.SimpleQueue()
        )
        self._waiting = 0  # spans in frames not yet written
        self._dropped = 0
        self._helper = self._start_helper()
        self._writer = threading.Thread(target=self._write, name="taskq-span-writer", daemon=True)
        self._writer.start()

    def on_end(self, span: ReadableSpan) -> None:
        if span.context and span.context.trace_flags.sampled:
            self._add(span)

    def end_lean(self, span: LeanSpan) -> None:
        """`LeanSpans`' sink: a lean span ended (lean spans are sampled ones only)."""
        self._add(msgpack.packb(pack_lean_span(span)))

    def _add(self, span: ReadableSpan | bytes) -> None:
        with self._lock:
            self._batch.append(span)
            if len(self._batch) >= self._batch_size:
                self._hand_over_locked()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Wait until the helper has sent every span that ended before this call."""
        done = threading.Event()
        with self._lock:
            self._hand_over_locked()
            self._frames.put(done)
        return done.wait(timeout_millis / 1000)

    def shutdown(self) -> None:
        with self._lock:
            self._hand_over_locked()
            self._frames.put(None)
        self._writer.join()

    def _hand_over_locked(self) -> None:
        if not self._batch:
            return
        batch, self._batch = self._batch, []
        if self._waiting + len(batch) > self._queue_size:
            self._dropped += len(batch)
            return  # the writer reports drops: no logging on the task's path
        self._waiting += len(batch)
        sdk = [pack_span(span) for span in batch if not isinstance(span, bytes)]
        lean = [span for span in batch if isinstance(span, bytes)]
        # [_SPANS, sdk, lean], the lean spans' msgpack bytes written in place.
        payload = b"".join(
            [
                b"\x93",
                msgpack.packb(otlp_wire.SPANS),
                msgpack.packb(sdk),
                _array_header(len(lean)),
                *lean,
            ]
        )
        self._frames.put((len(batch), _framed(payload)))

    def _write(self) -> None:
        """The writer thread: frames into the helper's stdin, in order; the batch that
        waited `delay` seconds; answers to flushes."""
        while True:
            try:
                item = self._frames.get(timeout=self._delay)
            except queue.Empty:
                with self._lock:
                    self._hand_over_locked()
                continue
            if item is None:
                self._stop_helper()
                return
            if isinstance(item, threading.Event):
                if self._ask_flush():
                    item.set()
                continue
            spans, frame = item
            with self._lock:
                self._waiting -= spans
                dropped, self._dropped = self._dropped, 0
            if dropped:
                logger.warning("%d spans dropped: the span export helper is behind", dropped)
            self._send(frame)

    def _send(self, frame: bytes) -> None:
        if self._helper.poll() is not None:  # it crashed: spans from now on still go out
            logger.warning("the span export helper exited (code %s); starting a new one",
                           self._helper.returncode)  # fmt: skip
            _close_pipes(self._helper)
            self._helper = self._start_helper()
        try:
            _write_frame(self._helper, frame)
        except OSError as error:
            logger.warning("spans not exported: the span export helper failed: %s", error)

    def _ask_flush(self) -> bool:
        self._send(_frame([otlp_wire.FLUSH]))
        assert self._helper.stdout is not None
        return self._helper.stdout.read(1) == b"\x01"

    def _stop_helper(self) -> None:
        helper = self._helper
        assert helper.stdin is not None
        try:
            helper.stdin.close()  # end of input: the helper sends what it has, then exits
            helper.wait(SHUTDOWN_WITHIN)
        except (OSError, subprocess.TimeoutExpired):
            logger.warning("the span export helper did not finish in %.0f s; killed it",
                           SHUTDOWN_WITHIN)  # fmt: skip
            helper.kill()
            helper.wait()
        _close_pipes(helper)

    def _start_helper(self) -> subprocess.Popen[bytes]:
        helper = subprocess.Popen(
            # -P: the script's folder (taskq/telemetry) stays off sys.path.
            [sys.executable, "-P", otlp_wire.__file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=self._environ,
            start_new_session=True,  # a Ctrl-C in the terminal is the worker's to handle
        )
        resource = self._resource
        hello = [
            otlp_wire.HELLO,
            dict(resource.attributes),
            resource.schema_url,
            process_template(),
        ]
        _write_frame(helper, _frame(hello))
        return helper


def pack_span(span: ReadableSpan) -> list[Any]:
    """A finished span as plain values msgpack can carry (`otlp_wire` encodes them)."""
    context, parent, scope = span.context, span.parent, span.instrumentation_scope
    assert context is not None
    return [
        span.name,
        _pack_context(context),
        None if parent is None else _pack_context(parent),
        span.kind.value,
        span.start_time,
        span.end_time,
        dict(span.attributes or {}),
        [[event.name, event.timestamp, dict(event.attributes or {})] for event in span.events],
        [[_pack_context(link.context), dict(link.attributes or {})] for link in span.links],
        span.status.status_code.value,
        span.status.description,
        None if scope is None else [scope.name, scope.version, scope.schema_url],
    ]


def pack_lean_span(span: LeanSpan) -> list[Any]:
    """A `LeanSpan`, in fewer values than `pack_span`'s (`otlp_wire.expand_lean_span`
    makes those of them)."""
    return [
        span.name,
        span.trace_id.to_bytes(16, "big"),
        span.span_id,
        span.parent_id,
        span.parent_remote,
        span.start_time,
        span.end_time,
        span.message,
        span.attributes,
        span.events or [],
        span.status.status_code.value,
        span.status.description,
        list(span.trace_state.items()) if span.trace_state else None,
        span.scope,
    ]


class _Field:
    """Stands for the message value at `index` in `process_template`'s probe."""

    def __init__(self, index: int) -> None:
        self.index = index


def process_template() -> list[list[Any]]:
    """`semconv.process_attributes` as `otlp_wire.Encoder` takes it: [key, field, value] per
    standard attribute (field: which message value it is, or -1 for the constant `value`)."""
    probe = cast(semconv.Message, tuple(_Field(index) for index in range(5)))
    return [
        [key, value.index, None] if isinstance(value, _Field) else [key, -1, value]
        for key, value in semconv.process_attributes(probe).items()
    ]


def _pack_context(context: SpanContext) -> list[Any]:
    # A trace id is 128 bits, more than a msgpack integer holds.
    return [
        context.trace_id.to_bytes(16, "big"),
        context.span_id,
        int(context.trace_flags),
        context.is_remote,
        list(context.trace_state.items()) if context.trace_state else None,
    ]


def _whole_number(environ: dict[str, str], name: str, default: int) -> int:
    text = environ.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise ConfigurationError(f"{name}={text!r}: expected a whole number above 0")
    return int(text)


def _array_header(length: int) -> bytes:
    """msgpack's header of an array of `length` items."""
    if length < 16:
        return bytes((0x90 | length,))
    if length < 0x10000:
        return b"\xdc" + length.to_bytes(2, "big")
    return b"\xdd" + length.to_bytes(4, "big")


def _frame(message: list[Any]) -> bytes:
    return _framed(msgpack.packb(message))


def _framed(payload: bytes) -> bytes:
    return otlp_wire.LENGTH.pack(len(payload)) + payload


def _write_frame(helper: subprocess.Popen[bytes], frame: bytes) -> None:
    assert helper.stdin is not None
    helper.stdin.write(frame)
    helper.stdin.flush()


def _close_pipes(helper: subprocess.Popen[bytes]) -> None:
    for pipe in (helper.stdin, helper.stdout):
        if pipe is not None:
            try:
                pipe.close()
            except OSError:
                pass  # unflushed input of a helper that is gone
