"""Task values ↔ JSON that `psql` shows readably and that round-trips exactly.

JSON cannot hold bytes or non-finite floats, and PostgreSQL's jsonb cannot hold a NUL
character and stores numbers as `numeric` (so `1e16` would come back as an int and `-0.0`
as `0.0`). Those values become one-key tagged objects: `{"$bytes": "<base64>"}`,
`{"$float": "1e+16"}`, `{"$str": "<base64 of utf-8>"}`. A one-key dict whose key is one of
these tags (or `$dict`) is wrapped in `{"$dict": ...}` so it is never mistaken for one. Other
`$` keys (`taskq.serializer`'s tags, like `{"$datetime": ...}`) pass through as they are.
"""

from __future__ import annotations

import base64
import math
from typing import Any

_TAGS = frozenset(["$bytes", "$float", "$str", "$dict"])


def to_json(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, float) and _needs_tag(value):
        return {"$float": repr(value)}
    if isinstance(value, str) and "\x00" in value:
        return {"$str": base64.b64encode(value.encode()).decode("ascii")}
    if isinstance(value, list | tuple):
        return [to_json(item) for item in value]
    if isinstance(value, dict):
        converted = {key: to_json(item) for key, item in value.items()}
        if len(value) == 1 and next(iter(value)) in _TAGS:
            return {"$dict": converted}
        return converted
    return value


def to_sqlite_json(value: Any) -> Any:
    """`to_json` for a whole column value on SQLite, whose JSON columns have numeric
    affinity: a bare `108.0` would be stored, and read back, as the integer 108."""
    converted = to_json(value)
    if isinstance(converted, float) and converted.is_integer():
        return {"$float": repr(converted)}
    return converted


def from_json(value: Any) -> Any:
    if isinstance(value, list):
        return [from_json(item) for item in value]
    if isinstance(value, dict):
        if len(value) == 1:
            key, inner = next(iter(value.items()))
            if key == "$bytes":
                return base64.b64decode(inner)
            if key == "$float":
                return float(inner)
            if key == "$str":
                return base64.b64decode(inner).decode()
            if key == "$dict":
                return {k: from_json(v) for k, v in inner.items()}
        return {key: from_json(item) for key, item in value.items()}
    return value


def _needs_tag(value: float) -> bool:
    """Floats that JSON or PostgreSQL's numeric would not give back as the same float."""
    text = repr(value)
    return not math.isfinite(value) or "e+" in text or text == "-0.0"
