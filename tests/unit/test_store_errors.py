"""Driver errors reach users as taskq's, naming the host and never the password."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from taskq.exceptions import StoreConnectionError, StoreError
from taskq.store.engine import translated_errors

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
