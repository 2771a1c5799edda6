"""What a task value may be: the types msgpack carries both ways, nested at most MAX_DEPTH
deep. The client checks arguments and results with it; `protocol` checks what it decodes."""

from __future__ import annotations

from taskq.exceptions import SerializationError

SUPPORTED_TYPES = "None, bool, int, float, str, bytes, list, tuple and dict with str keys"
MAX_DEPTH = 64
INT_MIN, INT_MAX = -(2**63), 2**64 - 1


def check_value(value: object, where: str) -> None:
    """Raise `SerializationError` naming where in `value` an unsupported type sits."""
    path = find_unsupported(value, "")
    if path is not None:
        location, culprit = path
        if culprit is TOO_DEEP:
            raise SerializationError(
                f"{where}{location} nests lists and dicts deeper than {MAX_DEPTH} levels, "
                "more than a task message may carry"
            )
        if isinstance(culprit, str):
            raise SerializationError(
                f"{where}{location}: dict keys must not contain NUL characters "
                "(PostgreSQL cannot store them)"
            )
        raise SerializationError(
            f"{where}{location} has type {type(culprit).__module__}.{type(culprit).__qualname__}, "
            f"which taskq cannot serialise (msgpack carries {SUPPORTED_TYPES}); "
            "convert it first, or register it (`app.serializer.register`)"
        )


TOO_DEEP = object()  # the culprit `find_unsupported` names for a value nested too deep


def find_unsupported(value: object, path: str) -> tuple[str, object] | None:
    """(where, what) of the first value msgpack cannot carry, or that nests deeper than
    MAX_DEPTH; None if all is well. Loops, not recursion: depth is the sender's choice. The
    first pass builds no paths (it runs for every message); the second names the culprit."""
    return None if _all_supported(value) else _locate_unsupported(value, path)


def is_plain(value: object) -> bool:
    """Whether `value` is sent as it is: msgpack's own values within the limits, with no
    tuple and no one-key `$` map (nothing for `taskq.serializer` to convert or escape)."""
    return _all_supported(value, as_sent=True)


def _all_supported(value: object, *, as_sent: bool = False) -> bool:
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if item is None or isinstance(item, bool | str | bytes | float):
            continue
        if isinstance(item, int):
            if not INT_MIN <= item <= INT_MAX:
                return False
        elif depth >= MAX_DEPTH:
            return False
        elif isinstance(item, list | tuple):
            if as_sent and isinstance(item, tuple):
                return False
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, dict):
            if not all(isinstance(key, str) and "\x00" not in key for key in item):
                return False
            if as_sent and len(item) == 1 and next(iter(item)).startswith("$"):
                return False
            stack.extend((child, depth + 1) for child in item.values())
        else:
            return False
    return True


def _locate_unsupported(value: object, path: str) -> tuple[str, object] | None:
    stack: list[tuple[object, str, int]] = [(value, path, 0)]
    while stack:
        item, where, depth = stack.pop()
        if item is None or isinstance(item, bool | str | bytes | float):
            continue
        if isinstance(item, int):
            if not INT_MIN <= item <= INT_MAX:
                return (where, item)
            continue
        if depth >= MAX_DEPTH and isinstance(item, list | tuple | dict):
            return (where, TOO_DEEP)
        if isinstance(item, list | tuple):
            for index in range(len(item) - 1, -1, -1):
                stack.append((item[index], f"{where}[{index}]", depth + 1))
        elif isinstance(item, dict):
            for key in item:
                if not isinstance(key, str) or "\x00" in key:
                    return (f"{where} key {key!r}", key)
            for key, child in reversed(item.items()):
                stack.append((child, f"{where}[{key!r}]", depth + 1))
        else:
            return (where, item)
    return None
