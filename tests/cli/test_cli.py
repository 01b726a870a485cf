"""Console scripts: readable exit-2 errors, `keeper status` against a real HTTP API, a real `keeper run` process."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from eth_account import Account

from keeper.cli.keeper import keeper_main
from keeper.cli.main import main
from keeper.exchange.server import ExchangeServer, KeeperView
from keeper.exchange.book import SignatureBook
from keeper.exchange.codec import TypedDataCodec

ROOT = Path(__file__).resolve().parents[2]


def test_bad_config_exits_2_naming_each_value(tmp_path):
    f = tmp_path / "k.toml"
    f.write_text('[chain]\nrpc_url = "nope"\n[exchange]\nport = -1\n')
    r = CliRunner().invoke(keeper_main, ["run", "--config", str(f)])
    assert r.exit_code == 2
    assert "chain.rpc_url" in r.output and "exchange.port" in r.output


def test_missing_key_exits_2_and_never_prints_key(tmp_path, monkeypatch):
    f = tmp_path / "k.toml"
    f.write_text('[keys]\nenv_var = "NO_SUCH_KEY_VAR"\n')
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    r = CliRunner().invoke(keeper_main, ["run", "--config", str(f)])
    assert r.exit_code == 2 and "NO_SUCH_KEY_VAR is not set" in r.output
    pk = Account.create().key.hex()
    monkeypatch.setenv("BACKSTOP_KEEPER_KEY", pk)
    monkeypatch.setenv("BACKSTOP_KEYSTORE_PASSWORD", "pw")
    r = CliRunner().invoke(keeper_main, ["keystore", "--out", str(tmp_path / "ks.json")])
    assert r.exit_code == 0 and r.output.strip() == Account.from_key(pk).address
    assert pk.removeprefix("0x") not in r.output


def test_status_renders_the_keepers_view():
    view = KeeperView("0x" + "11" * 20)
    view.update_status(block=123, spot=1987.25, rpc="up", accounts=3, breaches=[], root="0x" + "ab" * 32,
                       surface={"slices": 3, "hash": "0x" + "cd" * 32, "fit": {"max_rmse_vol_pts": 0.5}},
                       near_margin=[{"account": "0x" + "22" * 20, "equity": 105, "maintenance": 100, "initial": 150}],
                       peers={"k1": True, "k2": False})
    srv = ExchangeServer(SignatureBook(TypedDataCodec(1, "0x" + "ab" * 20), []), view, port=0).start()
    try:
        r = CliRunner().invoke(keeper_main, ["status", "--url", srv.url], terminal_width=200)
        assert r.exit_code == 0, r.output
        assert "1987.25" in r.output and "123" in r.output and "0x2222" in r.output
        assert "down" in r.output and "3 slices" in r.output
        r = CliRunner().invoke(keeper_main, ["status", "--url", srv.url, "--json"])
        assert json.loads(r.output)["block"] == 123
    finally:
        srv.stop()
    r = CliRunner().invoke(keeper_main, ["status", "--url", srv.url])
    assert r.exit_code == 2 and "cannot reach" in r.output


def test_status_shows_assets_and_the_solvency_index():
    from keeper.quant.risk.solvency import SolvencyIndex

    idx = SolvencyIndex(total_equity=123456.5, total_maintenance=2345.25, total_initial=3517.875, shortfall_now=0.0,
                        shortfall_var99=812.5, shortfall_es975=1625.0, fund=50_000.0, coverage=50_000.0 / 1625.0,
                        accounts=7, excluded_accounts=2, excluded_equity=99.5,
                        excluded_reasons={"market_data_rejected": 2})
    view = KeeperView("0x" + "11" * 20)
    view.update_status(block=9, solvency=idx.to_json(), assets={
        "WETH": {"spot": 2000.0, "spot_sources": ["eth-file"], "rejected": None, "fallback": None,
                 "surface": {"slices": 3, "hash": "0x" + "cd" * 32}},
        "WBTC": {"spot": 41000.0, "spot_sources": [], "rejected": "too_few_sources",
                 "fallback": {"reason": "too_few_sources", "since_block": 8, "source_block": 7,
                              "shock_widening": 0.5}}})
    srv = ExchangeServer(SignatureBook(TypedDataCodec(1, "0x" + "ab" * 20), []), view, port=0).start()
    try:
        r = CliRunner().invoke(keeper_main, ["status", "--url", srv.url], env={"COLUMNS": "220"})
        assert r.exit_code == 0, r.output
        for text in ("solvency index", "123,456.50", "2,345.25 / 3,517.88", "812.50 / 1,625.00", "50,000.00",
                     "30.77x", "market_data_rejected: 2", "WBTC", "fallback: too_few_sources", "41000.0"):
            assert text in r.output, text
        assert json.loads(CliRunner().invoke(keeper_main, ["status", "--url", srv.url, "--json"]).output)[
            "solvency"]["shortfall_es975"] == 1625.0
    finally:
        srv.stop()


def test_backstop_group_lists_plugin_commands():
    r = CliRunner().invoke(main, ["--help"])
    assert r.exit_code == 0
    for name in ("keeper", "liquidator", "deploy", "scenario", "verify"):
        assert name in r.output


@pytest.mark.chain
def test_keeper_run_process_serves_api_and_stops_on_sigterm(tmp_path):
    import harness as h

    net = h.start_net(tmp_path)
    try:
        h.setup_book(net)
        spot = tmp_path / "spot.json"
        h.write_spot(spot, 2000.0)
        port, mport = h.free_ports(2)
        cfg = h.keeper_config(net, 0, [port, 1, 2], spot).model_dump(mode="json")
        cfg["metrics"] = {"enabled": True, "port": mport}
        cfg["thresholds"]["quorum"] = 1
        cfg["exchange"]["peers"] = []
        cfile = tmp_path / "keeper.json"
        cfile.write_text(json.dumps(cfg))
        env = dict(os.environ, BACKSTOP_KEEPER_KEY=net.keeper_keys[0])
        proc = subprocess.Popen([sys.executable, "-c", "from keeper.cli.keeper import keeper_main; keeper_main()", "run",
                                 "--config", str(cfile)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            b = net.mine()

            def status():
                try:
                    st = requests.get(f"http://127.0.0.1:{port}/status", timeout=1).json()
                except requests.RequestException:
                    return None
                # the cycle publishes root and accounts before spot and surface (its last status update): wait for
                # the whole view, not just the root
                return (st if st.get("block") is not None and st["block"] >= b and st.get("root") and st.get("surface")
                        else None)

            st = h.wait_for(status, 60, 0.2)
            if st is None:
                proc.send_signal(signal.SIGTERM)
                out, err = proc.communicate(timeout=20)
                pytest.fail(f"no status from the keeper process (exit {proc.returncode}): {err[-2000:]}")
            assert st["accounts"] == 3 and st["spot"] == 2000.0
            metrics = requests.get(f"http://127.0.0.1:{mport}/metrics", timeout=2).text
            assert "backstop_keeper_last_block" in metrics and "backstop_keeper_cycle_seconds_bucket" in metrics
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err[-2000:]
        assert net.keeper_keys[0].removeprefix("0x") not in err + out  # the key is never logged
        events = [json.loads(line)["event"] for line in err.splitlines() if line.startswith("{")]
        assert "keeper_started" in events and "keeper_stopped" in events
    finally:
        net.chain.stop()


def test_liquidator_and_docs_config_example():
    r = CliRunner().invoke(main, ["liquidator", "--help"])
    assert r.exit_code == 0 and "run" in r.output
    # the config example in docs/keeper.md is valid (placeholders filled in)
    import re
    import tomllib

    from keeper.ops.config import parse_config

    text = (ROOT / "docs" / "keeper.md").read_text()
    blocks = [b.replace('"0x..."', '"0x' + "12" * 20 + '"') for b in re.findall(r"```toml\n(.*?)```", text, re.S)]
    cfg = parse_config(tomllib.loads(blocks[0]), source="docs/keeper.md")
    assert cfg.exchange.peers[0].name == "k2" and cfg.thresholds.quorum == 2
    # the per-asset example: two underlyings with their own sources
    multi = [parse_config(tomllib.loads(b), source="docs/keeper.md") for b in blocks[1:]]
    assert any(sorted(c.market.asset_settings()) == ["WBTC", "WETH"] for c in multi)
