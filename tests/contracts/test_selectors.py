"""The Clearinghouse's two halves and its one ABI, checked on the compiled artifacts.

A Clearinghouse address runs two codes on one storage: ``Clearinghouse`` (hot paths) dispatches its own selectors and
sends every other call through its fallback to ``ClearinghouseAdmin`` by delegatecall. A selector compiled into both
halves is answered by the Clearinghouse's code and the admin's never runs, so the two must not both *declare* a
function: the only selectors they may share are those they both inherit from ``ClearinghouseBase`` (the same code
on the same storage, e.g. ``owner()``). ``IClearinghouse`` is the one ABI clients load; it must name exactly the
functions, events and errors of the two halves together. ``ILiquidationAuction`` is implemented by the auction (the
compiler checks its functions exist); what it leaves out is exactly the owner and pause entry points the auction
inherits. Error names carry their owner's prefix (docs/contracts.md, "Errors"), one signature per name, so Python can
match reverts by name across both ABIs.

The artifacts are those of the project brownie loaded for this run (compiled from the current sources).
"""
from __future__ import annotations

import re

import pytest
from brownie import project
from eth_utils import keccak

#: owner prefixes of the protocol's custom errors (docs/contracts.md); anything else must come from OpenZeppelin
PREFIXES = ("KS_", "AO_", "CH_", "EP_", "LA_", "IF_", "AC_")
OPENZEPPELIN_ERRORS = {"OwnableUnauthorizedAccount", "OwnableInvalidOwner", "ReentrancyGuardReentrantCall",
                       "SafeERC20FailedOperation", "SafeCastOverflowedUintDowncast", "SafeCastOverflowedIntDowncast",
                       "SafeCastOverflowedUintToInt", "MerkleProofInvalidMultiproof", "StringTooLong",
                       "InvalidShortString"}


def _type(param: dict) -> str:
    if param["type"].startswith("tuple"):
        return "(" + ",".join(_type(c) for c in param["components"]) + ")" + param["type"][len("tuple"):]
    return param["type"]


def signatures(name: str, kind: str) -> dict[str, str]:
    """``{signature: 0x selector}`` of the ``kind`` items (function, event, error) in artifact ``name``'s ABI."""
    abi = project.get_loaded_projects()[0]._build.get(name)["abi"]
    out = {}
    for item in abi:
        if item["type"] == kind:
            sig = f"{item['name']}({','.join(_type(p) for p in item['inputs'])})"
            out[sig] = "0x" + keccak(text=sig)[:4].hex()
    return out


def selectors(name: str) -> dict[str, str]:
    """``{0x selector: function signature}`` of artifact ``name``."""
    return {sel: sig for sig, sel in signatures(name, "function").items()}


def test_the_two_halves_declare_disjoint_functions():
    core, admin, shared = selectors("Clearinghouse"), selectors("ClearinghouseAdmin"), selectors("ClearinghouseBase")
    both = core.keys() & admin.keys()
    # what both answer is exactly what both inherit: the same code on the same storage, never one shadowing another
    assert both == shared.keys(), sorted(core[s] for s in both ^ shared.keys())
    own_core, own_admin = core.keys() - shared.keys(), admin.keys() - shared.keys()
    assert not own_core & admin.keys() and not own_admin & core.keys()
    # the hot paths are the core's own; hashTypedData (off-chain digests only) moved to the admin half with H-10's
    # fix, for code size (until cda688d both declared it: the admin's was shadowed, never run)
    for sig in ("trade((address,uint256,int256,uint256,uint256,uint64),bytes,"
                "((bytes32,uint64,uint64,uint32),(address,uint32,int256,uint256,uint256,int256),bytes32[]),"
                "((bytes32,uint64,uint64,uint32),(address,uint32,int256,uint256,uint256,int256),bytes32[]))",
                "recordClaim(address,address,uint256,int256)", "marginRecord(address)"):
        sel = "0x" + keccak(text=sig)[:4].hex()
        assert sel in own_core and sel not in admin, sig
    for sig in ("settleClaim(address)", "setKeeperSet(address[],uint8)", "fallbackMargin(address)",
                "hashTypedData(bytes32)"):
        sel = "0x" + keccak(text=sig)[:4].hex()
        assert sel in own_admin and sel not in core, sig
    print(f"\nselectors: Clearinghouse {len(own_core)} own, ClearinghouseAdmin {len(own_admin)} own, "
          f"{len(shared)} inherited by both")


@pytest.mark.parametrize("kind", ["function", "event", "error"])
def test_iclearinghouse_is_the_whole_api_of_both_halves(kind):
    halves = signatures("Clearinghouse", kind) | signatures("ClearinghouseAdmin", kind)
    api = signatures("IClearinghouse", kind)
    assert sorted(api.keys() - halves.keys()) == [], "declared in IClearinghouse but by neither half"
    assert sorted(halves.keys() - api.keys()) == [], "in a half's ABI but missing from IClearinghouse"
    assert len(api) == {"function": 96, "event": 36, "error": 72}[kind]  # + solvencyIndex (issue 16)


@pytest.mark.parametrize("kind", ["function", "event", "error"])
def test_iliquidationauction_is_the_auctions_own_api(kind):
    auction, api = signatures("LiquidationAuction", kind), signatures("ILiquidationAuction", kind)
    assert api.keys() <= auction.keys()
    # what the interface leaves out: the inherited owner and pause entry points, the curve library's and
    # OpenZeppelin's errors
    inherited = signatures("Ownable2Step", kind) | signatures("ExpiringPause", kind)
    rest = auction.keys() - api.keys() - inherited.keys()
    names = {s.split("(")[0] for s in rest}
    if kind == "error":
        assert names == {"AC_InvalidCurve", "AC_PriceOutOfRange", "ReentrancyGuardReentrantCall",
                         "SafeCastOverflowedUintDowncast", "SafeCastOverflowedUintToInt", "SafeERC20FailedOperation"}
    else:
        assert names == set()


def test_error_names_carry_their_owner_and_one_signature_each():
    errors = signatures("IClearinghouse", "error") | signatures("LiquidationAuction", "error")
    by_name: dict[str, set[str]] = {}
    for sig in errors:
        by_name.setdefault(sig.split("(")[0], set()).add(sig)
    assert {n: s for n, s in by_name.items() if len(s) > 1} == {}
    unprefixed = {n for n in by_name if not n.startswith(PREFIXES)}
    assert unprefixed == OPENZEPPELIN_ERRORS
    prefixes = {re.match(r"[A-Z]+_", n).group(0) for n in by_name if n not in OPENZEPPELIN_ERRORS}
    assert prefixes == set(PREFIXES)
