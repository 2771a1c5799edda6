"""Task states: their stored values, and which are final."""

from __future__ import annotations

import pytest

from taskq import status
from taskq.status import TaskStatus

FINAL = [TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.EXPIRED]
NOT_FINAL = [TaskStatus.SCHEDULED, TaskStatus.QUEUED, TaskStatus.RUNNING]


@pytest.mark.parametrize("state", FINAL)
def test_final_states(state: TaskStatus) -> None:
    assert state.is_final
    assert state in status.FINAL


@pytest.mark.parametrize("state", NOT_FINAL)
def test_states_that_are_not_final(state: TaskStatus) -> None:
    assert not state.is_final
    assert state not in status.FINAL


def test_every_state_is_final_or_not() -> None:
    assert set(FINAL) | set(NOT_FINAL) == set(TaskStatus)
    assert status.FINAL == frozenset(FINAL)


def test_values_are_the_stored_strings() -> None:
    # These strings are in the database's CHECK constraint; renaming one is a migration.
    assert [member.value for member in TaskStatus] == [
        "scheduled",
        "queued",
        "running",
        "succeeded",
        "failed",
        "cancelled",
        "expired",
    ]
    assert TaskStatus("succeeded") is TaskStatus.SUCCEEDED
    assert isinstance(TaskStatus.FAILED, str)
    assert f"{TaskStatus.FAILED}" == "failed"
