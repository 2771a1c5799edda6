"""A worker process's id (`host:pid:random`) and how a supervisor knows its children's: it
gives each child the random part (TASKQ_PROCESS_TOKEN), so a child that dies is marked dead
by its id. Host and pid are not enough: processes of two hosts (containers sharing a host
name, each numbering pids from 1) can have both alike."""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from taskq.worker import heartbeat
from taskq.worker.supervisor import Supervisor


def test_a_process_id_takes_the_token_it_was_given_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(heartbeat.TOKEN_ENV, "feedbeef")
    first = heartbeat.new_process_id()
    second = heartbeat.new_process_id()
    host, pid, token = first.split(":")
    assert (host, token) == (socket.gethostname()[:40], "feedbeef")
    assert first == heartbeat.process_id(int(pid), "feedbeef")
    assert second.rsplit(":", 1)[0] == first.rsplit(":", 1)[0] and second != first


class MarkingStore:
    """What the supervisor asks of a store when a child dies."""

    def __init__(self, supervisor: list[Supervisor], marked: list[str]) -> None:
        self._supervisor, self._marked = supervisor, marked

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def mark_process_dead(self, worker_id: str) -> list[str]:
        self._marked.append(worker_id)
        self._supervisor[0]._stopping = True  # (one child is enough)
        return [worker_id]


async def test_a_supervisor_marks_its_dead_child_by_the_childs_own_id(tmp_path: Path) -> None:
    # Given a supervisor whose child writes down the id it would register under, then exits
    said = tmp_path / "id"
    child = [
        sys.executable,
        "-c",
        "import sys; from taskq.worker import heartbeat; "
        "open(sys.argv[1], 'w').write(heartbeat.new_process_id())",
        str(said),
    ]
    marked: list[str] = []
    holder: list[Supervisor] = []
    store: Any = MarkingStore(holder, marked)
    supervisor = Supervisor(child, 1, lambda: store)
    holder.append(supervisor)
    # When the child dies
    assert await supervisor._keep(0)
    # Then the supervisor marked exactly that id dead
    assert marked == [said.read_text()]
