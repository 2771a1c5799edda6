"""Two worker hosts (network namespaces) on a three-node RabbitMQ cluster with quorum queues
and a private PostgreSQL, under a steady load from the test process: the link of the host
whose worker leads goes down for 20 s, then up. The ledger must find nothing lost or stuck,
and a task run twice only if its worker was cut off while running it, counted in its
attempts; leadership must move to the other host while the link is down. The recovery
times are printed (docs/deploying.md "Many hosts" quotes them)."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

from tests.cluster.site import HEARTBEAT, Site, holds
from tests.e2e.processes import WorkerProcess, cli_env, json_values, run_cli
from tests.support import eventually

PARTITION = 20.0  # seconds the link stays down
RECOVERY = 30.0  # deadline for the cut-off host to work again after the link is back
DRAIN = 60.0


async def test_a_worker_host_cut_off_for_20_s_loses_nothing(hosts_site: Site) -> None:
    site = hosts_site
    # Given a worker on each of two hosts, one of them leading, and a steady load
    started = dict(zip((h.hostname for h in site.hosts), await site.start_workers(), strict=True))
    done = asyncio.Event()
    producing = asyncio.create_task(site.load_until(done))
    try:
        ids = await eventually(site.worker_ids, lambda found: len(found) == 2, what="2 rows")
        assert set(ids) == set(started), ids
        await shown_by_taskq_workers(site, ids, started)
        leading = await eventually(site.leader_host, what="a leader", within=30)
        assert leading is not None
        cut_host = next(host for host in site.hosts if host.hostname == leading)
        cut, other = started[leading], next(w for h, w in started.items() if h != leading)
        await eventually(lambda: site.runs_by(cut.pid), lambda n: n >= 20, what="runs on it")
        # When its link goes down for 20 s while the load goes on
        cut_host.link_down()
        cut_at, cut_clock = await site.now(), time.monotonic()
        await asyncio.sleep(0.5)  # (claims already on their way when the link went down)
        mid_run = {
            str(row["id"])
            for row in await site.ledger.rows(
                "SELECT id FROM taskq_tasks WHERE state = 'running' AND worker_id = $1",
                ids[leading],
            )
        }
        # Then the other host's worker leads before the link comes back
        await eventually(
            site.leader_host,
            lambda host: host not in (None, leading),
            what="the other host leading",
            within=PARTITION - 1,
            interval=0.2,
        )
        moved = time.monotonic() - cut_clock
        await asyncio.sleep(PARTITION - (time.monotonic() - cut_clock))
        cut_host.link_up()
        up_at = await site.now()
        # And the cut-off worker runs new tasks again by itself, its heartbeat live again
        await eventually(
            lambda: first_new_run(site, cut.pid, up_at),
            lambda at: at is not None,
            what="a task submitted after the link came back run on the cut-off host",
            within=RECOVERY,
        )
        (beat,) = await eventually(
            lambda: site.ledger.rows(
                "SELECT heartbeat_at, state FROM taskq_workers WHERE id = $1", ids[leading]
            ),
            lambda rows: rows[0]["heartbeat_at"] > up_at and rows[0]["state"] == "running",
            what="the cut-off worker's heartbeat after the link came back",
            within=RECOVERY,
        )
    finally:
        done.set()
        await producing
    await site.ledger.drain(DRAIN)
    verdict = await site.ledger.verdict()
    # Then nothing is lost or stuck, and a task ran twice only if it was running on the
    # cut-off host when its link went down, each run counted in its attempts
    holds(verdict)
    twice = await site.ran_twice()
    assert twice <= mid_run, (twice - mid_run, mid_run)
    # And both workers still run
    for worker in (cut, other):
        assert worker.process.poll() is None, worker.output()[-3000:]
    kept = sum(w.output().count("the run is kept by a lease") for w in (cut, other))
    figures = await recovery(site, cut.pid, other.pid, cut_at, up_at)
    print(
        f"\npartition of the leader's host for {PARTITION:.0f} s (AMQP heartbeat "
        f"{HEARTBEAT} s): {verdict.acknowledged} acknowledged, lost {verdict.lost}, "
        f"{verdict.duplicates} ran twice ({verdict.explained} counted), {len(mid_run)} running "
        f"on it at the cut, {kept} redelivered copies acked while it kept running them;\n"
        f"leadership moved to the other host {moved:.1f} s after the cut;\n{figures};\n"
        f"cut-off worker's heartbeat row live again {secs(beat['heartbeat_at'] - up_at)} "
        "after the link came back"
    )


async def shown_by_taskq_workers(
    site: Site, ids: dict[str, str], started: dict[str, WorkerProcess]
) -> None:
    """`taskq workers` (a table, and --json) lists each worker under its own host."""
    env = cli_env(TASKQ_STORE_URL=site.store_url)
    code, table, err = await run_cli("workers", env=env)
    assert code == 0, err
    for hostname, worker_id in ids.items():
        (line,) = [line for line in table.splitlines() if worker_id in line]
        assert hostname in line.replace(worker_id, ""), table  # (its HOST column)
    code, out, err = await run_cli("workers", "--json", env=env)
    assert code == 0, err
    listed = {row["id"]: row for row in json_values(out)}
    for hostname, worker_id in ids.items():
        row = listed[worker_id]
        assert (row["host"], row["pid"]) == (hostname, started[hostname].pid), row


async def first_new_run(site: Site, pid: int, since: datetime) -> datetime | None:
    """When `pid` first recorded a run of a task submitted after `since`."""
    (row,) = await site.ledger.rows(
        "SELECT min(e.at) AS at FROM chaos_effects e JOIN taskq_tasks t ON t.id = e.task_id "
        "WHERE e.pid = $1 AND t.created_at > $2",
        pid,
        since,
    )
    return row["at"]  # type: ignore[no-any-return]


def secs(delta: timedelta | None) -> str:
    return "never" if delta is None else f"{delta.total_seconds():.1f} s"


async def recovery(site: Site, cut: int, other: int, cut_at: datetime, up_at: datetime) -> str:
    """What the store shows of the partition: runs on each host around it, and how long
    tasks waited."""
    (row,) = await site.ledger.rows(
        """SELECT
            (SELECT min(at) FROM chaos_effects WHERE pid = $2 AND at > $3) - $3 AS other_first,
            (SELECT count(*) FROM chaos_effects WHERE pid = $2 AND at > $3 AND at < $4)
                AS other_during,
            (SELECT count(*) FROM chaos_effects WHERE pid = $1 AND at > $3 AND at < $4)
                AS cut_during,
            (SELECT min(at) FROM chaos_effects WHERE pid = $1 AND at > $4) - $4 AS cut_first,
            (SELECT max(finished_at - created_at) FROM taskq_tasks) AS slowest,
            (SELECT count(*) FROM taskq_tasks WHERE finished_at - created_at > interval '2 s')
                AS waited
        """,
        cut,
        other,
        cut_at,
        up_at,
    )
    new = await first_new_run(site, cut, up_at)
    return (
        f"during the cut the other host ran {row['other_during']} tasks (the first "
        f"{secs(row['other_first'])} after it), the cut-off one "
        f"recorded {row['cut_during']}; after the link came back the cut-off host recorded a "
        f"run after {secs(row['cut_first'])} and ran a newly submitted task after "
        f"{secs(None if new is None else new - up_at)}; the slowest task took "
        f"{secs(row['slowest'])} from submit to outcome, {row['waited']} took over 2 s"
    )
