"""Scheduling: leadership, the leader's loops, and periodic (cron) schedules."""

from __future__ import annotations

from taskq.client.periodic import Periodic, tick_key
from taskq.scheduler.leader import campaign
from taskq.scheduler.loops import LeaderWork

__all__ = ["LeaderWork", "Periodic", "campaign", "tick_key"]
