"""Workflows on the embedded default: `chain`, `group`, `chord`, failures, cancel, inspecting.

- `task.s(...)` is a call not yet submitted (a `taskq.Signature`); `task.si(...)` is one that
  does not receive the value of the step before it.
- `chain(a, b, c)`: each step's value is the next one's first argument. `group(...)`: its
  members run in parallel, and its value is the list of theirs, in order. `chord(group,
  body)`: the body receives that list. A group after a step gives that step's value to every
  member.
- `await wf.submit()` stores every step in one transaction and returns a
  `taskq.WorkflowHandle`: `result()`, `status()`, `tasks()`, `cancel()`.
- A failed step cancels the steps that depend on it (error type `ParentFailed`), and
  `result()` raises `TaskFailed` naming it; `chord(..., tolerate_failures=True)` runs the
  body anyway, with a `TaskFailed` in the list in place of each failed member.
Runs on the embedded default (in-process broker, in-memory SQLite): no server needed.
"""

from __future__ import annotations

import asyncio

import taskq
from taskq import chain, chord, group

app = taskq.App("memory://", "sqlite+aiosqlite:///:memory:")

PAGES = {
    "intro": "workflows run tasks in order",
    "groups": "members run in parallel",
    "chords": "a chord merges what a group returns",
}
started = asyncio.Event()


@app.task(name="examples.download")
async def download(page: str) -> str:
    if page not in PAGES:
        raise LookupError(f"no page {page!r}")
    return PAGES[page]


@app.task(name="examples.count_words")
async def count_words(text: str) -> int:
    return len(text.split())


@app.task(name="examples.count_letters")
async def count_letters(text: str) -> int:
    return sum(char.isalpha() for char in text)


@app.task(name="examples.total")
async def total(counts: list[int]) -> int:
    return sum(counts)


@app.task(name="examples.summary")
async def summary(counts: list[int], page: str) -> str:
    words, letters = counts
    return f"{page}: {words} words, {letters} letters"


@app.task(name="examples.notify")
async def notify(message: str) -> str:
    return f"notified: {message}"


@app.task(name="examples.count_known_words")
async def count_known_words(texts: list[str | taskq.TaskFailed]) -> str:
    words = sum(len(text.split()) for text in texts if isinstance(text, str))
    failed = [f"{text.error_type}: {text.error_message}" for text in texts
              if isinstance(text, taskq.TaskFailed)]  # fmt: skip
    return f"{words} words; failed: {failed}"


@app.task(name="examples.slow_download")
async def slow_download(page: str) -> str:
    started.set()
    await asyncio.sleep(30)  # cancelled long before
    return PAGES[page]


async def main() -> None:
    async with app, app.worker(concurrency=4):
        # 1. A chain: each step's value is the next step's first argument.
        wf = await chain(download.s("intro"), count_words.s()).submit()
        print(f"chain: {await wf.result(timeout=10)} words ({await wf.status()})")

        # 2. A group: in parallel; its value is the list of its members' values, in order.
        wf = await group(chain(download.s(page), count_words.s()) for page in PAGES).submit()
        print(f"group: {await wf.result(timeout=10)}")

        # 3. A chord: the body receives the group's list.
        words = group(chain(download.s(page), count_words.s()) for page in PAGES)
        wf = await chord(words, total.s()).submit()
        print(f"chord: {await wf.result(timeout=10)} words in all")

        # 4. Fan out and in: every member of the group receives the page's text; `summary`
        #    receives their list; `notify.si(...)` receives nothing from the step before.
        wf = await chain(
            download.s("chords"),
            group(count_words.s(), count_letters.s()),
            summary.s(page="chords"),
            notify.si("stats ready"),
        ).submit()
        print(f"fan out and in: {await wf.result(timeout=10)}")
        for record in await app.list_tasks(workflow=wf.id):  # its steps, in step order
            print(f"  step {record.step} {record.name}: {record.result!r}")

        # 5. Every step's arguments are checked before anything is stored, counting the
        #    value its parent passes.
        try:
            await chain(download.s("intro"), count_words.s("one too many")).submit()
        except taskq.InvalidArguments as exc:
            print(f"refused: {exc}")

        # 6. A failed step cancels the steps that depend on it; result() names it.
        wf = await chain(
            download.s("missing"),
            group(count_words.s(), count_letters.s()),
            summary.s(page="missing"),
        ).submit()
        try:
            await wf.result(timeout=10)
        except taskq.TaskFailed as exc:
            message = exc.error_message.removeprefix(f"workflow {wf.id}: ")
            print(f"failed: {exc.error_type}: {message}")
        for record in await app.list_tasks(workflow=wf.id):
            error = record.error.type if record.error else "-"
            print(f"  step {record.step} {record.name}: {record.state.value} {error}")
        print(f"  workflow: {await wf.status()}")

        # 7. tolerate_failures: the body runs, with a TaskFailed for each failed member.
        tolerant = chord(
            group(download.s(page) for page in ("intro", "missing", "groups")),
            count_known_words.s(),
            tolerate_failures=True,
        )
        wf = await tolerant.submit()
        print(f"tolerant chord: {await wf.result(timeout=10)}")

        # 8. Cancel: the running step is told to stop, the waiting ones never start.
        wf = await chain(slow_download.s("intro"), count_words.s(), notify.si("indexed")).submit()
        await asyncio.wait_for(started.wait(), timeout=10)
        print(f"cancel: {await wf.cancel()}")  # True: some step had not ended
        try:
            await wf.result(timeout=10)
        except taskq.TaskCancelled:
            print("  result() raised TaskCancelled")
        again = await app.get_workflow(wf.id)  # a handle from the id, in any process
        steps = await again.tasks()
        await app.gather(steps, timeout=10, return_exceptions=True)  # the running one stopped
        print(f"  workflow: {await again.status()}")
        for step in steps:
            info = await step.info()
            error = info.error.type if info.error else "-"
            print(f"  step {info.step} {info.name}: {info.state.value} {error}")


if __name__ == "__main__":
    asyncio.run(main())
