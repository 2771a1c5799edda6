"""The dashboard in a real headless browser, over real RabbitMQ and PostgreSQL and a running
`taskq worker`: live progress, live lists, replaying a dead letter, cancelling with and
without the token, escaping, and a screenshot of every page."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from selenium.common.exceptions import (
    JavascriptException,
    NoAlertPresentException,
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

import taskq
from taskq.status import TaskStatus
from tests.dashboard.conftest import TOKEN, Site
from tests.support import eventually

T = TypeVar("T")
WITHIN = 20.0


async def until(browser: WebDriver, condition: Callable[[WebDriver], T], what: str) -> T:
    """Poll the page until `condition` holds (a deadline, never a guessed sleep)."""
    # (a page mid-navigation answers some reads with an error: read again)
    ignored = (NoSuchElementException, StaleElementReferenceException, JavascriptException)
    wait = WebDriverWait(browser, WITHIN, poll_frequency=0.1, ignored_exceptions=ignored)
    return await asyncio.to_thread(wait.until, condition, f"{what} (after {WITHIN} s)")


async def open_live(browser: WebDriver, url: str) -> None:
    """Load `url` and wait until its event stream is connected; then mark the page, so a
    test can tell that it was updated in place and never reloaded."""
    await asyncio.to_thread(browser.get, url)
    await until(browser, lambda b: live_attribute(b) == "on", "the page's event stream to connect")
    # (once connected, the page refreshes itself once: it may have missed an event)
    await until(browser, lambda b: refreshes(b) >= 1, "the page's first refresh")
    browser.execute_script("window.taskqTestMark = 'not reloaded';")


def not_reloaded(browser: WebDriver) -> bool:
    return bool(browser.execute_script("return window.taskqTestMark === 'not reloaded';"))


async def state_is(app: taskq.App, task_id: str, state: TaskStatus) -> None:
    handle = await app.get(task_id)
    await eventually(
        handle.status, lambda found: found is state, what=f"{task_id} {state}", within=WITHIN
    )


async def click(browser: WebDriver, selector: str) -> None:
    """Click what `selector` finds; a live page may swap the element for a fresh copy
    between finding and clicking it, and then the fresh one is clicked."""

    def clicked(found: WebDriver) -> bool:
        found.find_element(By.CSS_SELECTOR, selector).click()
        return True

    ignored = (StaleElementReferenceException, NoSuchElementException)
    wait = WebDriverWait(browser, WITHIN, poll_frequency=0.1, ignored_exceptions=ignored)
    await asyncio.to_thread(wait.until, clicked, f"clicking {selector}")


def live_attribute(browser: WebDriver) -> str | None:
    return browser.find_element(By.TAG_NAME, "body").get_attribute("data-live")


def refreshes(browser: WebDriver) -> int:
    found = browser.find_element(By.TAG_NAME, "body").get_attribute("data-refreshed")
    return int(found or 0)


def shows_text(text: str) -> Callable[[WebDriver], bool]:
    return lambda browser: text in text_of(browser, "main")


def bar_value(browser: WebDriver, task_id: str) -> float:
    found = browser.execute_script(
        "const bar = document.querySelector(arguments[0]); return bar ? bar.value : null;",
        f'[data-progress-of="{task_id}"] progress',
    )
    return float("nan") if found is None else float(found)


def text_of(browser: WebDriver, selector: str) -> str:
    """The text of what `selector` finds ("" if nothing), read in one step inside the page:
    a live page may swap any element for a fresh copy at any moment."""
    found = browser.execute_script(
        "const found = document.querySelector(arguments[0]); return found ? found.innerText : '';",
        selector,
    )
    return str(found)


async def sign_in(browser: WebDriver, site: Site) -> None:
    await asyncio.to_thread(browser.get, f"{site.url}/login")
    browser.find_element(By.NAME, "token").send_keys(TOKEN)
    browser.find_element(By.CSS_SELECTOR, "form.login button").click()
    await until(browser, lambda b: "sign out" in text_of(b, "header"), "signed in")


async def sign_out(browser: WebDriver, site: Site) -> None:
    await asyncio.to_thread(browser.get, f"{site.url}/")
    browser.delete_all_cookies()


async def test_a_tasks_progress_bar_moves_without_a_reload(
    site: Site, browser: WebDriver, client: taskq.App
) -> None:
    # Given a running task at 25% whose page is open
    gates = site.gates()
    handle = await client.tasks["dash.stepped"].submit(str(gates))
    await eventually(handle.info, lambda row: row.progress is not None, what="25% stored")
    await open_live(browser, f"{site.url}/tasks/{handle.id}")
    assert bar_value(browser, handle.id) == 25.0

    # When the task reports 75%
    (gates / "1").touch()

    # Then the bar and its text move, in the same page
    await until(browser, lambda b: bar_value(b, handle.id) == 75.0, "the bar at 75%")
    assert "75% writing" in text_of(browser, f'[data-progress-of="{handle.id}"]')
    assert "progress 75% writing" in text_of(browser, "#events")
    assert not_reloaded(browser)

    # And when it finishes, its state and result appear without a reload too
    (gates / "2").touch()
    await until(browser, lambda b: "succeeded" in text_of(b, "h1"), "the page to show succeeded")
    assert '"done"' in text_of(browser, "#task")
    assert not_reloaded(browser)


async def test_a_task_submitted_while_the_tasks_page_is_open_appears(
    site: Site, browser: WebDriver, client: taskq.App
) -> None:
    # Given the tasks page, open and live
    await open_live(browser, f"{site.url}/tasks")

    # When a task is submitted
    handle = await client.tasks["dash.echo"].submit("hello from the test")

    # Then its row appears, linking to it, without a reload
    row = f'tr[data-task="{handle.id}"]'
    await until(browser, lambda b: b.find_elements(By.CSS_SELECTOR, row), "the new task's row")
    await until(browser, lambda b: "succeeded" in text_of(b, row), "the row to show it succeeded")
    link = browser.find_element(By.CSS_SELECTOR, f"{row} a").get_attribute("href")
    assert link == f"{site.url}/tasks/{handle.id}"
    assert not_reloaded(browser)


async def test_a_dead_letter_is_replayed_from_its_page_and_then_succeeds(
    site: Site, browser: WebDriver, client: taskq.App
) -> None:
    # Given a task that failed its only attempt and was dead-lettered
    flag = site.workdir / "failing.flag"
    flag.touch()
    handle = await client.tasks["dash.flaky"].submit(str(flag))
    await state_is(client, handle.id, TaskStatus.FAILED)
    flag.unlink()  # (its next attempt will succeed)

    # When a signed-in user replays it from the dead-letter page
    await sign_in(browser, site)
    await open_live(browser, f"{site.url}/dlq/default")
    row = f'tr[data-task="{handle.id}"]'
    assert "failed" in text_of(browser, row)
    await click(browser, f"{row} button")

    # Then the page says so, the task runs again and succeeds, and its letter is gone
    said = "replayed 1 dead letter(s) of default"
    await until(browser, lambda b: said in text_of(b, ".done"), "the replay's confirmation")
    await state_is(client, handle.id, TaskStatus.SUCCEEDED)
    assert await handle.result() == "fine"
    assert len(await handle.attempts()) == 2
    await asyncio.to_thread(browser.get, f"{site.url}/dlq/default")
    assert not browser.find_elements(By.CSS_SELECTOR, row)
    await sign_out(browser, site)


def _post(url: str, headers: dict[str, str] | None = None, body: bytes = b"") -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


async def test_cancel_needs_the_token(site: Site, browser: WebDriver, client: taskq.App) -> None:
    # Given two running tasks
    first = await client.tasks["dash.hold"].submit(300)
    second = await client.tasks["dash.hold"].submit(300)
    await state_is(client, first.id, TaskStatus.RUNNING)
    await state_is(client, second.id, TaskStatus.RUNNING)
    cancel = f"{site.url}/api/tasks/{first.id}/cancel"

    # When cancel is asked without the token, with a wrong one, or from a page's form
    # without its CSRF token: each is refused, and the task runs on
    assert (await asyncio.to_thread(_post, cancel))[0] == 401
    wrong = {"Authorization": "Bearer not-the-token"}
    assert (await asyncio.to_thread(_post, cancel, wrong))[0] == 401
    await sign_in(browser, site)
    session = browser.get_cookie("taskq_session")
    assert session is not None
    forged = {"Cookie": f"taskq_session={session['value']}",
              "Content-Type": "application/x-www-form-urlencoded"}  # fmt: skip
    status, said = await asyncio.to_thread(_post, cancel, forged, b"next=/")
    assert (status, said["error"]) == (
        403,
        "missing or wrong CSRF token: reload the page and retry",
    )
    assert await first.status() is TaskStatus.RUNNING

    # And a signed-out browser's page offers no cancel button
    await sign_out(browser, site)
    await asyncio.to_thread(browser.get, f"{site.url}/tasks/{first.id}")
    assert not browser.find_elements(By.CSS_SELECTOR, ".actions button")
    assert "sign in to cancel it" in text_of(browser, ".actions")

    # When a signed-in user presses Cancel on the task's page
    await sign_in(browser, site)
    await open_live(browser, f"{site.url}/tasks/{first.id}")
    await click(browser, ".actions button.danger")

    # Then it is cancelled, and the page says so
    await state_is(client, first.id, TaskStatus.CANCELLED)
    await until(browser, lambda b: "cancelled" in text_of(b, "h1"), "the page to show cancelled")
    assert f"cancelled task {first.id}" in text_of(browser, ".done")

    # And an API client with the token cancels the other
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    status, said = await asyncio.to_thread(
        _post, f"{site.url}/api/tasks/{second.id}/cancel", bearer
    )
    assert (status, said) == (200, {"task_id": second.id, "cancelled": True})
    await state_is(client, second.id, TaskStatus.CANCELLED)
    await sign_out(browser, site)


async def test_a_script_in_an_argument_is_shown_as_text(
    site: Site, browser: WebDriver, client: taskq.App
) -> None:
    # Given a task whose argument (and so its result) is a script tag
    script = "<script>alert(1)</script>"
    handle = await client.tasks["dash.echo"].submit(script)
    await state_is(client, handle.id, TaskStatus.SUCCEEDED)

    for page in (f"/tasks/{handle.id}", "/tasks"):
        # When its pages are shown
        await asyncio.to_thread(browser.get, f"{site.url}{page}")

        # Then no alert opened, no script of the task's is in the page, and the text shows
        try:
            alert = browser.switch_to.alert
        except NoAlertPresentException:
            alert = None
        assert alert is None, f"{page} ran the task's script"
        scripts = browser.find_elements(By.TAG_NAME, "script")
        assert [s.get_attribute("src") for s in scripts] == [f"{site.url}/static/dashboard.js"]
        if page != "/tasks":
            assert script in text_of(browser, "#task")


async def test_every_page_renders_and_is_captured(
    site: Site, browser: WebDriver, client: taskq.App, tmp_path: Path
) -> None:
    """Screenshots for docs/dashboard.md (TASKQ_SCREENSHOTS=docs/images/dashboard)."""
    folder = Path(os.environ.get("TASKQ_SCREENSHOTS") or tmp_path)
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    # Given a bit of everything: finished tasks, one failing into the dead letters, one
    # running with progress, a workflow, and the worker's hourly schedule
    added = [await client.tasks["dash.add"].submit(n, n) for n in range(20)]
    await client.gather(added, timeout=WITHIN)
    flag = site.workdir / "screenshot.flag"
    flag.touch()
    dead = await client.tasks["dash.flaky"].submit(str(flag))
    gates = site.gates()
    running = await client.tasks["dash.stepped"].submit(str(gates))
    add, total = client.tasks["dash.add"], client.tasks["dash.total"]
    flow = await taskq.chord(taskq.group(add.s(1, 2), add.s(3, 4), add.s(5, 6)), total.s()).submit()
    assert await flow.result(timeout=WITHIN) == 21
    await state_is(client, dead.id, TaskStatus.FAILED)
    await state_is(client, running.id, TaskStatus.RUNNING)
    await eventually(running.info, lambda row: row.progress is not None, what="25% stored")

    pages = {
        "overview": ("/", "Tasks by queue and state"),
        "tasks": ("/tasks", "dash.add"),
        "task": (f"/tasks/{running.id}", "25% reading"),
        "queues": ("/queues", "default"),
        "workers": ("/workers", "leader"),
        "dlq": ("/dlq/default", "RuntimeError"),
        "schedules": ("/schedules", "every 1:00:00"),
        "workflow": (f"/workflows/{flow.id}", "dash.total"),
    }
    for name, (page, shows) in pages.items():
        # When each page is shown, Then it shows what it is for
        await asyncio.to_thread(browser.get, f"{site.url}{page}")
        await until(browser, shows_text(shows), f"{page} to show {shows!r}")
        shot = folder / f"{name}.png"
        assert browser.save_screenshot(str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    flag.unlink()
    (gates / "1").touch()
    (gates / "2").touch()
