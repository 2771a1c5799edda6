"""Settings: keyword arguments > TASKQ_* environment > defaults; secrets never shown."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

import taskq
from taskq import config
from taskq.config import Settings, parse_duration, parse_retention
from taskq.exceptions import ConfigurationError

AMQP = "amqp://taskq:s3cr3t-amqp@rabbit.internal:5672/prod"
POSTGRES = "postgresql+asyncpg://taskq:s3cr3t-pg@db.internal:5432/taskq"


@pytest.fixture(autouse=True)
def no_taskq_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """App() reads os.environ: start every test without the caller's TASKQ_* variables."""
    for name in list(os.environ):
        if name.startswith("TASKQ_"):
            monkeypatch.delenv(name)


def test_defaults_without_arguments_or_environment() -> None:
    settings = Settings.load(env={})
    assert settings == Settings()
    assert settings.broker_url == "memory://"
    assert settings.store_url == "sqlite+aiosqlite:///taskq.sqlite3"
    assert settings.max_priority == 10


def test_environment_overrides_defaults() -> None:
    # Given TASKQ_* variables for every kind of setting
    env = {
        "TASKQ_BROKER_URL": AMQP,
        "TASKQ_STORE_URL": POSTGRES,
        "TASKQ_MAX_PAYLOAD_BYTES": "2048",
        "TASKQ_MAX_PRIORITY": "5",
        "TASKQ_PUBLISH_TIMEOUT": "2.5",
        "TASKQ_FLUSH_INTERVAL": "0",
    }
    # When settings load with no arguments
    settings = Settings.load(env=env)
    # Then each comes from the environment, parsed to its type
    assert settings == Settings(
        broker_url=AMQP,
        store_url=POSTGRES,
        max_payload_bytes=2048,
        max_priority=5,
        publish_timeout=2.5,
        flush_interval=0.0,
    )
    assert isinstance(settings.max_priority, int)
    assert isinstance(settings.publish_timeout, float)


def test_keyword_arguments_override_environment() -> None:
    env = {"TASKQ_BROKER_URL": AMQP, "TASKQ_MAX_PRIORITY": "5", "TASKQ_PUBLISH_TIMEOUT": "2.5"}
    settings = Settings.load(env=env, broker_url="memory://", max_priority=7)
    assert settings.broker_url == "memory://"
    assert settings.max_priority == 7
    # A setting not passed still comes from the environment.
    assert settings.publish_timeout == 2.5


def test_none_keyword_argument_means_unset() -> None:
    settings = Settings.load(env={"TASKQ_MAX_PRIORITY": "5"}, max_priority=None)
    assert settings.max_priority == 5


def test_empty_environment_variable_means_unset() -> None:
    settings = Settings.load(env={"TASKQ_MAX_PRIORITY": "", "TASKQ_BROKER_URL": ""})
    assert settings.max_priority == 10
    assert settings.broker_url == "memory://"


def test_variables_without_the_prefix_are_ignored() -> None:
    settings = Settings.load(env={"BROKER_URL": AMQP, "taskq_broker_url": AMQP})
    assert settings.broker_url == "memory://"


def test_store_url_from_a_file(tmp_path: Path) -> None:
    # Given a Docker-style secret file holding the URL (with a trailing newline)
    secret = tmp_path / "store_url"
    secret.write_text(POSTGRES + "\n")
    # When TASKQ_STORE_URL_FILE names it
    settings = Settings.load(env={"TASKQ_STORE_URL_FILE": str(secret)})
    # Then the URL is the file's content, stripped
    assert settings.store_url == POSTGRES


def test_direct_variable_wins_over_its_file_variant(tmp_path: Path) -> None:
    secret = tmp_path / "store_url"
    secret.write_text(POSTGRES)
    direct = "sqlite+aiosqlite:///direct.sqlite3"
    env = {"TASKQ_STORE_URL": direct, "TASKQ_STORE_URL_FILE": str(secret)}
    assert Settings.load(env=env).store_url == direct


def test_keyword_argument_wins_over_the_file_variant(tmp_path: Path) -> None:
    secret = tmp_path / "store_url"
    secret.write_text(POSTGRES)
    given = "sqlite+aiosqlite:///given.sqlite3"
    settings = Settings.load(env={"TASKQ_STORE_URL_FILE": str(secret)}, store_url=given)
    assert settings.store_url == given


def test_file_variant_of_an_int_is_parsed(tmp_path: Path) -> None:
    secret = tmp_path / "priority"
    secret.write_text("3\n")
    assert Settings.load(env={"TASKQ_MAX_PRIORITY_FILE": str(secret)}).max_priority == 3


def test_unreadable_file_variant_names_the_variable(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    with pytest.raises(taskq.ConfigurationError) as caught:
        Settings.load(env={"TASKQ_STORE_URL_FILE": str(missing)})
    assert "TASKQ_STORE_URL_FILE" in str(caught.value)
    assert str(missing) in str(caught.value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TASKQ_MAX_PRIORITY", "ten"),
        ("TASKQ_MAX_PRIORITY", "1.5"),
        ("TASKQ_MAX_PAYLOAD_BYTES", "1MB"),
        ("TASKQ_PUBLISH_TIMEOUT", "soon"),
        ("TASKQ_FLUSH_INTERVAL", "5ms"),
    ],
)
def test_malformed_number_names_the_variable(variable: str, value: str) -> None:
    with pytest.raises(taskq.ConfigurationError) as caught:
        Settings.load(env={variable: value})
    message = str(caught.value)
    assert variable in message
    assert repr(value) in message


@pytest.mark.parametrize(
    ("setting", "url"),
    [
        ("broker_url", "redis://localhost:6379/0"),
        ("broker_url", "localhost:5672"),
        ("broker_url", ""),
        ("store_url", "postgresql://user@localhost/db"),  # no async driver
        ("store_url", "sqlite:///taskq.sqlite3"),
        ("store_url", "mysql+aiomysql://user@localhost/db"),
    ],
)
def test_unsupported_url_scheme_is_a_configuration_error(setting: str, url: str) -> None:
    with pytest.raises(taskq.ConfigurationError) as caught:
        Settings.load(env={}, **{setting: url})
    assert setting in str(caught.value)
    assert "://..." in str(caught.value)  # the message lists the valid forms


def test_unsupported_url_from_the_environment_is_a_configuration_error() -> None:
    with pytest.raises(taskq.ConfigurationError):
        Settings.load(env={"TASKQ_BROKER_URL": "kafka://broker:9092"})


def test_unsupported_url_error_hides_the_password() -> None:
    with pytest.raises(taskq.ConfigurationError) as caught:
        Settings.load(env={}, broker_url="redis://user:hunter2@cache:6379/0")
    assert "hunter2" not in str(caught.value)
    assert "cache:6379" in str(caught.value)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"max_priority": 0}, "max_priority"),
        ({"max_priority": 256}, "max_priority"),
        ({"max_payload_bytes": 1023}, "max_payload_bytes"),
        ({"publish_timeout": 0.0}, "publish_timeout"),
        ({"flush_interval": -1.0}, "flush_interval"),
    ],
)
def test_out_of_range_values_are_configuration_errors(
    overrides: dict[str, object], needle: str
) -> None:
    with pytest.raises(taskq.ConfigurationError) as caught:
        Settings.load(env={}, **overrides)
    assert needle in str(caught.value)


def test_unknown_setting_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="max_retries"):
        Settings.load(env={}, max_retries=3)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (AMQP, "amqp://taskq:***@rabbit.internal:5672/prod"),
        (POSTGRES, "postgresql+asyncpg://taskq:***@db.internal:5432/taskq"),
        ("amqps://u:p%40ss%3Aw0rd@host/vh?heartbeat=30", "amqps://u:***@host/vh?heartbeat=30"),
        ("amqp://:only-password@host/", "amqp://:***@host/"),
        ("amqp://u:pw@[::1]:5672/", "amqp://u:***@[::1]:5672/"),
        ("amqp://guest@host/", "amqp://guest@host/"),
        ("memory://", "memory://"),
        ("sqlite+aiosqlite:///taskq.sqlite3", "sqlite+aiosqlite:///taskq.sqlite3"),
    ],
    ids=["amqp", "postgres", "escaped", "no user", "ipv6", "no password", "memory", "sqlite"],
)
def test_redact_url_hides_only_the_password(url: str, shown: str) -> None:
    assert config.redact_url(url) == shown


def test_repr_of_settings_never_shows_a_password() -> None:
    settings = Settings.load(env={}, broker_url=AMQP, store_url=POSTGRES)
    text = repr(settings)
    assert "s3cr3t" not in text
    assert "taskq:***@rabbit.internal:5672" in text
    assert "taskq:***@db.internal:5432" in text
    assert "max_priority=10" in text


def test_repr_of_app_never_shows_a_password() -> None:
    # Given an app built from URLs with passwords (it does not connect until opened)
    app = taskq.App(AMQP, POSTGRES)
    # When it is shown
    text = repr(app)
    # Then the hosts are visible and the passwords are not, nor in its settings' repr
    assert "s3cr3t" not in text
    assert "rabbit.internal" in text and "db.internal" in text
    assert "s3cr3t" not in repr(app.settings)


def test_app_reads_urls_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKQ_BROKER_URL", AMQP)
    monkeypatch.setenv("TASKQ_STORE_URL", POSTGRES)
    app = taskq.App()
    assert app.settings.broker_url == AMQP
    assert app.settings.store_url == POSTGRES
    assert "s3cr3t" not in repr(app)


def test_a_password_in_the_query_is_redacted_too() -> None:
    # (asyncpg and libpq take `?password=`: it must not show in repr or errors either)
    url = "postgresql+asyncpg://app@db:5432/taskq?password=s3cret-q&sslmode=require"
    shown = config.redact_url(url)
    assert "s3cret-q" not in shown
    assert "password=***" in shown and "sslmode=require" in shown
    app = taskq.App("memory://", url)
    assert "s3cret-q" not in repr(app) and "s3cret-q" not in repr(app.settings)


# -- durations and retention -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "period"),
    [("30s", timedelta(seconds=30)), ("1.5h", timedelta(minutes=90)), (" 7d", timedelta(7))],
)
def test_durations_read_as_number_and_unit(text: str, period: timedelta) -> None:
    assert parse_duration(text, "--x") == period


@pytest.mark.parametrize("text", ["7", "7w", "-1d", "1 d", "", "99999999999d"])
def test_a_bad_duration_names_the_option_and_the_value(text: str) -> None:
    with pytest.raises(ConfigurationError, match=f"--x {text!r}"):
        parse_duration(text, "--x")


def test_retention_is_30_days_by_default_off_or_any_period_of_a_minute_or_more() -> None:
    assert Settings.load(env={}).retention_period == timedelta(days=30)
    assert Settings.load(env={"TASKQ_RETENTION": "off"}).retention_period is None
    assert Settings.load(env={"TASKQ_RETENTION": "12h"}).retention_period == timedelta(hours=12)
    for bad in ("30", "30s"):
        with pytest.raises(ConfigurationError, match="TASKQ_RETENTION"):
            Settings.load(env={"TASKQ_RETENTION": bad})
    assert parse_retention(timedelta(days=2), "retention") == timedelta(days=2)


def test_queue_type_is_classic_unless_set_and_only_classic_or_quorum() -> None:
    assert Settings.load(env={}).queue_type == "classic"
    assert Settings.load(env={"TASKQ_QUEUE_TYPE": "quorum"}).queue_type == "quorum"
    with pytest.raises(taskq.ConfigurationError) as caught:
        Settings.load(env={"TASKQ_QUEUE_TYPE": "stream"})
    assert "TASKQ_QUEUE_TYPE" in str(caught.value) and "classic, quorum" in str(caught.value)


def test_priority_lanes_are_rising_bands_used_by_quorum_queues_only() -> None:
    # Given the default bands: 0 | 1-4 | 5 and up, for quorum queues
    assert Settings.load(env={"TASKQ_QUEUE_TYPE": "quorum"}).lane_floors == (0, 1, 5)
    assert Settings.load(env={}).lane_floors == (0,)  # classic queues keep priorities
    quorum = {"TASKQ_QUEUE_TYPE": "quorum"}
    assert Settings.load(env={**quorum, "TASKQ_PRIORITY_LANES": "3"}).lane_floors == (0, 3)
    # The default follows max_priority: 1 and half of it
    assert Settings.load(env=quorum, max_priority=3).lane_floors == (0, 1, 2)
    assert Settings.load(env=quorum, max_priority=1).lane_floors == (0, 1)
    # Bands that do not rise, leave 1..max_priority or are no numbers are refused, by name
    for bad in ("5,1", "0,5", "1,11", "1,x", "1,1"):
        with pytest.raises(ConfigurationError, match="TASKQ_PRIORITY_LANES"):
            Settings.load(env={**quorum, "TASKQ_PRIORITY_LANES": bad})
