"""Task values ↔ JSON that `psql` shows readably and that round-trips exactly.

JSON cannot hold bytes or non-finite floats, so those become one-key tagged objects
(`{"$bytes": "<base64>"}`, `{"$float": "nan"}`); a user's own one-key dict whose key starts
with `$` is wrapped in `{"$dict": ...}` so it is never mistaken for a tag.
"""

from __future__ import annotations

import base64
import math
from typing import Any

_TAGS = ("$bytes", "$float", "$dict")


def to_json(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, float) and not math.isfinite(value):
        return {"$float": repr(value)}
    if isinstance(value, list | tuple):
        return [to_json(item) for item in value]
    if isinstance(value, dict):
        converted = {key: to_json(item) for key, item in value.items()}
        if len(value) == 1 and next(iter(value)).startswith("$"):
            return {"$dict": converted}
        return converted
    return value


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
            if key == "$dict":
                return {k: from_json(v) for k, v in inner.items()}
        return {key: from_json(item) for key, item in value.items()}
    return value
