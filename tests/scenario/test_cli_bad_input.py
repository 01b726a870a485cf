"""``backstop verify`` / ``scenario`` / ``liquidator run``: bad input exits non-zero with one readable line."""
from __future__ import annotations

import json

from click.testing import CliRunner

from keeper.chain.local import free_port
from keeper.cli.liquidator import liquidator_main
from keeper.cli.scenario import deploy_cmd, scenario_cmd, verify_cmd


def one_line_failure(result, code=2, contains=""):
    assert result.exit_code == code, result.output
    lines = [x for x in result.output.splitlines() if x.strip()]
    assert len(lines) == 1, result.output
    assert contains in lines[0]
    return lines[0]


def test_verify_bad_inputs(tmp_path):
    r = CliRunner()
    one_line_failure(r.invoke(verify_cmd, []), contains="exactly one of --account or --auction")
    one_line_failure(r.invoke(verify_cmd, ["--account", "0x12"]), contains="not an address")
    one_line_failure(r.invoke(verify_cmd, ["--auction", "1", "--deployment", str(tmp_path / "none.json")]),
                     contains="cannot read deployment file")
    dep = tmp_path / "dep.json"
    dep.write_text(json.dumps({"clearinghouse": "0x" + "11" * 20, "auction": "0x" + "22" * 20, "chain_id": 31337,
                               "block": 1, "abi": {"clearinghouse": [], "auction": []}}))
    one_line_failure(r.invoke(verify_cmd, ["--auction", "1", "--deployment", str(dep), "--rpc",
                                           f"http://127.0.0.1:{free_port()}"]), contains="no node answers")


def test_scenario_bad_inputs():
    r = CliRunner()
    one_line_failure(r.invoke(scenario_cmd, ["--jump", "-1.5", "--no-live"]), contains="jump")
    one_line_failure(r.invoke(scenario_cmd, ["--crash-step", "99", "--no-live"]), contains="crash_step")
    one_line_failure(r.invoke(scenario_cmd, ["--auction-floor", "1", "--no-live"]), contains="--auction-floor")
    one_line_failure(r.invoke(scenario_cmd, ["--fund-seed", "-5", "--no-live"]), contains="--fund-seed")
    one_line_failure(r.invoke(scenario_cmd, ["--replay", "NO_SUCH_CRASH", "--no-live", "--shared-data", "/nonexistent"]),
                     contains="not found")


def test_deploy_bad_auction_parameters():
    """Out-of-range auction parameters are refused before any chain is started or contract deployed."""
    r = CliRunner()
    rpc = ["--rpc", f"http://127.0.0.1:{free_port()}"]
    one_line_failure(r.invoke(deploy_cmd, rpc + ["--auction-floor", "1.0"]), contains="--auction-floor")
    one_line_failure(r.invoke(deploy_cmd, rpc + ["--auction-floor", "-0.1"]), contains="--auction-floor")
    # below the contract's MIN_CUSP, and a curve that would reach its floor within MIN_DESCENT
    one_line_failure(r.invoke(deploy_cmd, rpc + ["--auction-floor", "0.05"]), contains="--auction-floor")
    one_line_failure(r.invoke(deploy_cmd, rpc + ["--auction-tau", "400", "--auction-floor", "0.4"]),
                     contains="MIN_DESCENT")
    one_line_failure(r.invoke(deploy_cmd, rpc + ["--auction-tau", "0"]), contains="--auction-tau")


def test_liquidator_bad_inputs(tmp_path, monkeypatch):
    r = CliRunner()
    monkeypatch.delenv("BACKSTOP_LIQUIDATOR_KEY", raising=False)
    one_line_failure(r.invoke(liquidator_main, ["run"]), contains="no private key")
    monkeypatch.setenv("BACKSTOP_LIQUIDATOR_KEY", "0x" + "01" * 32)
    one_line_failure(r.invoke(liquidator_main, ["run", "--deployment", str(tmp_path / "x.json")]),
                     contains="deployment file not found")
