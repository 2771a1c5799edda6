"""Flow control as declared: rate limits, concurrency limits and quotas, each cluster-wide
and optionally per value of one of the task's arguments (`key`).

What a call is subject to is worked out at submit (`row_limits`) and travels with the task,
on its row and in its message: the store enforces it (`taskq.store.limits`), workers and
the leader share it through PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import re
from typing import Any, TypeVar

from taskq.broker import topology
from taskq.exceptions import ConfigurationError

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|m|h)\s*$")
_PERIOD = {"s": 1.0, "m": 60.0, "h": 3600.0}
_NOT_GIVEN = object()
MAX_KEY_CHARS = 255  # as any name a message carries; a longer key keeps a digest


@dataclasses.dataclass(frozen=True, slots=True)
class _Where:
    """Where a key's argument is in a call: by name, at a position, or its default."""

    name: str
    position: int | None
    default: Any

    def value_in(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self.name in kwargs:
            return kwargs[self.name]
        if self.position is not None and self.position < len(args):
            return args[self.position]
        return self.default


@dataclasses.dataclass(frozen=True, slots=True)
class RateLimit:
    """At most `rate` starts ("100/s", "30/m", "1000/h") across every worker, with at most
    `burst` at once; per value of the argument `key` if given."""

    rate: str
    key: str | None = None
    burst: int = 1
    per_second: float = dataclasses.field(init=False, compare=False)
    _where: _Where | None = dataclasses.field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        match = _RATE.match(self.rate) if isinstance(self.rate, str) else None
        if match is None or float(match[1]) <= 0:
            raise ConfigurationError(
                f"rate limit {self.rate!r} is not of the form N/s, N/m or N/h "
                "(N > 0, for example '100/s')"
            )
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
            raise ConfigurationError(f"rate limit burst {self.burst!r} must be an int >= 1")
        _check_key(self.key)
        object.__setattr__(self, "per_second", float(match[1]) / _PERIOD[match[2]])


@dataclasses.dataclass(frozen=True, slots=True)
class ConcurrencyLimit:
    """At most `limit` running at once across every worker; per value of `key` if given."""

    limit: int
    key: str | None = None
    _where: _Where | None = dataclasses.field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_count(self.limit, "concurrency limit")
        _check_key(self.key)


@dataclasses.dataclass(frozen=True, slots=True)
class Quota:
    """At most `limit` unfinished (queued, scheduled or running) tasks; per value of `key`
    if given. A submit beyond it raises `QuotaExceeded` and stores nothing."""

    limit: int
    key: str | None = None
    _where: _Where | None = dataclasses.field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_count(self.limit, "quota")
        _check_key(self.key)


Limit = RateLimit | ConcurrencyLimit | Quota
L = TypeVar("L", RateLimit, ConcurrencyLimit, Quota)


def rate_limit(value: RateLimit | str | None) -> RateLimit | None:
    """`rate_limit=` as given: "100/s" or a `RateLimit`."""
    if value is None or isinstance(value, RateLimit):
        return value
    if isinstance(value, str):
        return RateLimit(value)
    raise ConfigurationError(f"rate_limit must be a string like '100/s' or a RateLimit: {value!r}")


def concurrency_limit(value: ConcurrencyLimit | int | None) -> ConcurrencyLimit | None:
    """`concurrency_limit=` as given: an int or a `ConcurrencyLimit`."""
    if value is None or isinstance(value, ConcurrencyLimit):
        return value
    return ConcurrencyLimit(value)


def quota(value: Quota | int | None) -> Quota | None:
    """`quota=` as given: an int or a `Quota`."""
    if value is None or isinstance(value, Quota):
        return value
    return Quota(value)


def tags(value: Any) -> frozenset[str]:
    """`tags=` as given: a set (or any iterable) of tag names (`topology.checked_tags`)."""
    return topology.checked_tags(value)


def bound(limit: L | None, signature: inspect.Signature, task: str) -> L | None:
    """`limit` with its `key` found among the task's parameters (`ConfigurationError` if
    the task has no such parameter)."""
    if limit is None or limit.key is None:
        return limit
    parameter = signature.parameters.get(limit.key)
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    if parameter is None or parameter.kind not in kinds:
        names = (
            ", ".join(name for name, p in signature.parameters.items() if p.kind in kinds) or "none"
        )
        raise ConfigurationError(
            f"task {task!r}: limit key {limit.key!r} is not one of its parameters "
            f"(those it can name: {names})"
        )
    position = list(signature.parameters).index(limit.key)
    default = _NOT_GIVEN if parameter.default is inspect.Parameter.empty else parameter.default
    where = _Where(
        limit.key,
        position if parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD else None,
        default,
    )
    return dataclasses.replace(limit, _where=where)


def row_limits(
    task: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    rate: RateLimit | None,
    slots: ConcurrencyLimit | None,
    most: Quota | None,
) -> dict[str, Any] | None:
    """What one call is subject to, as its row and message carry it (None: nothing):
    {"rate": [key, per second, burst], "slots": [key, limit], "quota": [key, limit]}."""
    if rate is None and slots is None and most is None:
        return None
    found: dict[str, Any] = {}
    if rate is not None:
        found["rate"] = [limit_key(task, rate, args, kwargs), rate.per_second, rate.burst]
    if slots is not None:
        found["slots"] = [limit_key(task, slots, args, kwargs), slots.limit]
    if most is not None:
        found["quota"] = [limit_key(task, most, args, kwargs), most.limit]
    return found


def limit_key(task: str, limit: Limit, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """ "app.call" for a limit on the whole task, "app.call account=42" for one per key."""
    if limit.key is None:
        return task
    where = limit._where
    if where is None:
        raise ConfigurationError(
            f"task {task!r}: a limit keyed by {limit.key!r} was set after the task was "
            "declared, outside task.options(); give it in @app.task or task.options()"
        )
    value = where.value_in(args, kwargs)
    if value is _NOT_GIVEN:
        raise ConfigurationError(f"task {task!r}: no value for the limit key {limit.key!r}")
    text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
    prefix = f"{task} {limit.key}="
    if len(prefix) + len(text) > MAX_KEY_CHARS or not text.isprintable():
        # (a key is a plain name, as a message carries it: a long one keeps a digest)
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        shown = "".join(c if c.isprintable() else "?" for c in text)
        text = f"{shown[: max(0, MAX_KEY_CHARS - len(prefix) - 17)]}~{digest}"
    key = prefix + text
    return key[:MAX_KEY_CHARS]


def _check_count(value: Any, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{what} {value!r} must be an int >= 1")


def _check_key(key: Any) -> None:
    if key is not None and not (isinstance(key, str) and key.isidentifier()):
        raise ConfigurationError(f"limit key {key!r} must name a parameter of the task")
