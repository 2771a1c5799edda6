"""The app `taskq worker tests.e2e.middleware_app:app` runs in the middleware end-to-end
tests. It registers no middleware of its own: headers come from the submitting process, and
a plugin joins the worker only when named (`--middleware` or TASKQ_MIDDLEWARE)."""

from __future__ import annotations

import taskq

app = taskq.App()


@app.task(name="mw.headers_seen")
async def headers_seen() -> dict[str, str]:
    """The headers the task's context shows, as the worker's process sees them."""
    return dict(taskq.context().headers)
