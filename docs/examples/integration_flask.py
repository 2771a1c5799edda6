"""Flask (or any WSGI framework): views submit tasks and read results with the sync calls.

The app opens once, on its own background loop, at the first `submit_sync`; every request
reuses its connections. Runs on the embedded default with an in-process worker; in
production, set TASKQ_BROKER_URL and TASKQ_STORE_URL and run `taskq worker` beside the web
processes.
"""

from __future__ import annotations

import flask

import taskq

app = taskq.App("memory://", "sqlite+aiosqlite:///:memory:")
web = flask.Flask(__name__)


@app.task(name="examples.thumbnail")
async def thumbnail(path: str, width: int) -> str:
    return f"{path.removesuffix('.png')}-{width}.png"


@web.post("/thumbnails")
def make_thumbnail() -> dict[str, str]:
    body = flask.request.get_json()
    return {"task": thumbnail.submit_sync(body["path"], body["width"]).id}


@web.get("/thumbnails/<task_id>")
def get_thumbnail(task_id: str) -> dict[str, str]:
    return {"file": app.get_sync(task_id).result_sync(timeout=10)}


if __name__ == "__main__":
    with app.worker_sync():  # (production: `taskq worker integration_flask:app`)
        client = web.test_client()
        task = client.post("/thumbnails", json={"path": "cat.png", "width": 200}).json
        assert task is not None
        print(client.get(f"/thumbnails/{task['task']}").json)
    app.close_sync()
