"""The store's tests run on both dialects: the embedded SQLite and real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from taskq.store import Store


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest) -> str:
    """Sync, because the database fixtures run their own event loop."""
    url: str = request.getfixturevalue(
        "sqlite_url" if request.param == "sqlite" else "postgres_url"
    )
    return url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    """An open store on each dialect, closed afterwards."""
    opened = Store(store_url)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()
