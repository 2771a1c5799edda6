"""Driver errors reach users as taskq's, naming the host and never the password."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from taskq.exceptions import ConfigurationError, StoreConnectionError, StoreError
from taskq.store.engine import parse_url, shown, translated_errors

URL = make_url("postgresql+asyncpg://app:s3cret@db.internal:5432/tasks")


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.InternalClientError("unexpected state"),
        asyncpg.InterfaceError("connection is closed"),
        ConnectionResetError("reset by peer"),
    ],
)
async def test_a_broken_connection_is_a_store_connection_error(error: Exception) -> None:
    with pytest.raises(StoreConnectionError) as raised:
        async with translated_errors(URL):
            raise error
    assert "db.internal" in str(raised.value) and "s3cret" not in str(raised.value)


async def test_a_statement_the_database_refuses_is_a_store_error() -> None:
    with pytest.raises(StoreError) as raised:
        async with translated_errors(URL):
            raise asyncpg.UniqueViolationError("duplicate key")
    assert not isinstance(raised.value, StoreConnectionError)
    assert "s3cret" not in str(raised.value)


def test_a_primary_and_its_standbys_in_libpqs_form_become_sqlalchemys_host_list() -> None:
    # Given a URL naming a primary and a standby, the way libpq and asyncpg take them
    url = parse_url(
        "postgresql+asyncpg://app:s3cret@db1,db2:5433/tasks?target_session_attrs=read-write"
    )
    # Then each host is in the query with its port (5432 where none is given)
    assert url.query["host"] == ("db1:5432", "db2:5433")
    assert url.query["target_session_attrs"] == "read-write"
    assert (url.database, url.username) == ("tasks", "app")
    # And messages show the hosts as written, never the password
    assert shown(url) == (
        "postgresql+asyncpg://app:***@db1:5432,db2:5433/tasks?target_session_attrs=read-write"
    )


def test_a_host_list_that_is_no_list_of_hosts_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="store_url"):
        parse_url("postgresql+asyncpg://app@db1,db2:port/tasks")


async def test_no_host_taking_writes_is_explained_as_a_failover() -> None:
    url = parse_url("postgresql+asyncpg://app:s3cret@db1,db2/tasks?target_session_attrs=read-write")
    with pytest.raises(StoreConnectionError) as raised:
        async with translated_errors(url):
            raise ConnectionRefusedError("connect call failed")
    message = str(raised.value)
    assert "None of its 2 hosts" in message and "standby is promoted" in message
    assert "db1:5432,db2:5432" in message and "s3cret" not in message
