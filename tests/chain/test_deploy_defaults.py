"""`backstop deploy` and `DeployConfig` deploy the auction design the backtest chose (docs/risk-efficacy.md, issue 14)
by default: floor 0.1, span 0.10 x MM, the buyer of last resort after one reset, and a fund's account (the deployer's
address unless the deployer names another, or none). Bad values exit with one line before any chain is touched; a
real `backstop deploy` on Anvil leaves the contract configured that way (read back from the chain)."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from eth_account import Account
from eth_utils import to_checksum_address

from keeper.chain.deploy import (
    CHOSEN_AUCTION,
    EARLIER_AUCTION,
    DeployConfig,
    auction_config_tuple,
    derive_keys,
    resolve_fund_account,
)
from keeper.chain.local import DEFAULT_MNEMONIC, ensure_chain, free_port
from keeper.cli.scenario import deploy_cmd
from keeper.errors import DeployError

WAD = 10**18
OWNER = "0x" + "ab" * 20


def test_defaults_are_the_chosen_design():
    cfg = DeployConfig()
    assert {k: getattr(cfg, k) for k in CHOSEN_AUCTION} == CHOSEN_AUCTION
    assert cfg.fund_account == "owner"
    t = auction_config_tuple(cfg)
    # Config(kind, tau, step, cut, tail, cuspWad, bufferWad, penaltyWad, chipWad, tip, maxRecordAge, spanWad, lastResortAfter)
    assert (t[5], t[11], t[12]) == (WAD // 10, WAD // 10, 1)
    old = auction_config_tuple(DeployConfig(**EARLIER_AUCTION))
    assert (old[5], old[11]) == (4 * WAD // 10, WAD)


def test_fund_account_names():
    assert resolve_fund_account("owner", OWNER) == resolve_fund_account("OWNER", OWNER) == to_checksum_address(OWNER)
    assert resolve_fund_account(None, OWNER) == resolve_fund_account("none", OWNER) == ""
    other = "0x" + "cd" * 20
    assert resolve_fund_account(other, OWNER).lower() == other
    for bad, msg in (("treasury", "give 'owner', 'none' or a 0x address"), ("0x" + "00" * 20, "not the zero"),
                     (other, "not the zero address or the auction module")):
        with pytest.raises(DeployError, match=msg):
            resolve_fund_account(bad, OWNER, auction=other if bad == other else "")


@pytest.mark.parametrize("args, msg", [
    (["--fund-account", "treasury"], "fund account 'treasury'"),
    (["--auction-span", "0"], "--auction-span must be in (0, 1]"),
    (["--last-resort-after", "17"], "--last-resort-after must be in [0, 16]"),
    (["--auction-floor", "0.05"], "--auction-floor must be in [0.1, 1)"),
])
def test_bad_deploy_options_exit_2_with_one_line(args, msg, tmp_path):
    # a port nobody listens on: the checks must fail before any chain is started or contacted
    r = CliRunner().invoke(deploy_cmd, ["--rpc", f"http://127.0.0.1:{free_port()}", "--out",
                                        str(tmp_path / "d.json"), *args])
    assert r.exit_code == 2 and msg in r.output, r.output
    assert not (tmp_path / "d.json").exists()


@pytest.mark.chain
def test_backstop_deploy_configures_the_chosen_design_and_the_fund_account(tmp_path):
    chain = ensure_chain(f"http://127.0.0.1:{free_port()}", "anvil", accounts=6, log_dir=tmp_path)
    try:
        out = tmp_path / "deployment.json"
        named = Account.from_key(derive_keys(DEFAULT_MNEMONIC, 6)[5]).address  # a dedicated key's address
        r = CliRunner().invoke(deploy_cmd, ["--rpc", chain.url, "--out", str(out), "--fund-account", named])
        assert r.exit_code == 0, r.output
        dep = json.loads(out.read_text())
        full = json.loads(out.with_name("deployment.full.json").read_text())
        from keeper.chain.client import make_web3

        w3 = make_web3(chain.url, timeout=30)
        auction = w3.eth.contract(address=dep["auction"], abi=dep["abi"]["auction"])
        comps = next(i for i in auction.abi if i.get("name") == "config")["outputs"][0]["components"]
        c = dict(zip([x["name"] for x in comps], auction.functions.config().call()))
        assert (c["cuspWad"], c["spanWad"], c["lastResortAfter"]) == (WAD // 10, WAD // 10, 1)
        assert auction.functions.fundAccount().call() == named == full["fund_account"]
        assert [e["args"]["fundAccount"] for e in auction.events.FundAccountSet().get_logs(from_block=0)] == [named]
        assert full["params"]["auction_span"] == 0.10 and full["params"]["last_resort_after"] == 1
        assert f"fund's account {named}" in r.output
        # the default: the deployer's address
        out2 = tmp_path / "d2.json"
        r = CliRunner().invoke(deploy_cmd, ["--rpc", chain.url, "--out", str(out2)])
        assert r.exit_code == 0, r.output
        dep2 = json.loads(out2.read_text())
        auction2 = w3.eth.contract(address=dep2["auction"], abi=dep2["abi"]["auction"])
        deployer = Account.from_key(derive_keys(DEFAULT_MNEMONIC, 1)[0]).address
        assert auction2.functions.fundAccount().call() == deployer
    finally:
        chain.stop()
