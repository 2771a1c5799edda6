"""Settings: keyword arguments first, then `TASKQ_*` environment variables, then defaults.

Secrets live in the URLs; `repr()` and every message show them redacted (`redact_url`).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from taskq.exceptions import ConfigurationError

ENV_PREFIX = "TASKQ_"
DEFAULT_BROKER_URL = "memory://"
DEFAULT_STORE_URL = "sqlite+aiosqlite:///taskq.sqlite3"
BROKER_SCHEMES = ("memory", "amqp", "amqps")
STORE_SCHEMES = ("sqlite+aiosqlite", "postgresql+asyncpg")
QUEUE_TYPES = ("classic", "quorum")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """One app's configuration; build it with `Settings.load(...)`."""

    broker_url: str = DEFAULT_BROKER_URL
    store_url: str = DEFAULT_STORE_URL
    max_payload_bytes: int = 1024 * 1024
    max_priority: int = 10
    publish_timeout: float = 10.0
    flush_interval: float = 0.0
    # A task still running after lease_after s has its message acked and is kept by a
    # lease of lease_duration s, renewed by its worker: RabbitMQ's consumer_timeout
    # (30 min by default) would otherwise close the channel and run the task twice.
    lease_after: float = 900.0
    lease_duration: float = 60.0
    # Names of installed middleware plugins to enable (entry-point group taskq.middleware),
    # comma-separated: TASKQ_MIDDLEWARE=tenant,audit.
    middleware: str = ""
    # HMAC keys for task messages and events, comma-separated, the signing one first
    # (TASKQ_SIGNING_KEY, or one per line in TASKQ_SIGNING_KEY_FILE); see taskq.signing.
    signing_key: str = ""
    # Finished tasks older than this are deleted by the leader ("30d", "12h"; "off" keeps
    # them for ever); a task's own `retention=` overrides it.
    retention: str = "30d"
    # Apps with different namespaces share a vhost and a database without seeing each
    # other: their RabbitMQ names start "<namespace>:", their tables live in the PostgreSQL
    # schema <namespace> (on SQLite: a file of their own). "" is the default, as before.
    namespace: str = ""
    # "classic" (one node) or "quorum": task queues and their dead-letter queues replicated
    # over a RabbitMQ cluster (docs/deploying.md#quorum-queues).
    queue_type: str = "classic"
    # Quorum queues have no priorities: each queue is a lane per priority band instead, and
    # these are the bands' lowest priorities above 0, comma-separated ("1,5": 0 | 1-4 | 5
    # and up); "" is 1 and half of max_priority (docs/deploying.md#priority-lanes). Classic
    # queues ignore it.
    priority_lanes: str = ""

    def __repr__(self) -> str:
        fields = ", ".join(f"{f.name}={self._shown(f.name)!r}" for f in dataclasses.fields(self))
        return f"Settings({fields})"

    def _shown(self, name: str) -> object:
        value = getattr(self, name)
        if name == "signing_key":
            return "***" if value else ""
        return redact_url(value) if name.endswith("_url") else value

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Merge explicit overrides (None means unset) over `TASKQ_*` variables."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            given = overrides.pop(field.name, None)
            if given is None:
                given = _from_env(env, field.name, field.type)
            if given is not None:
                values[field.name] = given
        if overrides:
            raise TypeError(f"unknown settings: {', '.join(sorted(overrides))}")
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        _check_scheme("broker_url", self.broker_url, BROKER_SCHEMES)
        _check_scheme("store_url", self.store_url, STORE_SCHEMES)
        if self.max_payload_bytes < 1024:
            raise ConfigurationError("max_payload_bytes must be at least 1024")
        if not 1 <= self.max_priority <= 255:
            raise ConfigurationError("max_priority must be between 1 and 255 (10 is advised)")
        if self.publish_timeout <= 0 or self.flush_interval < 0:
            raise ConfigurationError("publish_timeout must be > 0 and flush_interval >= 0")
        if self.lease_after <= 0 or self.lease_duration < 10:
            raise ConfigurationError("lease_after must be > 0 and lease_duration >= 10 seconds")
        parse_retention(self.retention, "TASKQ_RETENTION")
        check_namespace(self.namespace)
        if self.queue_type not in QUEUE_TYPES:
            raise ConfigurationError(
                f"TASKQ_QUEUE_TYPE must be one of {', '.join(QUEUE_TYPES)}, not {self.queue_type!r}"
            )
        parse_lanes(self.priority_lanes, self.max_priority)  # (checked in either mode)

    @property
    def lane_floors(self) -> tuple[int, ...]:
        """The lowest priority of each lane, 0 first: (0,) for classic queues, which keep
        priorities themselves."""
        if self.queue_type == "classic":
            return (0,)
        return (0, *parse_lanes(self.priority_lanes, self.max_priority))

    @property
    def retention_period(self) -> timedelta | None:
        """How long finished tasks are kept; None: for ever."""
        return parse_retention(self.retention, "TASKQ_RETENTION")


def parse_lanes(text: str, max_priority: int) -> tuple[int, ...]:
    """The lowest priority of each lane above lane 0, rising, within 1..max_priority:
    "1,5" → (1, 5); "" → 1 and half of max_priority (10: (1, 5))."""
    if not text.strip():
        return tuple(sorted({1, (max_priority + 1) // 2}))
    try:
        floors = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        floors = ()
        valid = False
    else:
        valid = all(a < b for a, b in zip((0, *floors), floors, strict=False))
    if not valid or any(floor > max_priority for floor in floors) or len(floors) > 9:
        raise ConfigurationError(
            f"TASKQ_PRIORITY_LANES {text[:40]!r} must be rising priorities between 1 and "
            f"max_priority ({max_priority}), at most 9, comma-separated, like '1,5'"
        )
    return floors


_NAMESPACE = re.compile(r"^[a-z][a-z0-9_]{0,30}$")


def check_namespace(namespace: str) -> None:
    """A namespace names a PostgreSQL schema and prefixes AMQP names: keep it plain."""
    if namespace and not _NAMESPACE.match(namespace):
        raise ConfigurationError(
            f"namespace {namespace[:40]!r} must be 1 to 31 lowercase letters, digits or '_', "
            "starting with a letter (TASKQ_NAMESPACE, or App(namespace=...))"
        )


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str, what: str) -> timedelta:
    """'30s', '10m', '2h', '7d' → that timedelta; anything else is a `ConfigurationError`
    naming `what` (the option or variable it came from)."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ConfigurationError(
            f"{what} {text!r} is not a duration: write a number and a unit, like 30s, 10m, 2h, 7d"
        )
    amount, unit = match.groups()
    try:
        return timedelta(**{_UNITS[unit]: float(amount)})
    except OverflowError:
        raise ConfigurationError(f"{what} {text!r} is too long a duration") from None


def parse_since(text: str, what: str) -> datetime:
    """'10m' → ten minutes ago; an ISO 8601 time (UTC if it names no offset) → that time;
    anything else is a `ConfigurationError` naming `what`."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        pass
    else:
        return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    try:
        return datetime.now(UTC) - parse_duration(text, what)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{exc}, or an ISO 8601 time") from None
    except OverflowError:
        raise ConfigurationError(
            f"{what} {text!r} reaches back before the year 1: give a shorter duration"
        ) from None


def parse_retention(value: str | timedelta | None, what: str) -> timedelta | None:
    """A retention period: a duration (at least a minute), or "off" (None: keep for ever)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "off"):
        return None
    period = value if isinstance(value, timedelta) else parse_duration(value, what)
    if period < timedelta(minutes=1):
        raise ConfigurationError(f"{what} must be at least a minute (or 'off'), got {value}")
    return period


def secret_from_env(name: str, env: Mapping[str, str] | None = None) -> str | None:
    """TASKQ_<NAME>, or the contents of the file TASKQ_<NAME>_FILE names; None if neither."""
    value = _from_env(os.environ if env is None else env, name, str)
    return None if value is None else str(value)


def _from_env(env: Mapping[str, str], name: str, type_name: object) -> object:
    """Read TASKQ_<NAME>, or the file named by TASKQ_<NAME>_FILE (Docker secrets)."""
    key = ENV_PREFIX + name.upper()
    raw = env.get(key)
    if not raw and (path := env.get(key + "_FILE")):
        try:
            raw = Path(path).read_text().strip()
        except OSError as exc:
            raise ConfigurationError(
                f"{key}_FILE names {path!r}, which cannot be read: {exc.strerror}"
            ) from None
    if raw is None or raw == "":
        return None
    if type_name in ("int", int):
        return _parse(key, raw, int, "an integer")
    if type_name in ("float", float):
        return _parse(key, raw, float, "a number")
    return raw


def _parse(key: str, raw: str, kind: type[int] | type[float], what: str) -> object:
    try:
        return kind(raw)
    except ValueError:
        raise ConfigurationError(f"{key} must be {what}, got {raw!r}") from None


def _check_scheme(name: str, url: str, allowed: tuple[str, ...]) -> None:
    scheme = url.partition("://")[0] if "://" in url else ""
    if scheme not in allowed:
        raise ConfigurationError(
            f"{name} {redact_url(url)!r} is not supported: use one of "
            + ", ".join(f"{s}://..." for s in allowed)
        )


# Query parameters that carry a secret (asyncpg and libpq take `password` there too).
_SECRET_PARAMETERS = frozenset({"password", "passwd", "pwd", "sslpassword", "secret", "token"})


def redact_url(url: str) -> str:
    """The URL with its password, in the user part or the query, replaced by `***`: safe
    for logs and errors."""
    try:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return "<unparseable url>"
    secret_query = any(name.lower() in _SECRET_PARAMETERS for name, _ in query)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    secret_user = bool(at) and ":" in userinfo
    if not (secret_query or secret_user):
        return url  # (as given: urlunsplit would turn `memory://` into `memory:`)
    if secret_query:
        hidden = [(n, "***" if n.lower() in _SECRET_PARAMETERS else v) for n, v in query]
        parts = parts._replace(query=urlencode(hidden, safe="*"))
    if secret_user:
        parts = parts._replace(netloc=f"{userinfo.partition(':')[0]}:***@{hostport}")
    return urlunsplit(parts)


def url_host(url: str) -> str:
    """`host:port` of a URL, for error messages that must name the host."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    return f"{host}:{parts.port}" if parts.port else host
