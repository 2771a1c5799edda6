"""A small, strict parser of the Prometheus text exposition format (0.0.4), for the tests.

It is written from the format's description, not from taskq's renderer, so the tests read
`/metrics` the way a scraper would: `# HELP` / `# TYPE` lines, then samples
`name{label="value",...} number`, label values with the escapes backslash, `\\n` and `\\"`.
Anything else is an error naming the line.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_TYPES = ("counter", "gauge", "histogram", "summary", "untyped")
_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}

Labels = dict[str, str]


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Labels
    value: float


@dataclass
class Exposition:
    helps: dict[str, str] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)

    def find(self, name: str, **labels: str) -> list[Sample]:
        """Samples called `name` whose labels include `labels`."""
        return [
            s
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    def value(self, name: str, **labels: str) -> float | None:
        """The one sample `name` with exactly these labels, or None if there is none."""
        found = [s for s in self.samples if s.name == name and s.labels == labels]
        assert len(found) <= 1, found
        return found[0].value if found else None

    def buckets(self, name: str, **labels: str) -> list[tuple[float, float]]:
        """(le, cumulative count) of histogram `name` for exactly these labels, by le."""
        found = [
            (float(s.labels["le"]), s.value)
            for s in self.samples
            if s.name == name + "_bucket"
            and {k: v for k, v in s.labels.items() if k != "le"} == labels
        ]
        return sorted(found)


def parse(text: str) -> Exposition:
    parsed = Exposition()
    if not text.endswith("\n"):
        raise ValueError("the exposition must end with a line feed")
    for number, line in enumerate(text.split("\n")[:-1], start=1):
        try:
            _line(parsed, line)
        except (ValueError, IndexError) as exc:  # (IndexError: a line cut short)
            raise ValueError(f"line {number} {line!r}: {exc!r}") from None
    return parsed


def _line(parsed: Exposition, line: str) -> None:
    if not line.strip():
        return
    if line.startswith("#"):
        parts = line.split(" ", 3)
        if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
            name = parts[2]
            if not _NAME.fullmatch(name):
                raise ValueError(f"bad metric name {name!r}")
            rest = parts[3] if len(parts) == 4 else ""
            if parts[1] == "HELP":
                if name in parsed.helps:
                    raise ValueError(f"second HELP for {name}")
                parsed.helps[name] = _unescape(rest, quotes=False)
            else:
                if rest not in _TYPES:
                    raise ValueError(f"unknown type {rest!r}")
                if name in parsed.types:
                    raise ValueError(f"second TYPE for {name}")
                if any(_family(s.name, parsed.types) == name for s in parsed.samples):
                    raise ValueError(f"TYPE for {name} after its samples")
                parsed.types[name] = rest
        return  # any other comment
    parsed.samples.append(_sample(line))


def _family(name: str, types: dict[str, str]) -> str:
    """The metric family a sample belongs to (`x_bucket` of histogram `x` → `x`)."""
    if name in types:
        return name
    for kind, suffixes in _SUFFIXES.items():
        for suffix in suffixes:
            base = name.removesuffix(suffix)
            if base != name and types.get(base) == kind:
                return base
    return name


def _sample(line: str) -> Sample:
    match = _NAME.match(line)
    if match is None:
        raise ValueError("no metric name")
    name, position = match.group(), match.end()
    labels: Labels = {}
    if position < len(line) and line[position] == "{":
        labels, position = _labels(line, position + 1)
    if position >= len(line) or line[position] != " ":
        raise ValueError("expected a space before the value")
    fields = line[position + 1 :].split(" ")
    if not 1 <= len(fields) <= 2:  # a value, then an optional timestamp
        raise ValueError("expected a value (and maybe a timestamp)")
    return Sample(name, labels, _number(fields[0]))


def _labels(line: str, position: int) -> tuple[Labels, int]:
    labels: Labels = {}
    while True:
        if line[position] == "}":
            return labels, position + 1
        match = _LABEL_NAME.match(line, position)
        if match is None:
            raise ValueError(f"bad label name at {position}")
        key = match.group()
        position = match.end()
        if line[position : position + 2] != '="':
            raise ValueError(f'expected =" after label {key}')
        position += 2
        chars: list[str] = []
        while line[position] != '"':
            if line[position] == "\\":
                escaped = line[position + 1]
                if escaped not in '\\n"':
                    raise ValueError(f"bad escape \\{escaped}")
                chars.append("\n" if escaped == "n" else escaped)
                position += 2
            else:
                chars.append(line[position])
                position += 1
        if key in labels:
            raise ValueError(f"label {key} twice")
        labels[key] = "".join(chars)
        position += 1
        if line[position] == ",":
            position += 1
        elif line[position] != "}":
            raise ValueError(f"expected , or }} at {position}")


def _unescape(text: str, *, quotes: bool) -> str:
    out: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            escaped = text[index + 1]
            allowed = '\\n"' if quotes else "\\n"
            if escaped not in allowed:
                raise ValueError(f"bad escape \\{escaped}")
            out.append("\n" if escaped == "n" else escaped)
            index += 2
        else:
            out.append(char)
            index += 1
    return "".join(out)


def _number(text: str) -> float:
    if text in ("+Inf", "-Inf", "NaN"):
        return {"+Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}[text]
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"bad value {text!r}") from None
