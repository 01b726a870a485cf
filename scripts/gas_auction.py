"""Gas of the liquidation auction on the real core: `brownie run scripts/gas_auction.py` (Anvil by default), with
the gas spent in each core hook; `make gas` (scripts/gas_report.py) prints the same rows in the project's gas table.

Scenario: the account being liquidated holds 5 option positions, 2 collateral assets (WETH, WBTC) and quote cash;
keepers (2 of 3) sign real EIP-712 margin batches. Prints a Markdown table (operation, gas, notes) in the format of
the other gas figures; docs/auctions.md records the output. A bid records a claim on the book (the core's
`recordClaim`); `settleClaim` delivers it later. "Warm" = a liquidator that has bid before (its claim slot is
non-zero) and holds the book's series and assets (so the delivery writes non-zero -> non-zero).
"""
from __future__ import annotations

import sys
from pathlib import Path

from brownie import (AuctionTestToken, Clearinghouse, ClearinghouseAdmin, LiquidationAuction, accounts, chain,
                     network, web3)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the suites' shared deploy helper
from tests.auction.conftest import USDC, deploy_core  # noqa: E402

WAD = 10**18
FAR, ANY = 2**63, 2**255 - 1


HOOK = {web3.keccak(text=f).hex().removeprefix("0x")[:8]: f.split("(")[0] for f in (
    "recordClaim(address,address,uint256,int256)", "primeLot(address)", "transferCash(address,address,uint256)",
    "clearBreach(address)", "deposit(address,uint256)")}


def _core_gas(tx) -> str:
    """Gas spent inside the core's hook calls (Anvil callTracer), e.g. 'recordClaim 30,120'."""
    try:
        trace = web3.provider.make_request("debug_traceTransaction", [tx.txid, {"tracer": "callTracer"}])["result"]
    except Exception:  # noqa: BLE001 - tracer not offered by this node (Ganache): no breakdown
        return "n/a"
    parts: dict[str, int] = {}
    for call in trace.get("calls") or []:
        name = HOOK.get(call.get("input", "0x")[2:10])
        if name:
            parts[name] = parts.get(name, 0) + int(call["gasUsed"], 16)
    if not parts:
        return "0"
    return ", ".join(f"{k} {v:,}" for k, v in parts.items()) + f" (module own: {tx.gas_used - sum(parts.values()):,})"


def auction_rows() -> list:
    """Deploys a fresh core + auction and returns ``(operation, tx, note)`` rows; `scripts/gas_report.py` prints them
    in the project's one gas table, ``main`` with the per-hook breakdown."""
    core = deploy_core(accounts, AuctionTestToken, Clearinghouse, ClearinghouseAdmin, LiquidationAuction)
    rows = []
    starter, fresh_bidder, warm_bidder = accounts[3], accounts[2], accounts[4]
    E, MM, IM = 60_000 * USDC, 100_000 * USDC, 150_000 * USDC

    # the warm bidder already holds the same 5 series and both collateral assets (from an earlier auction)
    v0 = accounts[6]
    core.build_book(v0)
    core.fund(warm_bidder, usdc=2_000_000 * USDC, weth=10**18, wbtc=10**6)
    core.breach(v0, -1 * USDC, MM, IM)
    core.auction.start(v0, {"from": starter})
    core.auction.bid(v0, WAD, ANY, FAR, 0, {"from": warm_bidder})
    core.auction.finish(v0, {"from": starter})
    core.chx.settleClaim(warm_bidder, {"from": warm_bidder})

    v = accounts[1]
    core.build_book(v)
    core.fund(fresh_bidder, usdc=2_000_000 * USDC)
    core.breach(v, E, MM, IM)
    tx = core.auction.start(v, {"from": starter})
    rows.append(("auction start", tx, "breach record of 5 positions + 2 collateral"))
    allowed = int(core.auction.quote(v)["allowedWad"])
    tx = core.auction.bid(v, allowed // 5, ANY, FAR, 0, {"from": fresh_bidder})
    rows.append(("bid, partial: a new liquidator's first claim, slot not primed, no margin record", tx,
                 "claim slot zero -> non-zero (+17,100, once per liquidator; `primeClaimSlot` moves it out of the "
                 "race); option-free bidder: margin from `seriesOf` + `freshCollateralValue`"))

    # a new liquidator as the bot runs it: claim slot primed at start, its own margin record kept fresh
    new_bidder = accounts.add()
    accounts[0].transfer(new_bidder, 10**18)
    core.fund(new_bidder, usdc=2_000_000 * USDC)
    tx = core.chx.primeClaimSlot(new_bidder, {"from": new_bidder})
    rows.append(("primeClaimSlot (once per liquidator, at its start; `liquidator run` does it)", tx,
                 "writes the holder's claim slot so that no bid writes a zero slot"))
    core.attest([(new_bidder, 2_000_000 * USDC, 10_000 * USDC, 15_000 * USDC)])
    tx = core.auction.bid(v, allowed // 5, ANY, FAR, 0, {"from": new_bidder})
    rows.append(("**bid, partial: a new liquidator's first claim (slot primed, fresh margin record)**", tx,
                 "what `liquidator run` pays for its first bid"))
    core.attest([(warm_bidder, 3_000_000 * USDC, 10_000 * USDC, 15_000 * USDC)])
    tx = core.auction.bid(v, allowed // 5, ANY, FAR, 0, {"from": warm_bidder})
    rows.append(("**bid, partial (warm)**", tx,
                 "repeat liquidator (claim slot non-zero from an earlier, settled claim); margin from its fresh record"))
    core.attest([(warm_bidder, 3_000_000 * USDC, 10_000 * USDC, 15_000 * USDC)])
    tx = core.auction.bid(v, WAD, ANY, FAR, 0, {"from": warm_bidder})
    rows.append(("**bid, full: the rest of the allowed fraction, completes the sale (warm)**", tx,
                 "marks the auction done (`SaleCompleted`); payouts are `finish`'s"))
    tx = core.auction.finish(v, {"from": starter})
    rows.append(("finish (anyone; here the starter, its first reward: new clearinghouse account slots)", tx,
                 "escrow to the account (held apart while its book is frozen), reward to the starter, penalty to the "
                 "fund, clearBreach"))
    tx = core.chx.settleClaim(warm_bidder, {"from": warm_bidder})
    rows.append(("claim delivery `settleClaim` (anyone, after the auction; holder already holds the series)", tx,
                 "moves the bidder's claimed share of 5 positions + 2 assets + cash; not time-critical"))
    core.chx.settleClaim(new_bidder, {"from": new_bidder})
    tx = core.chx.settleClaim(fresh_bidder, {"from": fresh_bidder})
    rows.append(("claim delivery `settleClaim` (new holder slots; last claim: unfreezes the book)", tx,
                 "5 positions + 2 assets created for the holder; credited escrow joins the account's cash"))

    owner = accounts[0]
    core.quote.mint(owner, 50_000 * USDC, {"from": owner})
    core.quote.approve(core.auction, 50_000 * USDC, {"from": owner})
    core.auction.fundDeposit(50_000 * USDC, {"from": owner})  # the fund can pay the next shortfall
    def insolvent_bid(victim, equity):
        """A whole insolvent book bought by the warm bidder (keepers keep its own record fresh)."""
        core.build_book(victim)
        core.breach(victim, equity, MM, IM)
        core.auction.start(victim, {"from": starter})
        core.attest([(warm_bidder, 3_000_000 * USDC, 10_000 * USDC, 15_000 * USDC)])
        return core.auction.bid(victim, WAD, ANY, FAR, 0, {"from": warm_bidder})

    v2 = accounts[7]
    # E = -20,000: the model value (E + the 18,000 haircut on 10 WETH + 1 WBTC) is -2,000, the fund pays the bidder
    rows.append(("**bid, insolvent whole book (warm)**", insolvent_bid(v2, -20_000 * USDC),
                 "escrow, then the fund pays the bidder the shortfall, in the same core call; completes the sale"))
    tx = core.auction.finish(v2, {"from": accounts[9]})
    rows.append(("finish, insolvent (anyone; no penalty, no reward)", tx, "clearBreach, AuctionEnded"))
    core.chx.settleClaim(warm_bidder, {"from": warm_bidder})
    rows.append(("bid, insolvent whole book, fund exhausted (warm)", insolvent_bid(accounts[9], -400_000 * USDC),
                 "the fund pays what it has, the rest is recorded as a bad-debt claim (new claim slots)"))
    core.chx.settleClaim(warm_bidder, {"from": warm_bidder})

    v3 = accounts[8]
    core.build_book(v3)
    core.breach(v3, E, MM, IM)
    core.auction.start(v3, {"from": starter})
    d = int(core.auction.deficitOf(v3))
    core.quote.mint(v3, d, {"from": v3})
    core.quote.approve(core.auction, d, {"from": v3})
    tx = core.auction.depositAndCure(v3, d, {"from": v3})
    rows.append(("cure by deposit (depositAndCure)", tx, "token pull + core deposit + cash move + end"))

    v4 = accounts[5]
    core.build_book(v4)
    core.breach(v4, E, MM, IM)
    core.auction.start(v4, {"from": starter})
    core.attest([(v4, 2 * MM, MM, IM)])
    tx = core.auction.cure(v4, {"from": starter})
    rows.append(("cure by fresh attestation (cure)", tx, "healthy margin record already recorded"))

    # the buyer of last resort: nobody bids, one reset, then the fund's account takes the book at its floor
    core.quote.mint(owner, 1_000_000 * USDC, {"from": owner})
    core.quote.approve(core.auction, 1_000_000 * USDC, {"from": owner})
    core.auction.fundDeposit(1_000_000 * USDC, {"from": owner})  # repays the bad debt above, then funds the fund
    fund_account = accounts.add()
    core.auction.setFundAccount(fund_account, {"from": owner})
    v5 = accounts.add()
    accounts[0].transfer(v5, 10**18)
    core.build_book(v5)
    core.breach(v5, E, MM, IM)
    tx = core.auction.start(v5, {"from": starter})
    floor_at = int(core.auction.config()["tau"]) * (WAD - int(core.auction.config()["cuspWad"])) // WAD
    chain.sleep(floor_at + 5)
    core.breach(v5, E, MM, IM)
    tx = core.auction.redo(v5, {"from": starter})
    rows.append(("redo (floor passed, fresh breach record: model value recomputed)", tx,
                 "the price restarts at the fresh model value; `resets` + 1"))
    chain.sleep(floor_at + 5)
    core.breach(v5, E, MM, IM)
    tx = core.auction.takeAsLastResort(v5, {"from": starter})
    rows.append(("takeAsLastResort (fund's account takes the restoring fraction at the model value; ends the auction)",
                 tx, "fund pays from its free balance into escrow, claim to the fund's account, then finish's payouts"))
    return rows


def main() -> None:
    rows = auction_rows()
    print(f"\n## Liquidation auction gas (network: {network.show_active()}, chain id {chain.id})\n")
    print("| operation | gas | of which in the core's hook | notes |\n|---|---:|---|---|")
    for name, tx, note in rows:
        print(f"| {name} | {tx.gas_used:,} | {_core_gas(tx)} | {note} |")
