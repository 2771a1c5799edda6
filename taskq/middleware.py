"""Middleware: one seam around submitting a task and around running one.

A middleware overrides either or both of two async methods, each given the next step to
await, as procrastinate's middleware and ASGI do; the first middleware registered is the
outermost, on both sides::

    class Tenant(taskq.Middleware):
        async def submit(self, submission, call_next):
            submission.headers["tenant"] = current_tenant()
            return await call_next(submission)

        async def run(self, ctx, call_next):
            with tenant_scope(ctx.headers.get("tenant")):
                return await call_next(ctx)

Plugins expose middleware under the entry-point group `taskq.middleware` and are enabled by
name (`TASKQ_MIDDLEWARE=a,b`, `taskq worker --middleware a`), never just by being installed.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Awaitable, Callable, Iterable, Sequence
from importlib import metadata
from typing import TYPE_CHECKING, Any, TypeVar

from taskq import protocol
from taskq.exceptions import ConfigurationError

if TYPE_CHECKING:
    from taskq.client.options import TaskOptions
    from taskq.context import TaskContext

ENTRY_POINT_GROUP = "taskq.middleware"
T = TypeVar("T")
U = TypeVar("U")

SubmitNext = Callable[["Submission"], Awaitable[str]]
RunNext = Callable[["TaskContext"], Awaitable[Any]]


@dataclasses.dataclass(slots=True, kw_only=True)
class Submission:
    """One task on its way to the store and the broker. A `submit` middleware may change
    `options` and add to `headers`, which are stored on the task's row and reach the worker
    as `taskq.context().headers`."""

    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    options: TaskOptions
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


class Middleware:
    """Override `submit`, `run` or both; a method left as it is costs nothing."""

    async def submit(self, submission: Submission, call_next: SubmitNext) -> str:
        """Around storing and publishing one task; → the task's id. Raising refuses the
        submit: nothing is stored or published."""
        return await call_next(submission)

    async def run(self, ctx: TaskContext, call_next: RunNext) -> Any:
        """Around one attempt of a task on a worker; → the task's value. Raising fails the
        attempt with that error (the task's retries apply)."""
        return await call_next(ctx)


def checked(middleware: object) -> Middleware:
    """`middleware`, if it is one taskq can call; else a `ConfigurationError` saying why."""
    if not isinstance(middleware, Middleware):
        hint = " (pass an instance, not the class)" if _is_middleware_class(middleware) else ""
        raise ConfigurationError(
            f"middleware must be an instance of taskq.Middleware, not {middleware!r}{hint}"
        )
    for method in ("submit", "run"):
        if not inspect.iscoroutinefunction(getattr(middleware, method)):
            raise ConfigurationError(
                f"{type(middleware).__name__}.{method} must be an `async def` method"
            )
    return middleware


def compose(
    handlers: Sequence[Callable[[T, Callable[[T], Awaitable[U]]], Awaitable[U]]],
    last: Callable[[T], Awaitable[U]],
) -> Callable[[T], Awaitable[U]]:
    """`handlers[0]` around `handlers[1]` ... around `last`: each gets the value and the
    next step to await. Built once; calling it costs one coroutine per handler."""
    chain = last
    for handler in reversed(handlers):
        chain = _link(handler, chain)
    return chain


def compose_submit(middlewares: Sequence[Middleware], last: SubmitNext) -> SubmitNext:
    """The submit chain, outermost first, ending in `last`; built once per app."""
    return compose([m.submit for m in _overriding(middlewares, "submit")], last)


def compose_run(middlewares: Sequence[Middleware], last: RunNext) -> RunNext | None:
    """The run chain, outermost first, ending in `last`; None if no middleware runs
    (the worker then calls the task's code directly, as before)."""
    overriding = _overriding(middlewares, "run")
    return compose([m.run for m in overriding], last) if overriding else None


def check_headers(headers: object) -> dict[str, str]:
    """The headers as a worker will accept them (`protocol`'s limits), or a clear error."""
    if not isinstance(headers, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in headers.items()
    ):
        raise ConfigurationError(
            f"submission headers must map str to str, not {headers!r}: a middleware "
            "put something else there"
        )
    if not protocol.headers_fit(headers):
        raise ConfigurationError(
            f"submission headers: at most {protocol.MAX_HEADERS}, each a name of printable "
            f"characters and a value of at most {protocol.MAX_HEADER_CHARS} characters"
        )
    return headers


def from_entry_points(names: Iterable[str]) -> list[Middleware]:
    """The middleware that installed plugins expose under these names, in this order."""
    wanted = [name.strip() for name in names if name.strip()]
    if not wanted:
        return []
    found = {entry.name: entry for entry in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    loaded = []
    for name in wanted:
        if name not in found:
            known = ", ".join(sorted(found)) or "none is installed"
            raise ConfigurationError(
                f"no middleware named {name!r} in the entry-point group {ENTRY_POINT_GROUP!r} "
                f"(known: {known}); install the plugin that provides it, or fix the name"
            )
        target = found[name].load()
        loaded.append(checked(target() if _is_middleware_class(target) else target))
    return loaded


def _link(
    handler: Callable[[T, Callable[[T], Awaitable[U]]], Awaitable[U]],
    call_next: Callable[[T], Awaitable[U]],
) -> Callable[[T], Awaitable[U]]:
    # A plain function handing back the handler's coroutine: no frame of its own per call.
    def step(value: T) -> Awaitable[U]:
        return handler(value, call_next)

    return step


def _overriding(middlewares: Sequence[Middleware], method: str) -> list[Middleware]:
    base = getattr(Middleware, method)
    return [m for m in middlewares if getattr(type(m), method) is not base]


def _is_middleware_class(value: object) -> bool:
    return isinstance(value, type) and issubclass(value, Middleware)
