"""What a scenario run is doing, for the user: the status every phase updates, the notes it logs (printed with
``--no-live``) and the live table (rich) built from the status and the chain."""
from __future__ import annotations

import logging
from typing import Any

from rich.table import Table

from keeper.scenario.world import World

log = logging.getLogger("backstop.scenario")


class Progress:
    """The run's status (``phase``, ``step``, ``spot``, ``vol``, ``breached``, ``manipulation``, ``note``) and its
    notes; a console (set when the run starts) prints the notes when the live table is off."""

    def __init__(self, live: bool, console=None):
        self.live = live
        self.console = console
        self.status: dict[str, Any] = {"phase": "start"}

    def say(self, msg: str) -> None:
        self.status["note"] = msg
        log.info(msg)
        if self.console is not None and not self.live:
            self.console.print(f"[dim]{msg}[/dim]")

    def table(self, title: str, n_steps: int, world: World | None, events: list[dict], elapsed: float) -> Table:
        """The live table: phase, block, step, market, breaches, auctions (from chain events: keepers and
        liquidators both start auctions), bids and lost races, claims, the manipulation result, elapsed time."""
        st = self.status
        t = Table(title=title, show_header=False)
        t.add_column("k")
        t.add_column("v")
        try:
            blk = int(world.w3.eth.block_number)
        except Exception:  # noqa: BLE001 - before deployment, or the chain is gone
            blk = -1
        t.add_row("phase", str(st.get("phase")))
        t.add_row("block", str(blk))
        t.add_row("step", f"{st.get('step', '-')}/{n_steps - 1}")
        t.add_row("spot / ATM vol", f"{st.get('spot', float('nan')):,.2f} / {st.get('vol', float('nan')):.0%}")
        t.add_row("accounts below MM", str(st.get("breached", 0)))
        try:
            started, ended, filled = (len(world.logs(world.auction, n)) for n in ("AuctionStarted", "AuctionEnded",
                                                                                  "Bid"))
        except Exception:  # noqa: BLE001 - before deployment
            started = ended = filled = 0
        t.add_row("auctions started / ended", f"{started} / {ended}")
        t.add_row("bids filled / lost races", f"{filled} / {sum(1 for e in events if e.get('event') == 'lost_race')}")
        t.add_row("claims settled by liquidators", str(sum(1 for e in events if e.get("event") == "claim_settled")))
        if "manipulation" in st:
            t.add_row("fat finger: naive/hybrid liquidations", st["manipulation"])
        t.add_row("note", str(st.get("note", ""))[:70])
        t.add_row("elapsed", f"{elapsed:.0f}s")
        return t
