"""The keeper's loop: :func:`run_scheduler` runs the bot's ``tick`` on an apscheduler interval, one at a time."""
from __future__ import annotations

import threading
from datetime import datetime, timezone
from typing import Optional

from apscheduler.schedulers.background import BackgroundScheduler


def sync_keeper_set(bot) -> None:
    """Register the on-chain keeper set with the signature book (after the first sync)."""
    if bot.chain.state.keepers:
        bot.book.set_keepers(bot.chain.state.keepers)


def run_scheduler(bot, interval_s: float, stop: Optional[threading.Event] = None) -> None:
    """Run ``bot.tick`` every ``interval_s`` with apscheduler: one cycle at a time (``max_instances=1``), missed
    runs coalesced into one; returns when ``stop`` is set (or on KeyboardInterrupt)."""

    def job() -> None:
        bot.tick()
        sync_keeper_set(bot)


    sched = BackgroundScheduler(job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None},
                                timezone=timezone.utc)
    sched.add_job(job, "interval", seconds=interval_s, id="keeper-tick", next_run_time=datetime.now(timezone.utc))
    sched.start()
    stop = stop or threading.Event()
    try:
        while not stop.wait(0.2):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        sched.shutdown(wait=True)
