"""Task values beyond what msgpack carries, both ways: arguments, results, progress data.

On the wire and in the row a value is a tree of plain values (None, bool, int, float, str,
bytes, list, dict with str keys) in which every other value is a map with one `$` key:

    {"$datetime": "2026-12-05T10:00:00+00:00"}  {"$date": "2026-12-05"}  {"$time": "10:00:00"}
    {"$timedelta": [days, seconds, microseconds]}  {"$uuid": "…"}  {"$decimal": "1.10"}
    {"$tuple": [...]}  {"$set": [...]}  {"$frozenset": [...]}  {"$<registered name>": ...}
    {"$taskfailed": [task id, error type, message, traceback]}

so `psql` shows them readably and any language can read them. A user's own one-key map
whose key starts with `$` travels as {"$dict": {...}}, never read as a tag. Enums travel as
their value, dataclasses and pydantic models as their fields: the receiving side rebuilds
them as the type that the task's annotations name (as Taskiq does), or, for a type
registered with `register`, wherever it is. Nothing is ever imported by a name a message
gives.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from taskq.exceptions import (
    ConfigurationError,
    InvalidArguments,
    SerializationError,
    TaskFailed,
)
from taskq.values import INT_MAX, INT_MIN, MAX_DEPTH, check_value, is_plain

_PLAIN = (str, bool, float, bytes, type(None))
_ATOMS: dict[str, tuple[type, Callable[[Any], Any], Callable[[Any], Any]]] = {
    # tag: (type, to plain, from plain). datetime before date: a datetime is a date.
    "datetime": (datetime, datetime.isoformat, datetime.fromisoformat),
    "date": (date, date.isoformat, date.fromisoformat),
    "time": (time, time.isoformat, time.fromisoformat),
    "timedelta": (
        timedelta,
        lambda d: [d.days, d.seconds, d.microseconds],
        lambda v: timedelta(days=v[0], seconds=v[1], microseconds=v[2]),
    ),
    "uuid": (uuid.UUID, str, uuid.UUID),
    "decimal": (Decimal, str, Decimal),
    # A failed chord member in the list its body receives (`chord(tolerate_failures=True)`).
    "taskfailed": (
        TaskFailed,
        lambda e: [e.task_id, e.error_type, e.error_message, e.traceback],
        lambda v: TaskFailed(*v),
    ),
}
_COLLECTIONS = {"tuple": tuple, "set": set, "frozenset": frozenset}
_SEQUENCES = (list, tuple, set, frozenset)
_ABSTRACT_SEQUENCES = (Sequence, Iterable, Collection)
BUILT_IN_TAGS = frozenset([*_ATOMS, *_COLLECTIONS, "dict"])


@dataclasses.dataclass(frozen=True)
class _Registered:
    tag: str
    cls: type
    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]


class Serializer:
    """Turns task values into plain trees and back; `app.serializer` of each app."""

    def __init__(self) -> None:
        self._by_type: dict[type, _Registered] = {}
        self._by_tag: dict[str, _Registered] = {}

    def register(
        self,
        cls: type,
        encode: Callable[[Any], Any] | None = None,
        decode: Callable[[Any], Any] | None = None,
        *,
        name: str | None = None,
    ) -> None:
        """Carry instances of `cls` as {"$<name>": encode(value)}, rebuilt by
        `decode(plain)` wherever they are (`name` defaults to the class's name; an Enum
        needs neither function). Register on every process, before declaring tasks."""
        if issubclass(cls, enum.Enum):
            encode = encode or (lambda member: member.value)
            decode = decode or cls
        if encode is None or decode is None:
            raise ConfigurationError(f"register({cls.__qualname__}) needs encode and decode")
        tag = name or cls.__name__
        if tag in BUILT_IN_TAGS or not tag.isidentifier():
            raise ConfigurationError(f"{tag!r} cannot name a registered type (built in, or not "
                                     "an identifier): pass another name=")  # fmt: skip
        entry = _Registered(tag, cls, encode, decode)
        self._by_type[cls] = self._by_tag[tag] = entry

    # -- out: value → plain tree ------------------------------------------------------------

    def dump(self, value: Any, where: str) -> Any:
        """The plain tree for `value`, or `SerializationError` naming where in it a value
        taskq cannot carry sits. Plain values come back as they are (no copy)."""
        if is_plain(value):
            return value
        plain = self._dump(value, "", 0, where)
        check_value(plain, where)  # (depth and key checks on what is sent)
        return plain

    def _dump(self, value: Any, path: str, depth: int, where: str) -> Any:
        if isinstance(value, _PLAIN):
            return value
        if isinstance(value, int) and not isinstance(value, enum.Enum):
            if not INT_MIN <= value <= INT_MAX:
                raise SerializationError(f"{where}{path}: the integer {value} is outside msgpack's "
                                         "64-bit range; send it as a str or Decimal")  # fmt: skip
            return int(value)
        if depth >= MAX_DEPTH:
            raise SerializationError(f"{where}{path} nests deeper than {MAX_DEPTH} levels")
        if isinstance(value, list):
            return self._dump_items(value, path, depth, where)
        if isinstance(value, dict):
            return self._dump_dict(value, path, depth, where)
        registered = self._by_type.get(type(value))
        if registered is not None:
            return {
                f"${registered.tag}": self._dump(registered.encode(value), path, depth + 1, where)
            }
        for tag, (cls, to_plain, _) in _ATOMS.items():
            if isinstance(value, cls):
                return {f"${tag}": to_plain(value)}
        for tag, cls in _COLLECTIONS.items():
            if isinstance(value, cls):
                return {f"${tag}": self._dump_items(value, path, depth, where)}
        return self._dump_fields(value, path, depth, where)

    def _dump_items(self, items: Any, path: str, depth: int, where: str) -> list[Any]:
        return [self._dump(item, f"{path}[{i}]", depth + 1, where) for i, item in enumerate(items)]

    def _dump_fields(self, value: Any, path: str, depth: int, where: str) -> Any:
        """An Enum as its value; a dataclass or a pydantic model as a map of its fields."""
        if isinstance(value, enum.Enum):
            return self._dump(value.value, path, depth, where)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
            return self._dump_dict(fields, path, depth, where)
        if _is_pydantic_model(type(value)):
            return self._dump_dict(value.model_dump(mode="python"), path, depth, where)
        kind = f"{type(value).__module__}.{type(value).__qualname__}"
        raise SerializationError(
            f"{where}{path} has type {kind}, which taskq cannot serialise: convert it first, "
            "or register it (`app.serializer.register(type, encode, decode)`)"
        )

    def _dump_dict(self, value: dict[Any, Any], path: str, depth: int, where: str) -> Any:
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise SerializationError(f"{where}{path} key {key!r}: map keys must be str")
            out[key] = self._dump(item, f"{path}[{key!r}]", depth + 1, where)
        if len(out) == 1 and next(iter(out)).startswith("$"):
            return {"$dict": out}
        return out

    # -- in: plain tree → value -------------------------------------------------------------

    def load(self, plain: Any, annotation: Any = Any) -> Any:
        """The value a plain tree stands for, rebuilt as `annotation` where it names a
        dataclass, a pydantic model, an Enum, a tuple or a set (also inside containers)."""
        value = plain if not _tagged(plain) else self._load(plain)
        return value if annotation is Any else rebuild(value, annotation)

    def _load(self, plain: Any) -> Any:
        if isinstance(plain, list):
            return [self._load(item) for item in plain]
        if not isinstance(plain, dict):
            return plain
        if len(plain) == 1:
            key, inner = next(iter(plain.items()))
            if key.startswith("$"):
                tag = key[1:]
                if tag == "dict" and isinstance(inner, dict):
                    return {k: self._load(v) for k, v in inner.items()}
                if tag in _ATOMS:
                    return _ATOMS[tag][2](inner)
                if tag in _COLLECTIONS and isinstance(inner, list):
                    return _COLLECTIONS[tag](self._load(item) for item in inner)
                registered = self._by_tag.get(tag)
                if registered is not None:
                    return registered.decode(self._load(inner))
        return {key: self._load(item) for key, item in plain.items()}

    def check_annotation(self, annotation: Any, where: str) -> None:
        """Refuse, at declaration, an annotation naming a type taskq cannot carry."""
        for leaf in _leaves(annotation):
            if not self._carries(leaf):
                raise ConfigurationError(
                    f"{where} is annotated {_name(annotation)}, and taskq cannot carry "
                    f"{_name(leaf)}: return a supported type, or register it first "
                    "(`app.serializer.register(type, encode, decode)`)"
                )

    def _carries(self, cls: Any) -> bool:
        if not isinstance(cls, type) or cls in self._by_type or cls is Any:
            return True  # (TypeVars, Literal values, forward references: not checked)
        if cls.__module__ in ("collections.abc", "typing"):
            return True  # (Sequence[int], Iterable[str]: a list or a tuple satisfies them)
        built_in: tuple[type, ...] = (*_PLAIN, int, list, dict, enum.Enum, Mapping)
        temporal = tuple(entry[0] for entry in _ATOMS.values())
        return (
            issubclass(cls, (*built_in, *temporal, *_COLLECTIONS.values()))
            or dataclasses.is_dataclass(cls)
            or _is_pydantic_model(cls)
            or cls is object
        )


def rebuild(value: Any, annotation: Any) -> Any:
    """`value` as the type `annotation` names, where it names one taskq rebuilds."""
    if annotation is Any or annotation is None or isinstance(annotation, typing.TypeVar):
        return value
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is None:
        return _rebuild_class(value, annotation)
    if origin is typing.Union or origin is types.UnionType:
        if value is None:
            return None
        for option in args:
            if option is not type(None) and _fits(value, option):
                return rebuild(value, option)
        return value
    if origin is typing.Annotated:
        return rebuild(value, args[0])
    if origin in (list, set, frozenset, tuple) and isinstance(value, _SEQUENCES):
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            return tuple(rebuild(v, a) for v, a in zip(value, args, strict=False))
        return origin(rebuild(v, args[0]) for v in value) if args else origin(value)
    if origin in _ABSTRACT_SEQUENCES and isinstance(value, list | tuple) and args:
        return type(value)(rebuild(v, args[0]) for v in value)  # (Sequence[Point], ...)
    if origin in (dict, Mapping) and isinstance(value, dict) and len(args) == 2:
        return {key: rebuild(item, args[1]) for key, item in value.items()}
    return value


def _rebuild_class(value: Any, cls: Any) -> Any:
    if not isinstance(cls, type) or isinstance(value, cls):
        return value
    if issubclass(cls, enum.Enum):
        return cls(value)
    if cls in (tuple, set, frozenset) and isinstance(value, list):
        return cls(value)
    if dataclasses.is_dataclass(cls) and isinstance(value, dict):
        hints = _hints(cls)
        init = {f.name for f in dataclasses.fields(cls) if f.init}
        fields = {k: rebuild(v, hints.get(k, Any)) for k, v in value.items() if k in init}
        return cls(**fields)
    if _is_pydantic_model(cls) and isinstance(value, dict):
        return cls.model_validate(value)  # type: ignore[attr-defined]
    return value


def rebuild_arguments(
    parameters: Mapping[str, Any], names: list[str], args: list[Any], kwargs: dict[str, Any]
) -> tuple[list[Any], dict[str, Any]]:
    """Arguments rebuilt by their parameters' annotations (`names`: positional order)."""
    try:
        loaded = [
            rebuild(value, parameters.get(names[i], Any)) if i < len(names) else value
            for i, value in enumerate(args)
        ]
        return loaded, {k: rebuild(v, parameters.get(k, Any)) for k, v in kwargs.items()}
    except (TypeError, ValueError) as exc:  # (pydantic's ValidationError is a ValueError)
        raise InvalidArguments(
            f"the message's arguments do not fit the annotations: {exc}"
        ) from None


def _fits(value: Any, option: Any) -> bool:
    """Whether `value` may stand for `option` in a Union (first one that fits wins)."""
    target = typing.get_origin(option) or option
    if not isinstance(target, type):
        return True
    if isinstance(value, target):
        return True
    if issubclass(target, enum.Enum):
        return any(member.value == value for member in target)
    if isinstance(value, dict):
        return dataclasses.is_dataclass(target) or _is_pydantic_model(target) or target is Mapping
    return isinstance(value, list) and target in (list, tuple, set, frozenset)


def _tagged(plain: Any) -> bool:
    """Whether a plain tree holds any one-key `$` map (so `_load` has work to do)."""
    stack = [plain]
    while stack:
        item = stack.pop()
        if type(item) is list:
            stack.extend(item)
        elif type(item) is dict:
            if len(item) == 1 and str(next(iter(item))).startswith("$"):
                return True
            stack.extend(item.values())
    return False


def _leaves(annotation: Any) -> list[Any]:
    if annotation is None or annotation is type(None):
        return []
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return []
    if origin is typing.Annotated:
        return _leaves(args[0])
    if origin is not None:
        leaves = [origin] if isinstance(origin, type) and origin is not types.UnionType else []
        return leaves + [leaf for arg in args if arg is not Ellipsis for leaf in _leaves(arg)]
    return [annotation]


def _hints(cls: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # (unresolvable forward references: nothing is rebuilt by them)
        return {}


def task_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """A task function's resolved annotations ("return" among them), or {} if they do not
    resolve (then values arrive as they were sent, built-in tagged types rebuilt)."""
    return _hints(fn)


def _is_pydantic_model(cls: type) -> bool:
    return any(base.__module__.startswith("pydantic") and base.__name__ == "BaseModel"
               for base in getattr(cls, "__mro__", ()))  # fmt: skip


def _name(annotation: Any) -> str:
    return getattr(annotation, "__qualname__", None) or repr(annotation)
