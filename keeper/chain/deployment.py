"""The deployment file the bots read, and the contract ABIs (from it or from brownie's build folder).

Deployment file (JSON, written by the deploy step, schema ``backstop-deployment/1``)::

    {
      "schema": "backstop-deployment/1",
      "chain_id": 31337,                 # must match eth_chainId of the RPC
      "block": 12,                       # a block at which the deployment exists (the deploy step's last);
                                         # event scans start at the clearinghouse's creation block, found by
                                         # binary search on eth_getCode below this one
      "clearinghouse": "0x...",          # the Clearinghouse (EIP-712 verifying contract)
      "auction": "0x..." | null,         # liquidation auction module, when deployed
      "quote_asset": "0x...",            # the one quote asset (values are in its base units)
      "underlyings": {"ETH": "0x..."},   # symbol -> asset address the keepers price (Prices.assets)
      "collateral": {"WETH": "0x..."},   # listed collateral tokens (informational)
      "abi": {"clearinghouse": [...], "auction": [...]}   # optional; else read from build/ artifacts
    }
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Optional, TypeVar

from eth_utils import is_address, to_checksum_address
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from keeper.errors import ConfigError

T = TypeVar("T")
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENT_SCHEMA = "backstop-deployment/1"


# ------------------------------------------------------------------------------------------------------------
# Deployment file
# ------------------------------------------------------------------------------------------------------------
def _addr(v: Any) -> str:

    if not isinstance(v, str) or not is_address(v):
        raise ValueError("not an Ethereum address")
    return to_checksum_address(v)


class Deployment(BaseModel):
    """What the deploy step wrote: addresses, chain id and deployment block (see module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_: Literal["backstop-deployment/1"] = Field(DEPLOYMENT_SCHEMA, alias="schema")
    chain_id: int = Field(gt=0)
    block: int = Field(ge=0)
    clearinghouse: str
    auction: Optional[str] = None
    quote_asset: str
    underlyings: dict[str, str] = Field(default_factory=dict)
    collateral: dict[str, str] = Field(default_factory=dict)
    abi: dict[str, list] = Field(default_factory=dict)

    @field_validator("clearinghouse", "quote_asset")
    @classmethod
    def _a(cls, v: str) -> str:
        return _addr(v)

    @field_validator("auction")
    @classmethod
    def _oa(cls, v: Optional[str]) -> Optional[str]:
        return None if v is None else _addr(v)

    @field_validator("underlyings", "collateral")
    @classmethod
    def _m(cls, v: dict[str, str]) -> dict[str, str]:
        return {k: _addr(a) for k, a in v.items()}

    def to_json(self) -> str:
        return json.dumps(self.model_dump(by_alias=True), indent=2, sort_keys=True)


def load_deployment(path: str | Path) -> Deployment:
    """Read and validate a deployment file; :class:`ConfigError` names each bad field."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"deployment file not found: {p} (run the deploy step first)") from None
    except ValueError as exc:
        raise ConfigError(f"deployment file {p} is not valid JSON: {exc}") from None
    try:
        return Deployment.model_validate(data)
    except ValidationError as exc:
        lines = [f"invalid deployment file {p}:"]
        for e in exc.errors():
            lines.append(f"  {'.'.join(str(x) for x in e['loc']) or '(top level)'}: "
                         f"{e['msg'].removeprefix('Value error, ')}")
        raise ConfigError("\n".join(lines)) from None


def write_deployment(path: str | Path, deployment: Deployment) -> None:
    """Write ``deployment`` as JSON (atomically)."""
    p = Path(path)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(deployment.to_json())
    tmp.replace(p)


def load_abi(name: str, deployment: Optional[Deployment] = None, build_dir: Optional[Path] = None) -> list:
    """ABI of ``name`` (``clearinghouse`` or ``auction``): from the deployment file, else brownie's build folder.
    The Clearinghouse's is ``IClearinghouse``: the one interface that declares both halves' functions, events and
    errors (tests/contracts/test_selectors.py checks it against the compiled halves)."""
    if deployment is not None and name in deployment.abi:
        return deployment.abi[name]
    build = build_dir or PROJECT_ROOT / "build"
    contract = {"clearinghouse": "IClearinghouse", "auction": "LiquidationAuction"}.get(name, name)
    f = build / "contracts" / f"{contract}.json"
    if f.is_file():
        return json.loads(f.read_text())["abi"]
    raise ConfigError(f"no ABI for {name!r}: not in the deployment file and not under {build}")


