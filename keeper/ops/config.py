"""The keeper's one configuration file: pydantic v2 models, loaded from TOML, YAML or JSON.

Every value is validated when the file is loaded; :func:`load_config` raises :class:`ConfigError` whose message
has one line per bad value, naming its dotted path in the file (``exchange.peers.1.url: ...``). Unknown keys are
errors too (a typo must not silently fall back to a default). See ``docs/keeper.md`` for the reference.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from eth_utils import is_address, to_checksum_address
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from keeper.errors import ConfigError

#: Default JSON-RPC endpoint: the local Anvil that brownie and ``make scenario`` launch.
DEFAULT_RPC_URL = "http://127.0.0.1:8545"
#: Default name of the environment variable holding the keeper's private key (hex).
DEFAULT_KEY_ENV = "BACKSTOP_KEEPER_KEY"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _check_address(value: str) -> str:

    if not isinstance(value, str) or not is_address(value):
        raise ValueError("not an Ethereum address")
    return to_checksum_address(value)


class ChainSettings(_Model):
    """Where the chain is and how hard to try when it is not answering."""

    rpc_url: str = DEFAULT_RPC_URL
    deployment_file: Path = Path("deployment.json")
    poll_interval_s: float = Field(1.0, gt=0, le=60)
    request_timeout_s: float = Field(10.0, gt=0, le=300)
    retry_attempts: int = Field(5, ge=1, le=100)
    backoff_base_s: float = Field(0.2, gt=0, le=60)
    backoff_max_s: float = Field(10.0, gt=0, le=600)
    log_chunk_blocks: int = Field(2000, ge=1, le=1_000_000)
    reorg_depth: int = Field(64, ge=1, le=10_000)
    max_fee_gwei: float = Field(500.0, gt=0)
    priority_fee_gwei: float = Field(1.0, ge=0)
    gas_limit_multiplier: float = Field(1.3, ge=1.0, le=5.0)
    receipt_timeout_s: float = Field(60.0, gt=0)

    @field_validator("rpc_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("rpc_url must start with http:// or https://")
        return v

    @model_validator(mode="after")
    def _backoff(self) -> "ChainSettings":
        if self.backoff_max_s < self.backoff_base_s:
            raise ValueError("backoff_max_s must be >= backoff_base_s")
        return self


class KeySettings(_Model):
    """Where the signing key comes from: an environment variable with the hex key, or an encrypted keystore."""

    env_var: str = DEFAULT_KEY_ENV
    keystore_file: Optional[Path] = None
    password_env: str = "BACKSTOP_KEYSTORE_PASSWORD"
    password_file: Optional[Path] = None


class _DeribitApiFields(_Model):
    """The fields of a ``deribit_api`` source: Deribit's public API (keeper/data/deribit_api.py,
    docs/market-data.md), live from ``url`` or from the folder of saved answers at ``path``."""

    url: Optional[str] = None
    currency: str = Field("ETH", min_length=1, description="deribit_api: base coin of the options")
    settlement: Optional[str] = Field(None, description="deribit_api: 'USDC' for linear options; default inverse")
    index_name: Optional[str] = Field(None, description="deribit_api: default '<currency>_usd' (_usdc if linear)")
    timeout_s: float = Field(5.0, gt=0)
    retries: int = Field(2, ge=0, le=10)
    backoff_s: float = Field(0.25, ge=0)


class SpotSourceSettings(_DeribitApiFields):
    """One spot source. ``kind``: ``simulated`` (the built-in market), ``replay`` (an OHLCV CSV or JSON path,
    one row per ``rows_per_block`` blocks from ``start_block``), ``file`` (a JSON file ``{"price": p, "volume": v}``
    read afresh each cycle), ``onchain`` (the latest price attested to the core contracts) or ``deribit_api``
    (Deribit's ``public/get_index_price``, live from ``url`` or saved answers in the folder ``path``)."""

    name: str = Field(min_length=1)
    kind: Literal["simulated", "replay", "file", "onchain", "deribit_api"]
    path: Optional[Path] = None
    price_column: str = "close"
    start_block: int = Field(0, ge=0)
    rows_per_block: int = Field(1, ge=1)
    start_row: int = Field(0, ge=0)
    scale: float = Field(1.0, gt=0)
    weight: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _path_needed(self) -> "SpotSourceSettings":
        if self.kind in ("replay", "file") and self.path is None:
            raise ValueError(f"spot source {self.name!r} of kind {self.kind!r} needs a path")
        if self.kind == "deribit_api" and (self.url is None) == (self.path is None):
            raise ValueError(f"spot source {self.name!r} of kind 'deribit_api' needs exactly one of url and path")
        return self


class SimulatedMarketSettings(_Model):
    """The built-in seeded market: jump-diffusion spot and an option chain drawn around a smile."""

    seed: int = Field(7, ge=0)
    spot0: float = Field(2000.0, gt=0)
    vol: float = Field(0.6, gt=0, le=5)
    drift: float = 0.0
    seconds_per_step: float = Field(12.0, gt=0)
    jump_intensity: float = Field(2.0, ge=0, description="expected jumps per year")
    jump_mean: float = Field(-0.05, ge=-1, le=1)
    jump_std: float = Field(0.08, ge=0, le=2)
    expiries_days: list[float] = Field(default_factory=lambda: [7.0, 30.0, 90.0], min_length=1)
    strikes_pct: list[float] = Field(default_factory=lambda: [0.7, 0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.2, 1.3],
                                     min_length=3)
    atm_vol: float = Field(0.6, gt=0, le=5)
    skew: float = Field(-0.15, ge=-5, le=5)
    smile: float = Field(0.4, ge=0, le=20)
    spread_pct: float = Field(0.04, ge=0, lt=1, description="bid/ask spread as a fraction of the model price")
    depth_mean: float = Field(10.0, gt=0)

    @field_validator("expiries_days", "strikes_pct")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if any(not (x > 0 and math.isfinite(x)) for x in v):
            raise ValueError("every entry must be a positive finite number")
        return sorted(v)


class ChainSourceSettings(_DeribitApiFields):
    """Where option-chain quotes come from: ``simulated``, ``deribit_csv`` (the shared/data format), ``json``
    (a list of rows with the same fields), ``market_file`` (a JSON file ``{"atm_vol", "skew", "curvature"}``
    re-read every cycle; the chain is drawn around that smile with the ``simulated`` section's grid, spread,
    depth and seed), ``deribit_api`` (Deribit's ``public/get_book_summary_by_currency``, live from ``url`` or
    saved answers in the folder ``path``) or ``none`` (a collateral-only asset: no options priced on it)."""

    kind: Literal["simulated", "deribit_csv", "json", "market_file", "deribit_api", "none"] = "simulated"
    path: Optional[Path] = None
    max_age_s: Optional[float] = Field(None, gt=0, description="deribit_api: skip a chain older than this")

    @model_validator(mode="after")
    def _path_needed(self) -> "ChainSourceSettings":
        if self.kind in ("deribit_csv", "json", "market_file") and self.path is None:
            raise ValueError(f"option-chain source of kind {self.kind!r} needs a path")
        if self.kind == "deribit_api" and (self.url is None) == (self.path is None):
            raise ValueError("option-chain source of kind 'deribit_api' needs exactly one of url and path")
        return self


def _check_sources(spot_sources: list, min_sources: Optional[int]) -> None:
    names = [s.name for s in spot_sources]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"duplicate spot source names: {dupes}")
    if min_sources is not None and min_sources > len(spot_sources):
        raise ValueError(f"min_sources={min_sources} exceeds the {len(spot_sources)} spot sources")


class AssetMarketSettings(_Model):
    """The market sources of one listed asset (``market.assets.<SYMBOL>``, the symbol a key of the deployment
    file's ``underlyings`` or ``collateral``): its spot sources and, for an option underlying, its option-chain
    source. ``aggregation``, ``mad_threshold``, ``min_sources``, ``spot_decimals`` and ``simulated`` default to the
    ``market`` section's values."""

    spot_sources: list[SpotSourceSettings] = Field(min_length=1)
    chain: ChainSourceSettings = Field(default_factory=lambda: ChainSourceSettings(kind="none"))
    simulated: Optional[SimulatedMarketSettings] = None
    aggregation: Optional[Literal["median", "vwap"]] = None
    mad_threshold: Optional[float] = Field(None, gt=0)
    min_sources: Optional[int] = Field(None, ge=1)
    spot_decimals: Optional[int] = Field(None, ge=0, le=18)

    @model_validator(mode="after")
    def _sources(self) -> "AssetMarketSettings":
        _check_sources(self.spot_sources, self.min_sources)
        return self


#: the one-asset form's keys (``market.underlying``, ``market.spot_sources``, ``market.chain``)
_ONE_ASSET_KEYS = ("underlying", "spot_sources", "chain")


class HybridMarkSettings(_Model):
    """The hybrid mark's thresholds (``market.hybrid``; docs/keeper.md "The hybrid mark, live", docs/surface.md): a
    series is marked to its venue mid only while its book passes every test, entering with the ``enter_*`` values
    (stricter) after ``enter_blocks`` consecutive attested documents and leaving when it fails the ``leave_*``
    values; otherwise to the model. The fields are :class:`keeper.quant.marks.MarkConfig`'s; recorded in every inputs
    document (``underlyings[i].hybrid.config``)."""

    enter_max_rel_spread: float = Field(0.05, gt=0, le=1, description="(ask - bid) / mid to switch to market")
    leave_max_rel_spread: float = Field(0.10, gt=0, le=1, description="(ask - bid) / mid to stay on market")
    enter_min_depth: float = Field(5.0, ge=0, description="contracts on the thinner side to switch to market")
    leave_min_depth: float = Field(2.0, ge=0, description="contracts on the thinner side to stay on market")
    enter_band_rel: float = Field(0.05, ge=0, le=1, description="|mid - model| / model to switch to market")
    leave_band_rel: float = Field(0.10, ge=0, le=1, description="|mid - model| / model to stay on market")
    enter_band_vol: float = Field(0.02, ge=0, le=1, description="|mid - model| / vega (vol) to switch to market")
    leave_band_vol: float = Field(0.04, ge=0, le=1, description="|mid - model| / vega (vol) to stay on market")
    band_abs: float = Field(0.0, ge=0, description="|mid - model| in quote units always accepted")
    max_quote_age_s: float = Field(300.0, gt=0, description="an older quote is stale: model")
    enter_blocks: int = Field(2, ge=1, le=1000,
                              description="consecutive attested documents a book must pass before its mid is used")

    @model_validator(mode="after")
    def _enter_stricter(self) -> "HybridMarkSettings":
        bad = [f"{a} > {b}" for a, b in (("enter_max_rel_spread", "leave_max_rel_spread"),
                                         ("enter_band_rel", "leave_band_rel"), ("enter_band_vol", "leave_band_vol"))
               if getattr(self, a) > getattr(self, b)]
        if self.enter_min_depth < self.leave_min_depth:
            bad.append("enter_min_depth < leave_min_depth")
        if bad:
            raise ValueError(f"the enter thresholds must be at least as strict as the leave ones: {', '.join(bad)}")
        return self


class MarketSettings(_Model):
    """Market data. Two forms (docs/keeper.md, "Config reference"):

    * **per asset** (``market.assets``): every listed asset the keepers price has its own spot sources, and each
      option underlying its own chain source; one keeper prices all of them in one root;
    * **one asset** (``market.underlying`` with ``market.spot_sources`` and ``market.chain``, the original form):
      the case of a single asset; ``asset_settings()`` turns it into the per-asset form.

    ``aggregation``, ``mad_threshold``, ``min_sources``, ``spot_decimals`` and ``simulated`` are the defaults of every
    asset. ``fallback_blocks`` and ``fallback_widening`` are the rule for rejected market data (docs/keeper.md,
    "Fallback"): the last attested spot and surface of the asset, with its scenario moves widened by
    ``1 + fallback_widening``, for at most ``fallback_blocks`` blocks; then its holders are left out."""

    underlying: Optional[str] = Field(None, min_length=1)
    spot_sources: Optional[list[SpotSourceSettings]] = Field(None, min_length=1)
    chain: Optional[ChainSourceSettings] = None
    assets: dict[str, AssetMarketSettings] = Field(default_factory=dict)
    aggregation: Literal["median", "vwap"] = "median"
    mad_threshold: float = Field(3.5, gt=0, description="reject sources further than this many scaled MADs")
    min_sources: int = Field(1, ge=1)
    spot_decimals: int = Field(2, ge=0, le=18, description="spot is rounded to this many decimals before use")
    simulated: SimulatedMarketSettings = Field(default_factory=SimulatedMarketSettings)
    fallback_blocks: int = Field(20, ge=0, le=100_000,
                                 description="blocks an asset may be priced on its last attested market data")
    fallback_widening: float = Field(0.5, ge=0, le=10,
                                     description="fallback: scenario moves of the asset scaled by 1 + this")
    hybrid: HybridMarkSettings = Field(default_factory=HybridMarkSettings)

    @model_validator(mode="before")
    @classmethod
    def _one_form(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if data.get("assets"):
            given = [k for k in _ONE_ASSET_KEYS if data.get(k) is not None]
            if given:
                raise ValueError(f"market.assets names the sources per asset: drop market.{', market.'.join(given)} "
                                 "(the one-asset form)")
            return data
        data = dict(data)
        data.pop("assets", None)
        if data.get("underlying") is None:
            data["underlying"] = "ETH"
        if data.get("spot_sources") is None:
            data["spot_sources"] = [{"name": "sim", "kind": "simulated"}]
        if data.get("chain") is None:
            data["chain"] = {}
        return data

    @model_validator(mode="after")
    def _sources(self) -> "MarketSettings":
        if self.spot_sources is not None:
            _check_sources(self.spot_sources, self.min_sources)
        for sym, a in self.assets.items():
            if a.min_sources is None and self.min_sources > len(a.spot_sources):
                raise ValueError(f"min_sources={self.min_sources} exceeds the {len(a.spot_sources)} spot sources "
                                 f"of asset {sym!r}")
        return self

    def asset_settings(self) -> dict[str, AssetMarketSettings]:
        """Every asset's sources with the market-wide defaults filled in (the one-asset form as one asset)."""
        assets = self.assets or {self.underlying: AssetMarketSettings(
            spot_sources=self.spot_sources, chain=self.chain or ChainSourceSettings(), simulated=self.simulated)}
        return {sym: a.model_copy(update={
            "simulated": a.simulated or self.simulated,
            "aggregation": a.aggregation or self.aggregation,
            "mad_threshold": a.mad_threshold if a.mad_threshold is not None else self.mad_threshold,
            "min_sources": a.min_sources if a.min_sources is not None else self.min_sources,
            "spot_decimals": a.spot_decimals if a.spot_decimals is not None else self.spot_decimals})
            for sym, a in assets.items()}


class RiskSettings(_Model):
    """Risk parameters handed to the risk engine (:mod:`keeper.quant.risk.engine`); part of every block's archived inputs."""

    var_confidence: float = Field(0.99, ge=0.5, lt=1)
    es_confidence: float = Field(0.975, ge=0.5, lt=1)
    horizon_days: float = Field(1.0, gt=0, le=30)
    mc_paths: int = Field(2000, ge=100, le=1_000_000)
    mc_diffusion_vol: float = Field(0.7, gt=0, le=10, description="annual diffusion vol of the Monte Carlo set")
    grid_spot_range: float = Field(0.15, gt=0, lt=1, description="SPAN-like grid: largest regular spot move")
    grid_vol_range: float = Field(0.25, ge=0, lt=1, description="SPAN-like grid: relative vol move")
    im_multiplier: float = Field(1.5, ge=1, le=10)
    stress_correlation: Optional[float] = Field(1.0, ge=0.7, le=1.0, description=(
        "cross-asset correlation of the Monte Carlo stress that joins the margin when a book spans several "
        "underlyings (docs/risk.md); null: off"))
    near_margin_ratio: float = Field(1.2, ge=1, le=100,
                                     description="accounts with equity < ratio * MM are listed as near margin")
    workers: int = Field(1, ge=1, le=64, description=(
        "threads the risk run splits the accounts across (keeper.ops.pool.RiskPool; 2 uses both cores of a 2-core "
        "machine). Not part of the inputs document: the leaves are the same bits whatever the count"))


class PublishSettings(_Model):
    """When the keeper submits what it signs."""

    root_every_blocks: int = Field(1, ge=1, description="post a margin root when the last one on chain is N blocks "
                                                          "old (breaches are posted at once)")
    prices_heartbeat_blocks: int = Field(1, ge=1, description="post prices when the last ones on chain are N "
                                                                "blocks old (or on a deviation)")
    price_deviation: float = Field(0.005, ge=0, lt=1, description="post prices early when spot moved this much")
    settlement: bool = True
    settle_holders: bool = Field(True, description="after a settlement price is on chain, settle the holders of the "
                                                   "expired series (settleMany, in batches)")
    settle_batch: int = Field(50, ge=1, le=500, description="accounts per settleMany transaction")
    start_auctions: bool = Field(True, description="start the auction of each breach this keeper registers")


class PeerSettings(_Model):
    """Another keeper: its HTTP API and its signing address."""

    name: str = Field(min_length=1)
    url: str
    address: str

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("peer url must start with http:// or https://")
        return v.rstrip("/")

    @field_validator("address")
    @classmethod
    def _addr(cls, v: str) -> str:
        return _check_address(v)


class ExchangeSettings(_Model):
    """The keeper's HTTP API and its peers."""

    host: str = "127.0.0.1"
    port: int = Field(8600, ge=0, le=65535)
    peers: list[PeerSettings] = Field(default_factory=list)
    request_timeout_s: float = Field(2.0, gt=0, le=60)
    takeover_blocks: int = Field(1, ge=1, le=1000,
                                 description="blocks a non-designated submitter waits per rotation step")
    keep_blocks: int = Field(256, ge=1, description="blocks of signatures and attestations kept in memory")
    quote_agreement: bool = Field(False, description="price each block on the proposer's quote set, checked against "
                                                     "this keeper's own read (docs/keeper.md)")
    agreement_wait_s: float = Field(2.0, gt=0, le=30, description="how long to wait for the proposer's quote set")

    @model_validator(mode="after")
    def _unique(self) -> "ExchangeSettings":
        addrs = [p.address for p in self.peers]
        if len(set(addrs)) != len(addrs):
            raise ValueError("two peers share one address")
        names = [p.name for p in self.peers]
        if len(set(names)) != len(names):
            raise ValueError("two peers share one name")
        return self


class ThresholdSettings(_Model):
    """Quorum and scheduling thresholds."""

    quorum: int = Field(1, ge=1, description="M: identical signatures needed before submitting")
    max_staleness_s: float = Field(600.0, gt=0, description="market data older than this is not used")
    settlement_lookahead_s: float = Field(0.0, ge=0)


class MetricsSettings(_Model):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9600, ge=0, le=65535)


class LogSettings(_Model):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class KeeperConfig(_Model):
    """Everything a keeper needs besides its key material."""

    chain: ChainSettings = Field(default_factory=ChainSettings)
    keys: KeySettings = Field(default_factory=KeySettings)
    market: MarketSettings = Field(default_factory=MarketSettings)
    risk: RiskSettings = Field(default_factory=RiskSettings)
    exchange: ExchangeSettings = Field(default_factory=ExchangeSettings)
    thresholds: ThresholdSettings = Field(default_factory=ThresholdSettings)
    publish: PublishSettings = Field(default_factory=PublishSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    logging: LogSettings = Field(default_factory=LogSettings)
    archive_dir: Path = Path("keeper-archive")

    @model_validator(mode="after")
    def _quorum(self) -> "KeeperConfig":
        n = len(self.exchange.peers) + 1
        if self.thresholds.quorum > n:
            raise ValueError(f"thresholds.quorum={self.thresholds.quorum} exceeds the {n} keepers (peers + self)")
        if self.metrics.enabled and self.metrics.port and self.metrics.port == self.exchange.port:
            raise ValueError("metrics.port and exchange.port must differ")
        return self


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = [f"invalid keeper config {source}:"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        value = err.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"  {loc}: {msg}{shown}")
    return "\n".join(lines)


def parse_config(data: Any, *, source: str = "<data>") -> KeeperConfig:
    """Validate a mapping into a :class:`KeeperConfig`; :class:`ConfigError` lists every bad value."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"invalid keeper config {source}: top level must be a mapping, got {type(data).__name__}")
    try:
        return KeeperConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None


def _read(path: Path) -> Any:
    text = path.read_text()
    suffix = path.suffix.lower()
    if suffix == ".json":
        return json.loads(text)
    if suffix in (".yaml", ".yml"):

        return yaml.safe_load(text)
    if suffix == ".toml":
        try:
            import tomllib  # Python >= 3.11
        except ModuleNotFoundError:  # pragma: no cover - Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        return tomllib.loads(text)
    raise ConfigError(f"config file {path}: unknown format {suffix!r} (use .toml, .yaml, .yml or .json)")


def load_config(path: str | Path) -> KeeperConfig:
    """Load and validate the config file at ``path`` (TOML, YAML or JSON by extension).

    Relative paths inside the file (deployment file, keystore, replay files, archive) are resolved against
    the config file's folder.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = _read(p)
    except ConfigError:
        raise
    except Exception as exc:  # parse errors of any of the three formats
        raise ConfigError(f"config file {p}: cannot parse: {exc}") from None
    cfg = parse_config(data, source=str(p))
    return resolve_paths(cfg, p.parent)


def resolve_paths(cfg: KeeperConfig, base: Path) -> KeeperConfig:
    """A copy of ``cfg`` with every relative path made relative to ``base``."""

    def fix(q: Optional[Path]) -> Optional[Path]:
        return None if q is None else (q if q.is_absolute() else (base / q))

    def fix_sources(spot_sources, chain) -> dict:
        return {"spot_sources": None if spot_sources is None else
                [s.model_copy(update={"path": fix(s.path)}) for s in spot_sources],
                "chain": None if chain is None else chain.model_copy(update={"path": fix(chain.path)})}

    market = cfg.market.model_copy(update={
        **fix_sources(cfg.market.spot_sources, cfg.market.chain),
        "assets": {sym: a.model_copy(update=fix_sources(a.spot_sources, a.chain))
                   for sym, a in cfg.market.assets.items()},
    })
    return cfg.model_copy(update={
        "chain": cfg.chain.model_copy(update={"deployment_file": fix(cfg.chain.deployment_file)}),
        "keys": cfg.keys.model_copy(update={"keystore_file": fix(cfg.keys.keystore_file),
                                            "password_file": fix(cfg.keys.password_file)}),
        "market": market,
        "archive_dir": fix(cfg.archive_dir),
    })
