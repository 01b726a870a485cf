"""The settlement prices an inputs document used, checked against the chain (rule ``settlement price`` of
``backstop verify``; docs/verify.md).

An expired series that accounts still hold is valued at intrinsic against its expiry's settlement price, and the
document records that price as the series' ``forward_wad`` (docs/keeper.md, "Expiry settlement"). The keepers take
it from the chain: the price posted by ``postSettlementPrices`` (event ``SettlementPricePosted``) when there is one
at the document's block, else the time-weighted average of the attested prices (``PricesPosted``) over the 30
minutes before expiry (:func:`keeper.quant.settlement.settlement_price`). This module recomputes that number from
the chain's events and names every series whose recorded price differs, and checks each posted settlement price
against the same average.

Pure: the caller reads the events (:func:`keeper.verify.liquidation.gather`) and passes them in.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from keeper.attest.inputs import forward_wad
from keeper.errors import SettlementUnavailable
from keeper.quant.settlement import settlement_price
from keeper.units import WAD

#: the rule's name in verify's report
RULE = "settlement price"


@dataclass(frozen=True)
class SettlementEvidence:
    """What the chain says about settlement up to the document's block.

    ``posted``: ``(underlying address lower-case, expiry) -> price [WAD]`` from ``SettlementPricePosted`` at or before
    the block; ``history``: ``underlying address lower-case -> [(timestamp, price [WAD])]`` from ``PricesPosted`` at
    or before the block (what :class:`keeper.chain.client.ChainState` keeps as ``price_history``)."""

    posted: Mapping[tuple[str, int], int]
    history: Mapping[str, Sequence[tuple[int, int]]]

    def expected(self, underlying: str, expiry: int) -> tuple[int | None, str]:
        """The settlement price keepers must use for ``(underlying, expiry)`` and where it comes from; ``None``
        (with the reason) when the chain has neither a posted price nor enough attested prices for the average."""
        key = (underlying.lower(), int(expiry))
        if key in self.posted:
            return int(self.posted[key]), "posted on chain (SettlementPricePosted)"
        try:
            twap = settlement_price(self.history.get(underlying.lower(), []), int(expiry))
        except SettlementUnavailable as exc:
            return None, f"no settlement price on chain and no average: {exc}"
        return twap, "30-minute average of the attested prices (PricesPosted)"


def settlement_findings(doc: Mapping, evidence: SettlementEvidence) -> list[dict]:
    """One check per expired series of ``doc`` (expiry at or before the block's timestamp): its recorded
    ``forward_wad`` must be the settlement price the chain gives (:meth:`SettlementEvidence.expected`), written as
    the keepers write it (:func:`keeper.attest.inputs.forward_wad` of the price in quote units). A document with no
    expired series gives no check."""
    now = int(doc["block"]["timestamp"])
    unders = doc["underlyings"]
    out: list[dict] = []
    for s in doc.get("series") or []:
        expiry = int(s["expiry"])
        if expiry > now:
            continue
        u = unders[int(s["underlying"])]
        asset = str(u["asset"])
        label = f"{RULE} (series {s['id']}, expiry {expiry})"
        if "forward_wad" not in s:
            out.append({"check": label, "ok": False,
                        "detail": f"expired series {s['id']} has no recorded settlement price (forward_wad)"})
            continue
        price, source = evidence.expected(asset, expiry)
        recorded = int(s["forward_wad"])
        if price is None:
            out.append({"check": label, "ok": False,
                        "detail": f"series {s['id']} is valued at a settlement price of {recorded / WAD:.6f} but "
                                  f"{source}"})
            continue
        want = forward_wad(price / WAD, int(u["spot_wad"]))
        ok = recorded == want
        out.append({"check": label, "ok": ok,
                    "detail": (f"series {s['id']} valued at {recorded / WAD:.6f}, the {source}" if ok else
                               f"series {s['id']} valued at {recorded / WAD:.6f} (forward_wad {recorded}); the "
                               f"{source} is {price / WAD:.6f} (forward_wad {want})")})
    return out


def posted_price_findings(evidence: SettlementEvidence) -> list[dict]:
    """Each posted settlement price against the 30-minute average of the prices attested before its expiry.
    Keepers sign the fresh spot instead only when the attested prices cover under half the window
    (docs/keeper.md); such a price is reported, not refused."""
    out: list[dict] = []
    for (underlying, expiry), price in sorted(evidence.posted.items()):
        label = f"{RULE} (posted: {underlying}, expiry {expiry})"
        try:
            twap = settlement_price(evidence.history.get(underlying, []), int(expiry))
        except SettlementUnavailable as exc:
            out.append({"check": label, "ok": True,
                        "detail": f"posted {price / WAD:.6f}; no average to compare ({exc}): keepers then sign the "
                                  f"fresh spot"})
            continue
        out.append({"check": label, "ok": int(price) == twap,
                    "detail": f"posted {price / WAD:.6f}, the 30-minute average of the attested prices is "
                              f"{twap / WAD:.6f}"})
    return out
