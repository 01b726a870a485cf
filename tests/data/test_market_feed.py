"""The market-file chain source: a JSON smile re-read every cycle, the chain drawn as the simulated market draws
its own; two keepers reading one file agree, a file change moves the next fitted surface, bad files are skipped."""
import json
import math

import numpy as np
import pytest

from keeper.errors import ConfigError
from keeper.ops.config import parse_config
from keeper.data.sources import BlockRef, MarketFileChainSource, SimulatedMarket, Skip, build_market_data
from keeper.quant.surface import fit_surface
from vollib.black.implied_volatility import implied_volatility as vollib_iv

SPOT = 2000.0


def block(n: int) -> BlockRef:
    return BlockRef(n, "0x" + f"{n:064x}", 1_700_000_000 + 12 * n)


def write(path, **fields):
    path.write_text(json.dumps(fields))


def market(tmp_path, **overrides):
    cfg = parse_config({"market": {"chain": {"kind": "market_file", "path": str(tmp_path / "market.json")},
                                   "simulated": {"seed": 11, **overrides}}})
    return build_market_data(cfg.market)


def fitted_atm_vol(chain) -> float:
    surface = fit_surface(chain)
    t = surface.slices[1].t  # the 30-day slice
    return float(surface.implied_vol(SPOT, t, surface.forward(t)))


def test_two_keepers_reading_one_file_draw_identical_chains(tmp_path):
    write(tmp_path / "market.json", spot=SPOT, atm_vol=0.8, skew=-0.15, curvature=0.4)
    a, b = market(tmp_path), market(tmp_path)
    assert a.chain_source is not b.chain_source
    ca, cb = a.chain(block(40), SPOT), b.chain(block(40), SPOT)
    for f in ("strike", "expiry_ts", "bid", "ask", "bid_size", "ask_size", "mark", "mark_iv"):
        assert np.array_equal(getattr(ca, f), getattr(cb, f)), f
    # a different block draws different noise (the equality above is not vacuous)
    assert not np.array_equal(ca.mark, a.chain(block(41), SPOT).mark)


def test_same_drawing_as_simulated_market_for_the_same_smile(tmp_path):
    """With skew = curvature = 0 both smiles are flat at atm_vol: the file source must reproduce the simulated
    market's chain bit for bit (same grid, noise, spread and depth)."""
    write(tmp_path / "market.json", atm_vol=0.7, skew=0.0, curvature=0.0)
    md = market(tmp_path, atm_vol=0.7, skew=0.0, smile=0.0)
    sim = SimulatedMarket(parse_config({"market": {"simulated": {"seed": 11, "atm_vol": 0.7, "skew": 0.0,
                                                                 "smile": 0.0}}}).market.simulated)
    got, ref = md.chain_source.chain(block(7), SPOT), sim.chain(block(7), SPOT)
    for f in ("strike", "bid", "ask", "bid_size", "ask_size", "mark"):
        assert np.array_equal(getattr(got, f), getattr(ref, f)), f


def test_drawn_mid_matches_vollib_at_the_file_smile(tmp_path):
    """Independent check of the drawing: the noiseless call mid inverted by py_vollib equals the file's smile
    ``atm * (1 + skew k + curvature k^2)`` (the noise is 0.2 %, so compare the mark_iv the mid was priced at and
    invert the mid within the noise's vol equivalent)."""
    write(tmp_path / "market.json", atm_vol=0.9, skew=-0.2, curvature=0.5)
    c = market(tmp_path).chain(block(3), SPOT)
    k = np.log(c.strike / c.forward)
    assert np.allclose(c.mark_iv, np.maximum(0.9 * (1 - 0.2 * k + 0.5 * k * k), 0.05), rtol=0, atol=1e-15)
    t = (c.expiry_ts - c.asof) / (365.0 * 86400)
    i = int(np.flatnonzero(c.is_call & (np.abs(c.strike - SPOT) < 1e-9) & (t > 0.05))[0])
    iv = vollib_iv(float(c.mark[i]), SPOT, SPOT, 0.0, float(t[i]), "c")
    assert iv == pytest.approx(0.9, abs=0.01)


def test_file_change_moves_next_cycle_fitted_atm_vol(tmp_path):
    f = tmp_path / "market.json"
    md = market(tmp_path)
    fitted = []
    for n, vol in ((100, 0.6), (101, 1.5), (102, 0.75)):
        write(f, spot=SPOT, atm_vol=vol, skew=-0.15, curvature=0.4)
        fitted.append(fitted_atm_vol(md.chain(block(n), SPOT)))
    # the quotes carry 0.2 % price noise and SVI smooths: the fit recovers the ATM vol to about 1 % relative
    assert fitted == pytest.approx([0.6, 1.5, 0.75], rel=0.01)


@pytest.mark.parametrize("content, reason", [
    (None, "source_unavailable"),
    ("{not json", "source_unavailable"),
    ('{"atm_vol": NaN, "skew": -0.15, "curvature": 0.4}', "bad_market_file"),
    ('{"atm_vol": 0.6, "skew": Infinity, "curvature": 0.4}', "bad_market_file"),
    ('{"atm_vol": 0.6, "skew": -0.15}', "bad_market_file"),
    ('{"atm_vol": "0.6", "skew": -0.15, "curvature": 0.4}', "bad_market_file"),
    ('{"atm_vol": -0.6, "skew": -0.15, "curvature": 0.4}', "bad_market_file"),
    ('{"spot": 0, "atm_vol": 0.6, "skew": -0.15, "curvature": 0.4}', "bad_market_file"),
    ("[1, 2]", "bad_market_file"),
])
def test_missing_or_malformed_file_is_skipped(tmp_path, content, reason):
    f = tmp_path / "market.json"
    if content is not None:
        f.write_text(content)
    md = market(tmp_path)
    got = md.chain(block(5), SPOT)
    assert isinstance(got, Skip) and got.reason == reason and got.source == "market_file"
    # the next cycle with a good file works again (the source holds no state from the bad read)
    write(f, atm_vol=0.6, skew=-0.15, curvature=0.4)
    assert not isinstance(md.chain(block(6), SPOT), Skip)


def test_config_requires_a_path_and_resolves_it(tmp_path):
    with pytest.raises(ConfigError, match="market_file"):
        parse_config({"market": {"chain": {"kind": "market_file"}}})
    from keeper.ops.config import load_config
    (tmp_path / "k.json").write_text(json.dumps({"market": {"chain": {"kind": "market_file", "path": "m.json"}}}))
    assert load_config(tmp_path / "k.json").market.chain.path == tmp_path / "m.json"
    assert isinstance(build_market_data(load_config(tmp_path / "k.json").market).chain_source, MarketFileChainSource)


# ------------------------------------------------------------------------------------------------------------
# A real keeper cycle on Anvil with the market_file chain source
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.chain
def test_keeper_signs_nothing_on_a_missing_or_nan_market_file_and_follows_the_file(tmp_path):
    import time

    import harness as h
    from keeper.ops.config import parse_config
    from keeper.quant.surface import VolSurface

    net = h.start_net(tmp_path)
    try:
        h.setup_book(net)
        spot, mfile = tmp_path / "spot1.json", tmp_path / "market.json"
        h.write_spot(spot, 2000.0)
        write(mfile, spot=2000.0, atm_vol=0.6, skew=-0.15, curvature=0.4)
        cfg = h.keeper_config(net, 0, h.free_ports(3), spot).model_dump(mode="json")
        cfg["market"]["chain"] = {"kind": "market_file", "path": str(mfile)}
        k = h.KeeperThread(net, 0, parse_config(cfg))
        root = lambda b: (k.bot.view.attestation(b) or {}).get("root")  # noqa: E731
        skipped = k.bot.metrics.skipped_inputs
        try:
            b1 = net.mine()
            assert h.wait_for(lambda: root(b1), 30)
            for content, reason in ((None, "source_unavailable"),
                                    ('{"atm_vol": NaN, "skew": -0.15, "curvature": 0.4}', "bad_market_file")):
                mfile.unlink(missing_ok=True)
                if content is not None:
                    mfile.write_text(content)
                before = skipped.labels(reason=reason)._value.get()
                b = net.mine()
                assert h.wait_for(lambda: k.bot.last_block == b and
                                  skipped.labels(reason=reason)._value.get() > before, 30)
                time.sleep(0.3)
                assert root(b) is None and ("margin", b) not in k.bot.pending
                assert k.bot.view.snapshot().get("note", "").startswith("no usable option chain")
            # a good file again: signing resumes and the fitted surface carries the file's new vol
            write(mfile, spot=2000.0, atm_vol=1.3, skew=-0.15, curvature=0.4)
            b4 = net.mine()
            assert h.wait_for(lambda: root(b4), 30)
            archived = [json.loads(p.read_text()) for p in (tmp_path / "archive0").glob("*.json")]
            doc = next(d for d in archived if "underlyings" in d and
                       (d["block"]["number"] if isinstance(d["block"], dict) else d["block"]) == b4)
            s = VolSurface.from_canonical(doc["underlyings"][0]["surface"])
            t = s.slices[1].t
            fwd = float(s.forward(t))
            assert float(s.implied_vol(fwd, t, fwd)) == pytest.approx(1.3, rel=0.01)
        finally:
            k.stop()
    finally:
        net.chain.stop()
