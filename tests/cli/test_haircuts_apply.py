"""``backstop haircuts recommend|apply`` on a real Anvil with the production deployment (keeper.chain.deploy: the
BackstopTimelock owns the Clearinghouse with a 2-day delay; the deployer is risk admin and timelock proposer).

The keepers attest 15 daily prices of WETH and WBTC (real EIP-712 signatures, 2 of 3); the recommendation is
recomputed here independently (EWMA by scipy's lfilter, the closed form, rounded up to a basis point) and compared
with what the command prints and with what the chain holds after ``apply``: a raise acts at once (read back), a
lowering is only scheduled and takes effect after the delay (evm_increaseTime), and the risk admin's key cannot lower
directly (``CH_OnlyTightening``). Bad input exits 2 with one line."""
from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest
from click.testing import CliRunner
from eth_account import Account
from scipy.signal import lfilter

from keeper.chain.client import make_web3
from keeper.chain.deploy import CollateralSpec, DeployConfig, SeriesPlan, clearinghouse_abi, deploy, derive_keys
from keeper.chain.local import ensure_chain, free_port
from keeper.chain.sender import Sender
from keeper.cli.main import main
from keeper.codec import eip712
from keeper.errors import TxFailed
from keeper.ops import signing

WAD = 10**18
DAY = 86_400
DELAY = 2 * DAY
# daily paths the keepers attest (WBTC: calm; WETH: wild), 15 days
WBTC_PATH = [40_000 * math.exp(0.02 * math.sin(i)) for i in range(15)]
WETH_PATH = [2_000 * math.exp(0.09 * (-1) ** i + 0.01 * i) for i in range(15)]
DEPTH = {"WETH": 50_000.0, "WBTC": 1e7}  # WETH: cap 100,000 over 50,000/day; WBTC: cap 5,000, deep market


def _expected_wad(path, cap, depth) -> int:
    r = np.diff(np.log(path))
    var0 = np.mean(r[:30] ** 2)
    var, _ = lfilter([0.06], [1, -0.94], r ** 2, zi=[0.94 * var0])
    sigma = math.sqrt(var[-1])
    ratio = cap / depth
    h = min(max(1 - math.exp(-2.33 * sigma * math.sqrt(1 + ratio)) + 0.1 * math.sqrt(ratio), 0.0), 0.9)
    bp = math.ceil(Fraction(h) * 10_000 - Fraction(1, 10**6))
    return bp * 10**14


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("haircuts")
    lc = ensure_chain(f"http://127.0.0.1:{free_port()}", backend="anvil", accounts=10, log_dir=tmp)
    try:
        w3 = make_web3(lc.url, timeout=30)
        keys = derive_keys(lc.mnemonic, 4)
        cfg = DeployConfig(n_keepers=3, threshold=2, spot0=2000.0,
                           collateral=(CollateralSpec("WETH", 18, 0.15, 100_000, 2000.0),
                                       CollateralSpec("WBTC", 8, 0.10, 5_000, 40_000.0)),
                           series=(SeriesPlan(1.0, 30.0, False),), fund_seed=0.0, governance_delay=DELAY)
        res = deploy(w3, keys[0], [Account.from_key(k).address for k in keys[1:4]], cfg, rpc_url=lc.url,
                     deployment_file=tmp / "deployment.json")
        ch = w3.eth.contract(address=res.clearinghouse, abi=clearinghouse_abi())
        domain = eip712.Domain(int(w3.eth.chain_id), res.clearinghouse)
        weth, wbtc = res.tokens["WETH"]["address"], res.tokens["WBTC"]["address"]
        poster = Sender(w3, keys[0])
        seq = int(ch.functions.lastPriceAttestation().call()[0])
        for i, (pe, pb) in enumerate(zip(WETH_PATH, WBTC_PATH)):
            w3.provider.make_request("evm_increaseTime", [DAY])
            w3.provider.make_request("evm_mine", [])
            ts = int(w3.eth.get_block("latest")["timestamp"])
            prices = [int(Fraction(pe) * WAD), int(Fraction(pb) * WAD)]
            seq += 1
            typed = eip712.prices_typed_data(domain, [weth, wbtc], prices, seq, ts)
            poster.call(ch.functions.postPrices([weth, wbtc], prices, seq, ts,
                                                signing.sign_attestation(typed, keys[1:3])), "postPrices")
        yield {"w3": w3, "ch": ch, "res": res, "keys": keys, "dep": str(tmp / "deployment.json"), "url": lc.url,
               "weth": weth, "wbtc": wbtc}
    finally:
        lc.stop()


def _args(net, *extra):
    return [*extra, "--deployment", net["dep"], "--rpc", net["url"],
            "--depth", f"WETH={DEPTH['WETH']}", "--depth", f"WBTC={DEPTH['WBTC']}"]


def _haircut(net, asset) -> int:
    return int(net["ch"].functions.assetConfig(asset).call()[2])


@pytest.mark.chain
def test_recommend_apply_raise_at_once_lower_after_the_delay(net, monkeypatch):
    runner = CliRunner()
    want = {"WETH": _expected_wad(WETH_PATH, 100_000, DEPTH["WETH"]),
            "WBTC": _expected_wad(WBTC_PATH, 5_000, DEPTH["WBTC"])}
    assert want["WETH"] > int(0.15 * WAD) and want["WBTC"] < int(0.10 * WAD)  # one raise, one lowering
    out = runner.invoke(main, ["haircuts", "recommend", *_args(net, "--json")])
    assert out.exit_code == 0, out.output
    recs = {r["asset"]: r for r in json.loads(out.output)}
    assert {a: recs[a]["recommended_wad"] for a in recs} == want
    assert recs["WETH"]["listed_wad"] == int(0.15 * WAD) and recs["WETH"]["action"] == "raise"
    assert recs["WBTC"]["listed_wad"] == int(0.10 * WAD) and recs["WBTC"]["action"] == "lower"
    table = runner.invoke(main, ["haircuts", "recommend", *_args(net)]).output.splitlines()
    assert any(l.startswith("WETH") and "15.00%" in l and l.endswith("raise") for l in table)

    # the risk admin's key cannot lower directly
    admin = Sender(net["w3"], net["keys"][0])
    cap = int(net["ch"].functions.assetConfig(net["wbtc"]).call()[3])
    with pytest.raises(TxFailed, match=r"CH_OnlyTightening\("):
        admin.call(net["ch"].functions.setCollateralParams(net["wbtc"], want["WBTC"], cap), "lower directly")

    monkeypatch.setenv("BACKSTOP_RISK_ADMIN_KEY", net["keys"][0])
    out = runner.invoke(main, ["haircuts", "apply", *_args(net, "--json")])
    assert out.exit_code == 0, out.output
    done = {d["symbol"]: d for d in json.loads(out.output)}
    assert done["WETH"]["outcome"] == "raised" and _haircut(net, net["weth"]) == want["WETH"]  # at once
    assert done["WBTC"]["outcome"] == "scheduled" and _haircut(net, net["wbtc"]) == int(0.10 * WAD)
    now = int(net["w3"].eth.get_block("latest")["timestamp"])
    assert now + DELAY - 2 <= done["WBTC"]["eta"] <= now + DELAY

    # again before the delay: nothing changes
    out = runner.invoke(main, ["haircuts", "apply", *_args(net, "--json")])
    again = {d["symbol"]: d["outcome"] for d in json.loads(out.output)}
    assert again == {"WETH": "kept", "WBTC": "pending"} and _haircut(net, net["wbtc"]) == int(0.10 * WAD)

    # after the delay: the ready lowering is executed
    net["w3"].provider.make_request("evm_increaseTime", [DELAY])
    net["w3"].provider.make_request("evm_mine", [])
    out = runner.invoke(main, ["haircuts", "apply", *_args(net)])
    assert out.exit_code == 0, out.output
    assert "WBTC: executed 10.00% ->" in out.output
    assert _haircut(net, net["wbtc"]) == want["WBTC"] and _haircut(net, net["weth"]) == want["WETH"]


@pytest.mark.chain
@pytest.mark.parametrize("argv, message", [
    (["--depth", "WETH=2000"], "missing: WBTC"),
    (["--depth", "WETH=2000", "--depth", "WBTC=-5"], "--depth WBTC: must be a positive number"),
    (["--depth", "WETH=2000", "--depth", "WBTC=lots"], "--depth WBTC: not a number"),
    (["--depth", "WETH=2000", "--depth", "WBTC=1", "--depth", "DOGE=3"], "not listed collateral"),
    (["--depth", "WETH", "--depth", "WBTC=1"], "--depth takes SYMBOL=VALUE"),
    (["--depth", "WETH=2000", "--depth", "WBTC=1", "--closes", "WETH=/nonexistent.csv"], "file not found"),
])
def test_bad_input_exits_2_with_one_line(net, argv, message):
    out = CliRunner().invoke(main, ["haircuts", "recommend", "--deployment", net["dep"], "--rpc", net["url"], *argv])
    assert out.exit_code == 2
    lines = out.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("backstop haircuts: ") and message in lines[0]


@pytest.mark.chain
def test_apply_without_the_key_exits_2(net, monkeypatch):
    monkeypatch.delenv("BACKSTOP_RISK_ADMIN_KEY", raising=False)
    out = CliRunner().invoke(main, ["haircuts", "apply", *_args(net)])
    assert out.exit_code == 2 and out.output.strip() == \
        "backstop haircuts: environment variable BACKSTOP_RISK_ADMIN_KEY is not set"
