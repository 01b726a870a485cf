"""Checks shared by the auction property tests for deferred delivery of liquidated books (claims).

Two laws: (1) token conservation is exact over STORED balances (what the core's storage holds for every account),
whatever claims are pending; (2) effective books (the views keepers attest) only redistribute stored balances: their
totals differ from the stored totals by rounding alone, and settling a claim moves into the holder's storage exactly
what its effective view showed.
"""
from __future__ import annotations

ZERO = "0x0000000000000000000000000000000000000000"


def _tokens(core):
    return (core.weth, core.wbtc)


def assert_tokens_conserved(core, everyone, series) -> None:
    """Token balances of the clearinghouse == stored cash + cash credited to bound or frozen books (+ settlement
    reserve) and
    stored collateral of everyone;
    stored positions net to zero; effective totals within the rounding of one WAD share per account of the stored
    ones (1 base unit plus balance / 1e18)."""
    c, n = core, len(everyone)
    stored = {str(a): [c.chx.storedBalances(a, s, c.weth) for s in series] for a in everyone}
    credited = sum(int(c.chx.lotOf(a)["creditedCash"]) for a in everyone)
    cash = sum(int(stored[str(a)][0][2]) for a in everyone) + credited + int(c.ch.settlementReserve())
    assert int(c.quote.balanceOf(c.ch)) == cash
    # cash credited to a book bound to a breach is held apart and not in its effective cash until the breach ends
    held_apart = sum(int(c.chx.lotOf(a)["creditedCash"]) for a in everyone if c.chx.lotOf(a)["inBreach"])
    eff_cash = sum(int(c.chx.cashOf(a)) for a in everyone) + held_apart + int(c.ch.settlementReserve())
    assert abs(eff_cash - cash) <= n, (eff_cash, cash)
    for token in _tokens(c):
        held = sum(int(c.chx.storedBalances(a, series[0], token)[1]) for a in everyone)
        assert int(token.balanceOf(c.ch)) == held
        eff = sum(int(c.chx.collateralOf(a, token)) for a in everyone)
        # each effective balance is a WAD share of a stored one, rounded once: off by at most 1 + balance / 1e18
        assert abs(eff - held) <= n * (2 + held // 10**18), (token, eff, held)
    for i, s in enumerate(series):
        assert sum(int(stored[str(a)][i][0]) for a in everyone) == 0
        eff = sum(int(c.chx.positionOf(a, s)) for a in everyone)
        gross = sum(abs(int(stored[str(a)][i][0])) for a in everyone)
        assert abs(eff) <= n * (2 + gross // 10**18), (s, eff)


def settle_claim_checked(core, holder, series) -> bool:
    """Settles `holder`'s claim if it has one; asserts its storage then holds exactly what its effective view showed
    before (positions, both collateral assets, cash) and that the claim is gone. Returns whether it settled."""
    c = core
    source, fraction, _share = c.chx.claimOf(holder)
    if int(fraction) == 0:
        return False
    before = ([int(c.chx.positionOf(holder, s)) for s in series],
              [int(c.chx.collateralOf(holder, t)) for t in _tokens(c)], int(c.chx.cashOf(holder)))
    tx = c.chx.settleClaim(holder, {"from": holder})
    ev = tx.events["ClaimSettled"]
    assert ev["holder"] == holder and ev["source"] == source and int(ev["claimWad"]) == int(fraction)
    after = ([int(c.chx.storedBalances(holder, s, c.weth)[0]) for s in series],
             [int(c.chx.storedBalances(holder, series[0], t)[1]) for t in _tokens(c)],
             int(c.chx.storedBalances(holder, series[0], c.weth)[2]))
    assert after == before, (before, after)
    assert int(c.chx.claimOf(holder)[1]) == 0
    return True


def claim_elsewhere(core, bidder, account) -> bool:
    """Whether `bidder` holds an unsettled claim on another account than `account` (its bid must be refused)."""
    source, fraction, _ = core.chx.claimOf(bidder)
    return int(fraction) != 0 and str(source) != str(account)
