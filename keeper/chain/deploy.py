"""Deployment of the protocol: artifacts, the configuration, ``deploy`` and the hand-over to the timelock."""
from __future__ import annotations

import json
import logging
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from eth_account import Account
from eth_utils import to_checksum_address

from keeper.chain.deployment import (
    DEPLOYMENT_SCHEMA,
    PROJECT_ROOT,
    Deployment,
    load_abi,
)
from keeper.chain.deployment import write_deployment as write_chain_deployment
from keeper.chain.client import make_web3
from keeper.chain.sender import Sender
from keeper.errors import DeployError, TxFailed
from keeper.units import RAY, to_wad

log = logging.getLogger("backstop.deploy")


def derive_keys(mnemonic: str, n: int) -> list[str]:
    """The first ``n`` private keys (0x hex) of the standard path m/44'/60'/0'/0/i."""

    Account.enable_unaudited_hdwallet_features()
    return ["0x" + Account.from_mnemonic(mnemonic, account_path=f"m/44'/60'/0'/0/{i}").key.hex().removeprefix("0x")
            for i in range(n)]


# ----------------------------------------------------------------------------------------------- artefacts


@dataclass(frozen=True)
class Artifact:
    name: str
    abi: list
    bytecode: str

    def linked(self, libraries: dict[str, str]) -> "Artifact":
        """This artefact with each external library's placeholder (brownie's ``__Name___…``, 40 characters)
        replaced by its deployed address; raises :class:`DeployError` if a placeholder is left."""
        code = self.bytecode
        for name, address in libraries.items():
            code = code.replace(("__" + name).ljust(40, "_"), address[2:].lower())
        if "__" in code:
            raise DeployError(f"{self.name} needs a library that was not linked: {code[code.index('__'):][:40]}")
        return Artifact(self.name, self.abi, code)


def load_artifacts(names: Sequence[str], build_dir: Path | None = None, compile_if_missing: bool = True
                   ) -> dict[str, Artifact]:
    """ABI and deploy bytecode of the named contracts from brownie's ``build/contracts`` (compiled through
    brownie's project loader when an artefact is missing)."""
    build = Path(build_dir) if build_dir else PROJECT_ROOT / "build" / "contracts"
    missing = [n for n in names if not (build / f"{n}.json").is_file()]
    if missing and compile_if_missing:
        compile_project()
        missing = [n for n in names if not (build / f"{n}.json").is_file()]
    if missing:
        raise DeployError(f"no compiled artefact for {', '.join(missing)} in {build}")
    out = {}
    for n in names:
        d = json.loads((build / f"{n}.json").read_text())
        bc = d.get("bytecode") or ""
        if not bc:
            raise DeployError(f"artefact {n} has no bytecode (abstract contract or interface?)")
        out[n] = Artifact(n, d["abi"], bc if bc.startswith("0x") else "0x" + bc)
    return out


def compile_project() -> None:
    """Compile the contracts with brownie (``brownie compile``) in the project folder."""
    brownie = shutil.which("brownie") or str(PROJECT_ROOT / ".venv" / "bin" / "brownie")
    r = subprocess.run([brownie, "compile"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        tail = (r.stdout + r.stderr).strip().splitlines()[-5:]
        raise DeployError("brownie compile failed: " + " | ".join(tail))


def web3_for(url: str):
    """A web3 instance on ``url`` (HTTP, 60 s timeout, web3's own retries on): :func:`make_web3` for callers that do
    not retry by themselves."""
    return make_web3(url, timeout=60, web3_retries=True)


# ---------------------------------------------------------------------------------------------- deployment


@dataclass(frozen=True)
class CollateralSpec:
    """A collateral asset to list: symbol, decimals, haircut (fraction), deposit cap (whole units), spot."""

    symbol: str
    decimals: int
    haircut: float
    cap: float
    spot: float


@dataclass(frozen=True)
class SeriesPlan:
    """An option series to create: strike as a fraction of spot, days to expiry, call or put, and the symbol of its
    underlying (``None``: ``DeployConfig.underlying_symbol``; another symbol must be a listed collateral, whose
    ``spot`` the strike is a fraction of)."""

    strike_pct: float
    expiry_days: float
    is_call: bool
    underlying: str | None = None


@dataclass(frozen=True)
class DeployConfig:
    """What to deploy: keeper count and threshold, collateral list, series grid and auction parameters."""

    n_keepers: int = 3
    threshold: int = 2
    quote_symbol: str = "USDC"
    quote_decimals: int = 6
    underlying_symbol: str = "WETH"
    spot0: float = 2000.0
    collateral: tuple[CollateralSpec, ...] = (
        CollateralSpec("WETH", 18, 0.15, 100_000, 2000.0),
        CollateralSpec("WBTC", 8, 0.10, 5_000, 40000.0),
    )
    series: tuple[SeriesPlan, ...] = tuple(
        SeriesPlan(k, d, c) for d in (14.0, 45.0) for k in (0.8, 0.9, 1.0, 1.1, 1.2) for c in (True, False))
    max_attestation_age: int = 3600
    max_price_age: int = 3600
    short_margin_fraction: float = 0.15
    penalty: float = 0.05
    target_buffer: float = 0.10
    auction_tau: int = 600
    #: the auction's floor (``cuspWad``): once the linear curve's factor falls below it, bids stop and the auction
    #: must be reset from a fresh attested value (MakerDAO's cusp). Default: the design the backtest chose
    #: (docs/risk-efficacy.md, :data:`CHOSEN_AUCTION`): 0.1, the contract's ``MIN_CUSP``; the earlier design used 0.4
    auction_floor: float = 0.1
    #: ``spanWad``: the price of a whole book moves by at most ``ceil(auction_span * MM)`` from its attested model
    #: value (never below zero for a solvent book). Default 0.10 (chosen); 1.0 is the earlier span in size
    #: (``min(V, MM)``)
    auction_span: float = 0.10
    #: ``lastResortAfter``: resets after which, at the floor, the fund's account takes the book (buyer of last
    #: resort) instead of a further reset (chosen: 1)
    last_resort_after: int = 1
    #: the fund's account (``setFundAccount``), the holder of what the buyer of last resort takes: ``"owner"`` (the
    #: default) for the deployer's address (the operator key that stays guardian, risk admin and the timelock's
    #: proposer: it can unwind the book at once, which the timelock could only do after its delay), an address (a
    #: dedicated key or a multisig the deployer names), or ``None`` for none (then auctions reset for ever: the
    #: earlier design)
    fund_account: str | None = "owner"
    fund_seed: float = 50_000.0
    #: minimum delay [s] of the BackstopTimelock that owns the deployment once it is set up (every power that can
    #: loosen risk or move value waits this long); ``None`` leaves the deployer's key as owner (unit tests only)
    governance_delay: int | None = 2 * 86400


#: the auction parameters the backtest chose (docs/risk-efficacy.md "What the contracts do"): floor 0.1, span 0.1 MM,
#: the buyer of last resort after one reset; :class:`DeployConfig`'s defaults (tests/chain/test_deploy_defaults.py)
CHOSEN_AUCTION = {"auction_floor": 0.1, "auction_span": 0.10, "last_resort_after": 1}

#: the auction parameters of the earlier design (floor 0.4, span = the whole value ``min(V, MM)``, no buyer of last
#: resort: auctions reset for ever), for tests that exercise it on purpose: ``DeployConfig(**EARLIER_AUCTION)``
EARLIER_AUCTION = {"auction_floor": 0.4, "auction_span": 1.0, "fund_account": None}

#: name of the mintable ERC20 test token contract (contracts/test/) the local deployment uses
TOKEN_CONTRACT = "TestERC20"


@dataclass
class DeployResult:
    """Everything :func:`deploy` created (richer than the deployment file: keys' addresses, series, params)."""

    chain_id: int
    rpc_url: str
    block: int
    timestamp: int
    owner: str
    clearinghouse: str
    auction: str
    quote_asset: str
    quote_decimals: int
    underlying: str
    tokens: dict[str, dict]  # symbol -> {"address", "decimals", "haircut", "cap", "spot"}
    keepers: list[str]
    threshold: int
    series: list[dict]  # {"id", "underlying", "strike", "expiry", "is_call"}
    params: dict
    deployment_file: str = ""
    timelock: str = ""  # the BackstopTimelock owning the contracts ("" when the deployer's key owns them)
    fund_account: str = ""  # the buyer of last resort's account (``setFundAccount``; "" when none was set)

    def to_json(self) -> dict:
        return asdict(self)


def clearinghouse_abi(arts: dict[str, Artifact] | None = None) -> list:
    """The Clearinghouse's full ABI: ``IClearinghouse`` (contracts/interfaces/IClearinghouse.sol) declares the
    functions, events and errors of both halves, its own hot paths and the ``ClearinghouseAdmin`` functions its
    fallback delegates to (tests/contracts/test_selectors.py checks it against the compiled halves). ``arts`` is
    accepted for callers that loaded the artefacts already; otherwise the project is compiled if needed."""
    if arts is None:
        load_artifacts(["Clearinghouse", "ClearinghouseAdmin"])

    return load_abi("clearinghouse")


def auction_config_tuple(cfg: DeployConfig) -> tuple:
    """The LiquidationAuction ``Config`` struct: linear curve over ``auction_tau`` seconds, reset below
    ``auction_floor`` of the start price's span or after twice ``auction_tau``; span ``auction_span`` x MM; the buyer
    of last resort after ``last_resort_after`` resets."""
    return (0, int(cfg.auction_tau), 0, RAY, int(max(cfg.auction_tau * 2, 120)), to_wad(cfg.auction_floor),
            to_wad(cfg.target_buffer), to_wad(cfg.penalty), to_wad(0.001), 0, int(cfg.max_attestation_age),
            to_wad(cfg.auction_span), int(cfg.last_resort_after))


def deploy(w3, owner_key: str, keeper_addresses: Sequence[str], cfg: DeployConfig = DeployConfig(), *,
           rpc_url: str = "", deployment_file: Path | str | None = None, token_contract: str = TOKEN_CONTRACT,
           progress=None) -> DeployResult:
    """Deploy tokens, Clearinghouse and LiquidationAuction; register keepers and threshold, list collateral with
    haircuts and caps, create the series grid around ``cfg.spot0``, set the auction as liquidation module (the
    chosen auction design by default, :data:`CHOSEN_AUCTION`), set the fund's account (``cfg.fund_account``: the
    deployer's address by default) and seed the insurance fund; write the deployment file when ``deployment_file``
    is given.

    Every failure is a :class:`DeployError` naming the step (a transaction of a step that would revert or
    reverted, :class:`TxFailed` from the sender, is reported as the deployment's failure)."""
    try:
        return _deploy(w3, owner_key, keeper_addresses, cfg, rpc_url=rpc_url, deployment_file=deployment_file,
                       token_contract=token_contract, progress=progress)
    except TxFailed as e:
        raise DeployError(f"deployment failed: {e}") from e


def _deploy(w3, owner_key: str, keeper_addresses: Sequence[str], cfg: DeployConfig, *, rpc_url: str,
            deployment_file: Path | str | None, token_contract: str, progress) -> DeployResult:
    say = progress or (lambda msg: log.info(msg))
    if not 1 <= cfg.threshold <= cfg.n_keepers or 2 * cfg.threshold <= cfg.n_keepers:
        raise DeployError(f"threshold {cfg.threshold} of {cfg.n_keepers} keepers: need 2M > N and M <= N")
    if len(keeper_addresses) != cfg.n_keepers:
        raise DeployError(f"{len(keeper_addresses)} keeper addresses given, config says {cfg.n_keepers}")
    resolve_fund_account(cfg.fund_account, Account.from_key(owner_key).address)  # a bad name fails before any tx
    arts = load_artifacts([token_contract, "Clearinghouse", "ClearinghouseAdmin", "LiquidationAuction",
                           "FallbackMarginLogic", "AuctionLogic", "BackstopTimelock"])
    owner = Sender(w3, owner_key)
    tokens: dict[str, dict] = {}

    def make_token(symbol: str, decimals: int):
        c = owner.deploy(arts[token_contract], f"Test {symbol}", symbol, decimals)
        say(f"token {symbol} ({decimals} dp) at {c.address}")
        return c

    quote = make_token(cfg.quote_symbol, cfg.quote_decimals)
    tokens[cfg.quote_symbol] = {"address": quote.address, "decimals": cfg.quote_decimals, "haircut": 0.0,
                                "cap": 10**15, "spot": 1.0}
    for c in cfg.collateral:
        t = make_token(c.symbol, c.decimals)
        tokens[c.symbol] = {"address": t.address, "decimals": c.decimals, "haircut": c.haircut, "cap": c.cap,
                            "spot": c.spot}
    quote_cap = 10**15 * 10**cfg.quote_decimals
    smf = to_wad(cfg.short_margin_fraction)
    library = owner.deploy(arts["FallbackMarginLogic"])
    admin_art = arts["ClearinghouseAdmin"].linked({"FallbackMarginLogic": library.address})
    admin = owner.deploy(admin_art, owner.address, quote.address, quote_cap, smf)
    core = owner.deploy(arts["Clearinghouse"], owner.address, quote.address, quote_cap, smf, admin.address)
    ch = w3.eth.contract(address=core.address, abi=clearinghouse_abi(arts))
    say(f"Clearinghouse at {ch.address} (admin code at {admin.address})")
    keepers = sorted((to_checksum_address(k) for k in keeper_addresses), key=lambda a: int(a, 16))
    owner.call(ch.functions.setKeeperSet(keepers, cfg.threshold), "setKeeperSet")
    owner.call(ch.functions.setMaxAttestationAge(cfg.max_attestation_age), "setMaxAttestationAge")
    owner.call(ch.functions.setMaxPriceAge(cfg.max_price_age), "setMaxPriceAge")
    say(f"keeper set {cfg.threshold}-of-{len(keepers)}: {', '.join(k[:10] for k in keepers)}")
    for c in cfg.collateral:
        addr = tokens[c.symbol]["address"]
        cap = int(c.cap * 10**c.decimals)
        owner.call(ch.functions.listCollateral(addr, to_wad(c.haircut), cap), f"listCollateral {c.symbol}")
        say(f"listed {c.symbol}: haircut {c.haircut:.0%}, cap {c.cap:,.0f}")
    underlying = tokens[cfg.underlying_symbol]["address"]
    now = int(w3.eth.get_block("latest")["timestamp"])
    series = []
    for plan in cfg.series:
        sym = plan.underlying or cfg.underlying_symbol
        if sym not in tokens:
            raise DeployError(f"series on {sym!r}: not a listed collateral symbol ({sorted(tokens)})")
        spot = cfg.spot0 if sym == cfg.underlying_symbol else float(tokens[sym]["spot"])
        strike = round(spot * plan.strike_pct, 2)
        expiry = now + int(plan.expiry_days * 86400)
        addr = tokens[sym]["address"]
        owner.call(ch.functions.createSeries(addr, to_wad(strike), expiry, plan.is_call), f"createSeries {sym}")
        series.append({"id": len(series) + 1, "underlying": addr, "strike": strike, "expiry": expiry,
                       "is_call": plan.is_call})
    # series ids: read back from the events of the creations rather than assuming numbering
    ev = ch.events.SeriesCreated().get_logs(from_block=0)
    if len(ev) == len(series):
        for s, e in zip(series, ev):
            s["id"] = int(e["args"]["seriesId"])
    say(f"created {len(series)} option series")
    auction_logic = owner.deploy(arts["AuctionLogic"])
    auction_art = arts["LiquidationAuction"].linked({"AuctionLogic": auction_logic.address})
    auction = owner.deploy(auction_art, ch.address, owner.address, auction_config_tuple(cfg))
    owner.call(ch.functions.setLiquidationModule(auction.address), "setLiquidationModule")
    say(f"LiquidationAuction at {auction.address} (liquidation module; AuctionLogic at {auction_logic.address})")
    fund_account = resolve_fund_account(cfg.fund_account, owner.address, auction.address)
    if fund_account:
        owner.call(auction.functions.setFundAccount(fund_account), "setFundAccount")
        who = "the deployer's address" if fund_account == owner.address else "named by the deployer"
        say(f"fund's account (buyer of last resort after {cfg.last_resort_after} reset(s)): {fund_account} ({who})")
    else:
        say("no fund's account: no buyer of last resort, auctions reset for ever")
    if cfg.fund_seed > 0:
        seed = int(cfg.fund_seed * 10**cfg.quote_decimals)
        owner.call(quote.functions.mint(owner.address, seed), "mint fund seed")
        owner.call(quote.functions.approve(auction.address, seed), "approve fund seed")
        owner.call(auction.functions.fundDeposit(seed), "fundDeposit")
        say(f"insurance fund seeded with {cfg.fund_seed:,.0f} {cfg.quote_symbol}")
    owner.call(ch.functions.setRiskAdmin(owner.address), "setRiskAdmin")
    owner.call(ch.functions.setGuardian(owner.address), "setGuardian")
    owner.call(auction.functions.setGuardian(owner.address), "auction setGuardian")
    timelock = None
    if cfg.governance_delay is not None:
        timelock = hand_over_to_timelock(w3, owner, arts["BackstopTimelock"], [ch, auction], cfg.governance_delay)
        say(f"owner of Clearinghouse and LiquidationAuction: BackstopTimelock at {timelock} "
            f"(min delay {cfg.governance_delay:,} s); guardian and risk admin: {owner.address}")
    head = w3.eth.get_block("latest")
    res = DeployResult(
        chain_id=int(w3.eth.chain_id), rpc_url=rpc_url, block=int(head["number"]), timestamp=int(head["timestamp"]),
        owner=owner.address, clearinghouse=ch.address, auction=auction.address, quote_asset=quote.address,
        quote_decimals=cfg.quote_decimals, underlying=underlying, tokens=tokens, keepers=keepers,
        threshold=cfg.threshold, series=series,
        params={"short_margin_fraction": cfg.short_margin_fraction, "penalty": cfg.penalty,
                "target_buffer": cfg.target_buffer, "auction_tau": cfg.auction_tau, "auction_floor": cfg.auction_floor,
                "auction_span": cfg.auction_span, "last_resort_after": cfg.last_resort_after,
                "max_attestation_age": cfg.max_attestation_age, "max_price_age": cfg.max_price_age,
                "spot0": cfg.spot0, "auction_config": list(auction_config_tuple(cfg)),
                "governance_delay": cfg.governance_delay},
        timelock=timelock or "", fund_account=fund_account or "",
    )
    if deployment_file is not None:
        res.deployment_file = str(write_bot_deployment(res, deployment_file))
        say(f"deployment file written: {res.deployment_file}")
    return res


def resolve_fund_account(spec: str | None, owner: str, auction: str = "") -> str:
    """The fund's account a :class:`DeployConfig` names: ``"owner"`` -> the deployer's address ``owner``, an address
    -> itself (checksummed), ``None``/``"none"``/``""`` -> ``""`` (none). Raises :class:`DeployError` for anything
    else, the zero address or the auction module itself (the contract refuses both: ``LA_InvalidFundAccount``)."""
    if spec is None or str(spec).strip().lower() in ("", "none"):
        return ""
    if str(spec).strip().lower() == "owner":
        return to_checksum_address(owner)
    try:
        addr = to_checksum_address(str(spec).strip())
    except ValueError:
        raise DeployError(f"fund account {spec!r}: give 'owner', 'none' or a 0x address") from None
    if int(addr, 16) == 0 or (auction and addr.lower() == auction.lower()):
        raise DeployError(f"fund account {addr}: not the zero address or the auction module")
    return addr


def hand_over_to_timelock(w3, owner: "Sender", timelock_art: Artifact, owned: Sequence, delay: int) -> str:
    """Make a new :class:`BackstopTimelock` the owner of every contract in ``owned`` (Ownable2Step) and raise its
    minimum delay to ``delay`` seconds; returns its address.

    The timelock starts with delay 0 and ``owner`` as proposer and bootstrap admin, accepts the ownerships and raises
    its own delay in operations that run at once, then ``owner`` renounces the admin role: from then on every
    owner power waits ``delay`` seconds (anyone may execute a ready operation; ``owner`` proposes and cancels)."""
    if delay < 0:
        raise DeployError(f"governance delay must be >= 0 seconds, got {delay}")
    zero = "0x" + "00" * 20
    tl = owner.deploy(timelock_art, 0, [owner.address], [zero], owner.address)
    for c in owned:
        owner.call(c.functions.transferOwnership(tl.address), f"transferOwnership {c.address[:10]}")
    targets = [c.address for c in owned] + [tl.address]
    payloads = [c.encode_abi("acceptOwnership", []) for c in owned] + [tl.encode_abi("updateDelay", [int(delay)])]
    salt = b"\x00" * 32
    args = (targets, [0] * len(targets), payloads, b"\x00" * 32, salt)
    owner.call(tl.functions.scheduleBatch(*args, 0), "timelock scheduleBatch (hand-over)")
    owner.call(tl.functions.executeBatch(*args), "timelock executeBatch (hand-over)")
    admin_role = tl.functions.DEFAULT_ADMIN_ROLE().call()
    owner.call(tl.functions.renounceRole(admin_role, owner.address), "timelock renounce bootstrap admin")
    for c in owned:
        if c.functions.owner().call() != tl.address:
            raise DeployError(f"{c.address} did not accept the timelock as owner")
    if int(tl.functions.getMinDelay().call()) != int(delay):
        raise DeployError("timelock delay was not raised")
    return tl.address


def write_bot_deployment(res: DeployResult, path: Path | str) -> Path:
    """Write the deployment file in the schema of :mod:`keeper.chain.deployment` (``backstop-deployment/1``), and the full
    :class:`DeployResult` beside it as ``<name>.full.json``."""

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    collateral = {sym: t["address"] for sym, t in res.tokens.items() if sym != _quote_symbol(res)}
    dep = Deployment.model_validate({
        "schema": DEPLOYMENT_SCHEMA, "chain_id": res.chain_id, "block": res.block,
        "clearinghouse": res.clearinghouse, "auction": res.auction, "quote_asset": res.quote_asset,
        "underlyings": {_symbol_of(res, a): a for a in [res.underlying] + [s["underlying"] for s in res.series]},
        "collateral": collateral,
        "abi": {"clearinghouse": clearinghouse_abi(),
                "auction": load_artifacts(["LiquidationAuction"])["LiquidationAuction"].abi},
    })
    write_chain_deployment(p, dep)
    full = p.with_name(p.stem + ".full.json")
    full.write_text(json.dumps(res.to_json(), indent=2))
    return p


def _quote_symbol(res: DeployResult) -> str:
    return next(s for s, t in res.tokens.items() if t["address"] == res.quote_asset)


def _symbol_of(res: DeployResult, address: str) -> str:
    return next(s for s, t in res.tokens.items() if t["address"].lower() == address.lower())


def read_deploy_result(path: Path | str) -> DeployResult:
    """Read the ``.full.json`` written beside a deployment file (or the full file itself)."""
    p = Path(path)
    full = p if p.name.endswith(".full.json") else p.with_name(p.stem + ".full.json")
    try:
        return DeployResult(**json.loads(full.read_text()))
    except (OSError, json.JSONDecodeError, TypeError) as e:
        raise DeployError(f"cannot read deployment details {full}: {e}") from None
