"""One trace from submit() through every attempt: spans kept in memory and printed.

In production `taskq worker` sends spans to your collector from the OTEL_* variables
(see docs/observability.md); this example sets up the SDK itself, on the embedded default.
"""

from __future__ import annotations

import asyncio

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import taskq

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)

app = taskq.App()
attempts = 0


@app.task(name="flaky", max_retries=2, backoff=taskq.Backoff.fixed(0.05))
async def flaky() -> str:
    global attempts
    attempts += 1
    await taskq.context().progress(0.5, "half way")
    if attempts == 1:
        raise ConnectionError("the first attempt fails")
    return "done"


async def main() -> None:
    tracer = trace.get_tracer("shop")
    async with app, app.worker():
        with tracer.start_as_current_span("checkout"):  # your own span: the trace's root
            handle = await flaky.submit()
        print(await handle.result(timeout=10))

    spans = sorted(exporter.get_finished_spans(), key=lambda span: span.start_time or 0)
    assert len({span.context.trace_id for span in spans}) == 1, "one trace"
    for span in spans:
        attributes = span.attributes or {}
        attempt = attributes.get("taskq.task.attempt", "-")
        state = attributes.get("taskq.task.state", "-")
        print(
            f"{span.name:16} {span.kind.name:9} attempt={attempt} state={state} "
            f"status={span.status.status_code.name} events={[e.name for e in span.events]}"
        )


if __name__ == "__main__":
    asyncio.run(main())
