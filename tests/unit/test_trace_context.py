"""The `process` span's parent, read from a message's headers: the quick reading of a lone
`traceparent` gives what `propagate.extract` gives, for good and bad headers alike."""

from __future__ import annotations

import pytest
from opentelemetry import propagate, trace

from taskq.telemetry import tracing

GOOD = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize(
    "headers",
    [
        {"traceparent": GOOD},
        {"traceparent": GOOD[:-2] + "00"},  # not sampled
        {"traceparent": GOOD.upper()},  # W3C wants lowercase: no parent
        {"traceparent": "00-" + "0" * 32 + "-b7ad6b7169203331-01"},  # an invalid trace id
        {"traceparent": GOOD.replace("b7ad6b7169203331", "0" * 16)},  # an invalid span id
        {"traceparent": "01" + GOOD[2:] + "-future"},  # a later version, more fields
        {"traceparent": "00-+af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        {"traceparent": "garbage"},
        {"traceparent": GOOD, "tracestate": "vendor=x1"},
        {"traceparent": GOOD, "baggage": "user=7"},
        {},
    ],
)
def test_the_parent_is_what_the_propagator_extracts(headers: dict[str, str]) -> None:
    ours = trace.get_current_span(tracing._parent_context(headers)).get_span_context()
    theirs = trace.get_current_span(propagate.extract(headers)).get_span_context()
    assert ours == theirs
    assert ours.is_remote == theirs.is_remote
    assert ours.trace_state == theirs.trace_state
