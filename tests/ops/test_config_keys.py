"""Config validation (one readable error per bad value) and key loading (env var, keystore, never shown)."""
import io
import json

import pytest
from eth_account import Account

from keeper.errors import ConfigError
from keeper.ops.config import load_config, parse_config
from keeper.errors import KeyLoadError
from keeper.ops.keys import KeeperKey, key_from_env, key_from_keystore, load_key, write_keystore
from keeper.ops.logging import configure_logging, get_logger

ADDR_A = "0x" + "11" * 20
ADDR_B = "0x" + "22" * 20


def test_defaults_are_valid_and_local():
    cfg = parse_config({})
    assert cfg.chain.rpc_url == "http://127.0.0.1:8545"
    assert cfg.thresholds.quorum == 1
    assert [s.kind for s in cfg.market.spot_sources] == ["simulated"]


def test_production_config_has_no_fault_injection():
    """Fault injection lives in the tests (tests/bots/keeper/harness.py: lying_keeper), not in the keeper's config."""
    with pytest.raises(ConfigError, match="testing"):
        parse_config({"testing": {"fabricate_breach": ["0x" + "11" * 20]}})


def test_every_bad_value_is_named_once():
    bad = {
        "chain": {"rpc_url": "ftp://x", "poll_interval_s": -1},
        "exchange": {"port": 70000, "peers": [{"name": "a", "url": "http://127.0.0.1:1", "address": "0x12"}]},
        "risk": {"var_confidence": 1.5},
        "bogus": 1,
    }
    with pytest.raises(ConfigError) as ei:
        parse_config(bad, source="t.toml")
    lines = str(ei.value).splitlines()
    assert lines[0] == "invalid keeper config t.toml:"
    paths = sorted(line.split(":")[0].strip() for line in lines[1:])
    assert paths == sorted(["chain.rpc_url", "chain.poll_interval_s", "exchange.port", "exchange.peers.0.address",
                            "risk.var_confidence", "bogus"])


def test_cross_field_rules():
    peers = [{"name": "a", "url": "http://127.0.0.1:1", "address": ADDR_A}]
    with pytest.raises(ConfigError, match="quorum=3 exceeds the 2 keepers"):
        parse_config({"exchange": {"peers": peers}, "thresholds": {"quorum": 3}})
    with pytest.raises(ConfigError, match="two peers share one address"):
        parse_config({"exchange": {"peers": peers + [{"name": "b", "url": "http://x", "address": ADDR_A}]}})
    with pytest.raises(ConfigError, match="needs a path"):
        parse_config({"market": {"spot_sources": [{"name": "r", "kind": "replay"}]}})
    with pytest.raises(ConfigError, match="duplicate spot source names"):
        parse_config({"market": {"spot_sources": [{"name": "r", "kind": "simulated"},
                                                  {"name": "r", "kind": "simulated"}]}})
    ok = parse_config({"exchange": {"peers": peers}, "thresholds": {"quorum": 2}})
    assert ok.exchange.peers[0].address == "0x1111111111111111111111111111111111111111"


@pytest.mark.parametrize("suffix", [".toml", ".yaml", ".json"])
def test_load_each_format_and_resolve_relative_paths(tmp_path, suffix):
    body = {
        ".toml": 'archive_dir = "arch"\n[chain]\ndeployment_file = "dep.json"\n[thresholds]\nquorum = 1\n',
        ".yaml": "archive_dir: arch\nchain:\n  deployment_file: dep.json\nthresholds:\n  quorum: 1\n",
        ".json": json.dumps({"archive_dir": "arch", "chain": {"deployment_file": "dep.json"}}),
    }[suffix]
    f = tmp_path / f"keeper{suffix}"
    f.write_text(body)
    cfg = load_config(f)
    assert cfg.chain.deployment_file == tmp_path / "dep.json"
    assert cfg.archive_dir == tmp_path / "arch"


def test_unparseable_and_missing_files(tmp_path):
    f = tmp_path / "k.toml"
    f.write_text("[chain\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(f)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    g = tmp_path / "k.ini"
    g.write_text("x")
    with pytest.raises(ConfigError, match="unknown format"):
        load_config(g)


def test_key_from_env_and_keystore_never_shows_key(tmp_path):
    acct = Account.create()
    pk = acct.key.hex()
    k = key_from_env("K", {"K": pk})
    assert k.address == acct.address
    assert pk.removeprefix("0x") not in repr(k) and pk.removeprefix("0x") not in str(k)
    with pytest.raises(KeyLoadError, match="K is not set"):
        key_from_env("K", {})
    with pytest.raises(KeyLoadError) as ei:
        key_from_env("K", {"K": "0xnothex"})
    assert "nothex" not in str(ei.value)

    ks = tmp_path / "key.json"
    assert write_keystore(ks, pk, "pw") == acct.address
    assert (ks.stat().st_mode & 0o777) == 0o600
    assert key_from_keystore(ks, "pw").address == acct.address
    with pytest.raises(KeyLoadError, match="wrong password"):
        key_from_keystore(ks, "bad")
    cfg = parse_config({"keys": {"keystore_file": str(ks), "password_env": "PW"}})
    assert load_key(cfg.keys, {"PW": "pw"}).address == acct.address
    with pytest.raises(KeyLoadError, match="PW"):
        load_key(cfg.keys, {})
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(k)


def test_logs_are_json_and_redact_secrets():
    buf = io.StringIO()
    configure_logging("INFO", stream=buf)
    get_logger("t").info("loaded", private_key="0xdeadbeef", password="hunter2", block=5)
    get_logger("t").debug("hidden")
    lines = buf.getvalue().strip().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert rec["event"] == "loaded" and rec["block"] == 5 and rec["level"] == "info"
    assert "deadbeef" not in lines[0] and "hunter2" not in lines[0]
