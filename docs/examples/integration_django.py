"""Django: views submit tasks and read results with the sync calls.

The app opens once, on its own background loop, at the first `submit_sync`; every request
reuses its connections (no `asyncio.run` per request). Declare the app and its tasks in a
module of your project (say `myproject/tasks.py`), import them in views, and run
`taskq worker myproject.tasks:app` beside the web processes. This file configures a
one-file Django project and runs on the embedded default with an in-process worker.
"""

from __future__ import annotations

import json

import django
from django.conf import settings

settings.configure(ROOT_URLCONF=__name__, ALLOWED_HOSTS=["testserver"], DEBUG=True)
django.setup()

from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.test import Client  # noqa: E402
from django.urls import path  # noqa: E402

import taskq  # noqa: E402

app = taskq.App("memory://", "sqlite+aiosqlite:///:memory:")


@app.task(name="examples.welcome_email")
async def welcome_email(user_id: int) -> str:
    return f"welcome email sent to user {user_id}"


def sign_up(request: HttpRequest) -> JsonResponse:
    user_id = json.loads(request.body)["user_id"]
    handle = welcome_email.submit_sync(user_id)  # stored and confirmed when this returns
    return JsonResponse({"task": handle.id})


def email_status(request: HttpRequest, task_id: str) -> JsonResponse:
    handle = app.get_sync(task_id)
    return JsonResponse({"result": handle.result_sync(timeout=10)})


urlpatterns = [path("signup", sign_up), path("emails/<str:task_id>", email_status)]

if __name__ == "__main__":
    with app.worker_sync():  # (production: `taskq worker myproject.tasks:app`)
        client = Client()
        response = client.post("/signup", {"user_id": 7}, content_type="application/json")
        print(client.get(f"/emails/{response.json()['task']}").json())
    app.close_sync()
