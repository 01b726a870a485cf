"""The solvency index's EIP-712 encoding (keeper/codec/eip712.py) against a second construction: the struct hash by
hand from the type string and eth_abi, the rounding of every field in its stated direction, the MarginRoot type
carrying ``solvencyHash``, and the "no figures" index."""
import math

import pytest
from eth_abi import encode
from eth_utils import keccak

from keeper.codec import eip712
from keeper.quant.risk.solvency import SolvencyIndex

TYPE = ("SolvencyIndex(int128 totalEquity,uint128 totalMaintenance,uint128 totalInitial,uint128 shortfallNow,"
        "uint128 shortfallVar99,uint128 shortfallEs975,uint128 fund,int128 excludedEquity,uint32 accounts,"
        "uint32 excludedAccounts)")
ROOT_TYPE = ("MarginRoot(bytes32 root,bytes32 inputsHash,uint64 sequence,uint64 timestamp,uint32 leafCount,"
             "bytes32 solvencyHash)")


def _index(**kw):
    d = dict(total_equity=-0.0000015, total_maintenance=0.0000011, total_initial=2.5, shortfall_now=0.0,
             shortfall_var99=1e-7, shortfall_es975=3.0000001, fund=7.9999999, coverage=math.inf, accounts=4,
             excluded_accounts=1, excluded_equity=0.0000019)
    d.update(kw)
    return SolvencyIndex(**d)


def test_rounding_is_against_the_protocol_field_by_field():
    t = eip712.solvency_index_tuple(_index(), 6)
    # equity, fund, excluded equity down; margins and shortfalls up
    assert t == (-2, 2, 2_500_000, 0, 1, 3_000_001, 7_999_999, 1, 4, 1)


def test_an_amount_read_in_base_units_is_signed_exactly():
    """The fund is read from chain in base units and enters the float engine divided by 10^6; the signed figure is
    the chain's integer again, not one unit less (50177.692563 is 50177.69256299999... as a float)."""
    fund = 50_177_692_563
    t = eip712.solvency_index_tuple(_index(fund=fund / 10**6, shortfall_es975=fund / 10**6), 6)
    assert t[6] == fund and t[5] == fund


def test_struct_hashes_by_hand():
    t = eip712.solvency_index_tuple(_index(), 6)
    types = ["int128", "uint128", "uint128", "uint128", "uint128", "uint128", "uint128", "int128", "uint32", "uint32"]
    sh = keccak(keccak(text=TYPE) + encode(types, list(t)))
    assert eip712.solvency_struct_hash(t) == sh
    root, ih = b"\x05" * 32, b"\x06" * 32
    want = keccak(keccak(text=ROOT_TYPE) + encode(["bytes32", "bytes32", "uint64", "uint64", "uint32", "bytes32"],
                                                  [root, ih, 9, 1000, 3, sh]))
    assert eip712.margin_root_struct_hash(root, ih, 9, 1000, 3, sh) == want


def test_bounds_and_the_no_figures_index():
    with pytest.raises(ValueError, match="outside int128"):
        eip712.solvency_index_tuple(_index(total_equity=-2.0**128), 0)
    with pytest.raises(ValueError, match="outside uint128"):
        eip712.solvency_index_tuple(_index(shortfall_now=-1.5), 0)
    assert eip712.unavailable_solvency(7) == (0,) * 9 + (7,)
    assert eip712.solvency_index_from(eip712.solvency_index_dict((1, 2, 3, 4, 5, 6, 7, 8, 9, 10))) == tuple(range(1, 11))
