"""The deployed protocol as every phase of the scenario sees it: web3, the deployment, its contracts and tokens, the
owner's sender and the participants, with the few chain primitives the phases share (clock, events, book, deposits,
trades, model prices)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from eth_account import Account

from keeper.attest.engine import Attestation, BookState, quantize, smile_from
from keeper.chain.deploy import DeployConfig, DeployResult
from keeper.chain.sender import Sender
from keeper.quant.pricing import black76_price
from keeper.scenario.config import btc_of
from keeper.scenario.keepers import read_book
from keeper.units import SECONDS_PER_YEAR, to_wad


@dataclass
class Actor:
    """A participant: role, key, address, sender."""

    role: str
    kind: str
    key: str
    address: str
    sender: Sender


@dataclass
class World:
    """One deployment on one chain and the actors trading on it."""

    w3: Any
    dcfg: DeployConfig
    dep: DeployResult
    ch: Any  # the Clearinghouse contract
    auction: Any  # the LiquidationAuction contract
    tokens: dict[str, Any]  # symbol -> ERC20 contract
    owner: Sender
    actors: list[Actor]
    #: the second underlying (``btc_symbol``, a listed collateral with series on it) follows the first at
    #: ``btc_beta`` with ``btc_vol_ratio`` x its vol (:func:`keeper.scenario.config.btc_of`); its spot at the
    #: deployment spot is the listed collateral's ``spot``
    btc_symbol: str = "WBTC"
    btc_beta: float = 0.8
    btc_vol_ratio: float = 0.8

    # ------------------------------------------------------------------ chain
    def rpc(self, method: str, params: list) -> Any:
        return self.w3.provider.make_request(method, params)

    def advance(self, seconds: int) -> None:
        """Move the chain clock and mine one block."""
        self.rpc("evm_increaseTime", [int(seconds)])
        self.rpc("evm_mine", [])

    def now(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def logs(self, contract, event: str) -> list:
        """Every ``event`` of ``contract`` since the deployment block."""
        return getattr(contract.events, event)().get_logs(from_block=self.dep.block)

    # ------------------------------------------------------------------ the deployment's views
    def actor(self, role: str) -> Actor:
        return next(a for a in self.actors if a.role == role)

    def accounts(self) -> list[str]:
        return [a.address for a in self.actors]

    def series_map(self) -> dict[int, dict]:
        return {int(s["id"]): s for s in self.dep.series}

    def haircuts(self) -> dict[str, float]:
        return {self.dep.tokens[c.symbol]["address"]: c.haircut for c in self.dcfg.collateral}

    def risky_assets(self) -> list[str]:
        return [self.dep.tokens[c.symbol]["address"] for c in self.dcfg.collateral]

    def underlyings(self) -> list[str]:
        """The symbols the listed series are written on (the first underlying first)."""
        by_addr = {t["address"].lower(): sym for sym, t in self.dep.tokens.items()}
        syms = {by_addr[str(x["underlying"]).lower()] for x in self.dep.series}
        return sorted(syms, key=lambda x: (x != self.dcfg.underlying_symbol, x))

    def market(self, spot: float, vol: float) -> dict[str, tuple[float, float]]:
        """Spot and ATM vol of every risky asset (by symbol) when the first underlying is at ``spot`` and ``vol``:
        the second underlying from :func:`~keeper.scenario.config.btc_of`, any other listed asset keeping its
        ratio to the first (beta 1)."""
        spot0 = self.dcfg.spot0
        out = {}
        for c in self.dcfg.collateral:
            if c.symbol == self.dcfg.underlying_symbol:
                out[c.symbol] = (float(spot), float(vol))
            elif c.symbol == self.btc_symbol:
                b, v = btc_of(spot, vol, spot0, c.spot, self.btc_beta, self.btc_vol_ratio)
                out[c.symbol] = (float(b), float(v))
            else:
                out[c.symbol] = (float(c.spot * spot / spot0), float(vol))
        return out

    def spots(self, spot: float) -> dict[str, float]:
        """Attested spots (by address, quantized to cents) when the first underlying is at ``spot``."""
        return {self.dep.tokens[sym]["address"]: quantize(p) for sym, (p, _v) in self.market(spot, 0.0).items()}

    def symbol_of(self, address: str) -> str:
        return next(sym for sym, t in self.dep.tokens.items() if t["address"].lower() == str(address).lower())

    def series_market(self, sid: int, spot: float, vol: float) -> tuple[float, float]:
        """Spot and ATM vol of series ``sid``'s own underlying."""
        return self.market(spot, vol)[self.symbol_of(self.series_map()[sid]["underlying"])]

    def read_book(self) -> BookState:
        """Every actor's positions, collateral, cash and state nonce, from the clearinghouse."""
        return read_book(self.ch, self.accounts(), [int(s["id"]) for s in self.dep.series], self.risky_assets(),
                         {self.dep.tokens[c.symbol]["address"]: c.decimals for c in self.dcfg.collateral})

    def model_price(self, sid: int, spot: float, vol: float) -> float:
        """Black-76 on the scenario's smile of the series' own underlying, when the first underlying is at
        ``spot`` and ``vol``."""
        s = self.series_map()[sid]
        f, atm = self.series_market(sid, spot, vol)
        t = max(s["expiry"] - self.now(), 1) / SECONDS_PER_YEAR
        v = float(smile_from(atm)(np.array([s["strike"]]), np.array([t]), np.array([f]))[0])
        return float(black76_price(f, s["strike"], t, v, s["is_call"]))

    # ------------------------------------------------------------------ deposits and trades
    def fund(self, a: Actor, symbol: str, amount_units: float) -> None:
        """Mint ``amount_units`` of ``symbol`` to the actor and deposit it into the clearinghouse."""
        tok = self.tokens[symbol]
        amt = int(round(amount_units * 10 ** self.dep.tokens[symbol]["decimals"]))  # noqa: RUF046 - numpy floats
        if amt <= 0:
            return
        a.sender.call(tok.functions.mint(a.address, amt), f"mint {symbol}")
        a.sender.call(tok.functions.approve(self.ch.address, amt), f"approve {symbol}")
        a.sender.call(self.ch.functions.deposit(tok.address, amt), f"deposit {symbol}")

    def sign_quote(self, maker: Actor, sid: int, size_contracts: float, price: float, nonce: int) -> tuple:
        q = (maker.address, sid, to_wad(size_contracts), to_wad(round(price, 6)), nonce, self.now() + 3600)
        digest = bytes(self.ch.functions.hashQuote(q).call())
        sig = Account.from_key(maker.key).unsafe_sign_hash(digest).signature
        return q, sig

    def trade(self, maker: Actor, taker: Actor, sid: int, maker_size: float, price: float, nonce: int,
              att: Attestation) -> None:
        """Taker fills the maker's signed quote; both legs carry their proofs from ``att``."""
        q, sig = self.sign_quote(maker, sid, maker_size, price, nonce)
        taker.sender.call(self.ch.functions.trade(q, sig, att.proof_for(maker.address), att.proof_for(taker.address)),
                          f"trade {taker.role}<-{maker.role}")
