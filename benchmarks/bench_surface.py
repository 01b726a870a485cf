"""Benchmark: SVI surface fit (keeper.quant.surface) against a plain scipy least_squares 5-parameter SVI fit per slice.

Run from the project root:  python benchmarks/bench_surface.py [--repeats N]

1. Synthetic chain: 20 expiries x 40 strikes from a known arbitrage-free SSVI surface (Gatheral-Jacquier power-law
   phi, eta (1 + |rho|) <= 2) with 0.3 vol point Gaussian noise on the mids (seed 7). Timed:
   - ``fit_surface(slices)``: quasi-explicit slices + butterfly/calendar checks and repair (target <= 0.2 s);
   - ``fit_surface(chain)``: the same from a synthetic OptionChain (implied vols, filters, outliers, fit);
   - baseline: ``scipy.optimize.least_squares`` on raw SVI (a, b, rho, m, sigma) per slice, same weights, one fixed
     start, no arbitrage handling (no public SVI package is pip-installable here: ``py-implied-vol`` 0.1.1 ships
     no code).
2. The three real Deribit chains of ``../shared/data/option_chains`` (skipped when absent): fit time, share of
   two-sided quotes with the fitted IV inside the bid-ask IV band against Deribit's own mark, before (the previous
   fit, ``keeper.quant.surface.LEGACY_CONFIG``) and after, per chain and per expiry.
3. ``--attack``: the fake-quote table (``keeper.quant.surface_eval.attack_table``), before and after, per chain, expiry
   (thin = first expiry >= 12 h out, deep = most two-sided quotes) and target (liquid ~50 delta, wing ~15 delta,
   collusion = the wing quote and its neighbour). Takes ~15 minutes.

The machine is shared by several agents: each figure is the best of N repeats (default 7); the load average
(``os.getloadavg``) is printed with the results.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from keeper.units import SECONDS_PER_YEAR
from keeper.quant.chains import OptionChain  # noqa: E402
from keeper.data.deribit import load_deribit_csv  # noqa: E402
from keeper.quant.pricing import black76_price  # noqa: E402
from keeper.quant import surface_eval as ev  # noqa: E402
from keeper.quant.surface import (  # noqa: E402
    LEGACY_CONFIG,
    SliceFit,
    SliceQuotes,
    SurfaceConfig,
    SVIParams,
    VolSurface,
    build_slices,
    filter_quotes,
    fit_surface,
    quote_ivs,
)

N_EXPIRIES, N_STRIKES, NOISE_VOL, SEED = 20, 40, 0.003, 7


def ssvi_slices() -> list[tuple[float, SVIParams]]:
    """Raw SVI slices of an SSVI surface: theta(t) = 0.04 t + 0.2 (1 - e^{-t}) ... (ATM total variance),
    phi(theta) = eta / (theta^gamma (1 + theta)^(1 - gamma)), rho = -0.35, eta = 1.2, gamma = 0.45."""
    rho, eta, gamma = -0.35, 1.2, 0.45
    out = []
    for t in np.geomspace(7 / 365, 2.0, N_EXPIRIES):
        theta = 0.36 * t + 0.05 * (1 - math.exp(-4 * t))
        phi = eta / (theta ** gamma * (1 + theta) ** (1 - gamma))
        # SSVI slice -> raw SVI (Gatheral & Jacquier 2013, Lemma 3.3)
        a = 0.5 * theta * (1 - rho * rho)
        b = 0.5 * theta * phi
        m = -rho / phi
        sigma = math.sqrt(1 - rho * rho) / phi
        out.append((float(t), SVIParams(a, b, rho, m, sigma)))
    return out


def synthetic_inputs() -> tuple[list[SliceQuotes], OptionChain, list[tuple[float, SVIParams]]]:
    rng = np.random.default_rng(SEED)
    truth = ssvi_slices()
    slices = []
    cols: dict[str, list] = {k: [] for k in ("expiry", "strike", "call", "bid", "ask")}
    fwd = 100.0
    for t, p in truth:
        atm = math.sqrt(p.total_variance(0.0))
        k = np.linspace(-2.5 * atm, 2.0 * atm, N_STRIKES)
        iv = np.sqrt(p.total_variance(k) / t) + rng.normal(0.0, NOISE_VOL, N_STRIKES)
        half = 0.005 + 0.01 * np.abs(k) / atm  # bid-ask half width in vol, wider in the wings
        slices.append(SliceQuotes(expiry_ts=round(t * SECONDS_PER_YEAR), t=t, forward=fwd, k=k, iv_mid=iv,
                                  iv_bid=iv - half, iv_ask=iv + half, weight=1.0 / (2 * half)))
        K = fwd * np.exp(k)
        call = K >= fwd
        cols["expiry"].append(np.full(N_STRIKES, round(t * SECONDS_PER_YEAR)))
        cols["strike"].append(K)
        cols["call"].append(call)
        cols["bid"].append(black76_price(fwd, K, t, iv - half, call))
        cols["ask"].append(black76_price(fwd, K, t, iv + half, call))
    n = N_EXPIRIES * N_STRIKES
    nan = np.full(n, np.nan)
    chain = OptionChain(
        underlying="SYN", asof=0.0, spot=fwd, quote_ts=np.zeros(n), expiry_ts=np.concatenate(cols["expiry"]),
        strike=np.concatenate(cols["strike"]), is_call=np.concatenate(cols["call"]),
        bid=np.concatenate(cols["bid"]), ask=np.concatenate(cols["ask"]), bid_size=np.full(n, 10.0),
        ask_size=np.full(n, 10.0), mark=nan.copy(), forward=np.full(n, fwd), index_price=np.full(n, fwd),
        open_interest=nan.copy(), bid_iv=nan.copy(), ask_iv=nan.copy(), mark_iv=nan.copy())
    return slices, chain, truth


def baseline_fit(slices: list[SliceQuotes]) -> list[SVIParams]:
    """scipy least_squares (TRF, bounds) on raw SVI per slice, vol residuals weighted like keeper.quant.surface."""
    out = []
    for s in slices:
        w_atm = float(np.interp(0.0, s.k, s.iv_mid ** 2 * s.t))
        x0 = np.array([0.5 * w_atm, 0.1, -0.3, 0.0, 0.1])

        def resid(x, s=s):
            w = np.maximum(x[0] + x[1] * (x[2] * (s.k - x[3]) + np.sqrt((s.k - x[3]) ** 2 + x[4] ** 2)), 1e-12)
            return s.weight * (np.sqrt(w / s.t) - s.iv_mid)

        r = least_squares(resid, x0, bounds=([-1.0, 0.0, -0.999, -2.0, 1e-4], [1.0, 5.0, 0.999, 2.0, 5.0]),
                          method="trf")
        out.append(SVIParams(*map(float, r.x)))
    return out


def weighted_rmse(params: list[SVIParams], slices: list[SliceQuotes]) -> float:
    """Largest per-slice vega/spread-weighted RMSE against the mid vols (vol points)."""
    worst = 0.0
    for p, s in zip(params, slices):
        err = (np.sqrt(np.maximum(p.total_variance(s.k), 0.0) / s.t) - s.iv_mid) * 100.0
        wn = s.weight / s.weight.sum()
        worst = max(worst, float(np.sqrt(wn @ err ** 2)))
    return worst


def arb_free(params: list[SVIParams], slices: list[SliceQuotes]) -> bool:
    surf = VolSurface("X", 0.0, tuple(SliceFit(s.expiry_ts, s.t, s.forward, p) for s, p in zip(slices, params)))
    rep = surf.arbitrage_report()
    return bool(rep["butterfly_ok"] and rep["calendar_ok"])


def best_of(fn, repeats: int) -> tuple[float, object]:
    best, result = math.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def rmse_vs_truth(params: list[SVIParams], slices: list[SliceQuotes], truth) -> float:
    errs = []
    for p, s, (t, q) in zip(params, slices, truth):
        errs.append(np.sqrt(np.maximum(p.total_variance(s.k), 0) / t) - np.sqrt(q.total_variance(s.k) / t))
    return float(np.sqrt(np.mean(np.concatenate(errs) ** 2))) * 100.0


CHAIN_FILTER = ""


def chain_files(folder: Path) -> list[Path]:
    """The real chain files (``--chains`` keeps those whose name contains its text)."""
    return [p for p in sorted(folder.glob("*.csv")) if CHAIN_FILTER in p.name]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--attack", action="store_true", help="also the fake-quote table (before/after, ~15 min)")
    ap.add_argument("--attack-fits", default="before,after,prior,moving",
                    help="fits of the fake-quote table: before (LEGACY_CONFIG), after (cold, no prior), prior (prior ="
                         " the clean fit one block earlier: a steady market), moving (prior with every vol 2 %% lower:"
                         " the market moved up since the previous block)")
    ap.add_argument("--chains", default="", help="only the chain files whose name contains this text")
    ap.add_argument("--attack-only", action="store_true", help="skip the timings and the inside-band tables")
    ap.add_argument("--timing-only", action="store_true", help="only the synthetic-chain timings")
    args = ap.parse_args()
    global CHAIN_FILTER
    CHAIN_FILTER = args.chains
    logging.disable(logging.WARNING)  # the legacy fit logs failed arbitrage checks under attack
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.attack_only:
        attack_tables(ROOT.parent / "shared" / "data" / "option_chains", args.attack_fits.split(","))
        return 0
    slices, chain, truth = synthetic_inputs()

    t_slices, surf = best_of(lambda: fit_surface(slices), args.repeats)
    t_chain, surf_chain = best_of(lambda: fit_surface(chain), args.repeats)
    prior = ev.scaled_surface(surf_chain, 1.0, surf_chain.asof - 12.0)  # the previous block's fit, steady market
    t_prior, surf_prior = best_of(lambda: fit_surface(chain, prior=prior), args.repeats)
    t_base, base = best_of(lambda: baseline_fit(slices), args.repeats)
    ours = [s.params for s in surf.slices]
    print(f"synthetic SSVI chain {N_EXPIRIES} expiries x {N_STRIKES} strikes, noise {NOISE_VOL * 100:.1f} vol pt, "
          f"best of {args.repeats} (shared 2-core machine)")
    print(f"{'method':<44}{'time s':>9}{'RMSE vs truth (vol pt)':>24}{'arb-free':>10}")
    arb = surf.fit_report["arbitrage"]
    print(f"{'keeper.quant.surface fit_surface(slices)':<44}{t_slices:>9.4f}{rmse_vs_truth(ours, slices, truth):>24.3f}"
          f"{str(arb['butterfly_ok'] and arb['calendar_ok']):>10}")
    arb_c = surf_chain.fit_report["arbitrage"]
    print(f"{'keeper.quant.surface fit_surface(chain) (IV+filters)':<44}{t_chain:>9.4f}"
          f"{rmse_vs_truth([s.params for s in surf_chain.slices], slices, truth):>24.3f}"
          f"{str(arb_c['butterfly_ok'] and arb_c['calendar_ok']):>10}")
    arb_p = surf_prior.fit_report["arbitrage"]
    print(f"{'fit_surface(chain, prior=previous block)':<44}{t_prior:>9.4f}"
          f"{rmse_vs_truth([s.params for s in surf_prior.slices], slices, truth):>24.3f}"
          f"{str(arb_p['butterfly_ok'] and arb_p['calendar_ok']):>10}")
    base_surf = VolSurface("SYN", 0.0, tuple(SliceFit(s.expiry_ts, s.t, s.forward, p) for s, p in zip(slices, base)))
    arb_b = base_surf.arbitrage_report()
    print(f"{'baseline scipy least_squares 5-param SVI':<44}{t_base:>9.4f}{rmse_vs_truth(base, slices, truth):>24.3f}"
          f"{str(arb_b['butterfly_ok'] and arb_b['calendar_ok']):>10}")
    print(f"keeper / baseline time: slices {t_slices / t_base:.2f}x, chain {t_chain / t_base:.2f}x, chain with prior "
          f"{t_prior / t_base:.2f}x (budget 3x)")
    print(f"ratio baseline / keeper (slices): {t_base / t_slices:.2f}x; target fit_surface(slices) <= 0.2 s: "
          f"{'met' if t_slices <= 0.2 else 'NOT met'}")
    print(f"repaired slices: {sum(s['repaired'] for s in surf.fit_report['slices'])} of {len(surf.slices)}")
    print(f"load average after the timings: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.timing_only:
        return 0

    folder = ROOT.parent / "shared" / "data" / "option_chains"
    if not folder.is_dir():
        print(f"real chains skipped: {folder} not found")
        return 0
    print(f"\nreal Deribit chains (the same clean OTM quotes for both methods), best of {args.repeats}")
    print(f"{'chain':<32}{'rows':>5}{'slices':>7}{'keeper s':>10}{'base s':>9}{'keeper max wRMSE':>18}"
          f"{'base max wRMSE':>16}{'keeper arb-free':>17}{'base arb-free':>15}")
    for path in chain_files(folder):
        c = load_deribit_csv(path).chain
        t_real, s = best_of(lambda c=c: fit_surface(c), args.repeats)
        ivs = quote_ivs(c)
        sl, _ = build_slices(c, filter_quotes(c, SurfaceConfig(), ivs).clean, ivs)
        sl = sorted(sl, key=lambda q: q.t)
        t_b, base_real = best_of(lambda sl=sl: baseline_fit(sl), args.repeats)
        wr = max(x["weighted_rmse_vol_pts"] for x in s.fit_report["slices"])
        ok = s.fit_report["arbitrage"]["butterfly_ok"] and s.fit_report["arbitrage"]["calendar_ok"]
        print(f"{path.name:<32}{len(c):>5}{len(s.slices):>7}{t_real:>10.4f}{t_b:>9.4f}{wr:>18.2f}"
              f"{weighted_rmse(base_real, sl):>16.2f}{str(ok):>17}{str(arb_free(base_real, sl)):>15}")
        print(f"    keeper surface hash {s.hash().hex()}")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    inside_band_tables(folder)
    if args.attack:
        attack_tables(folder, args.attack_fits.split(","))
    return 0


def inside_band_tables(folder: Path) -> None:
    """Share of two-sided quotes whose fitted IV is inside the bid-ask IV band: after, before, Deribit's mark."""
    print("\nfitted IV inside the bid-ask IV band (all two-sided quotes), after / before / Deribit mark")
    print(f"{'chain':<32}{'expiry':>10}{'hours':>8}{'quotes':>8}{'after %':>9}{'before %':>10}{'Deribit %':>11}")
    for path in chain_files(folder):
        c = load_deribit_csv(path).chain
        after, before = fit_surface(c), fit_surface(c, LEGACY_CONFIG)
        two = ev.two_sided(c)
        ins_a = ev.inside_band(c, ev.model_price_at_quote(c, after))
        ins_b = ev.inside_band(c, ev.model_price_at_quote(c, before))
        ins_d = ev.inside_band(c, c.mark)
        for e in np.unique(c.expiry_ts):
            m = two & (c.expiry_ts == e)
            if m.any():
                name = time.strftime("%d%b%y", time.gmtime(e)).upper()
                print(f"{'':<32}{name:>10}{c.expiry_years[m][0] * 8760:>8.1f}{int(m.sum()):>8}"
                      f"{100 * ins_a[m].mean():>9.1f}{100 * ins_b[m].mean():>10.1f}{100 * ins_d[m].mean():>11.1f}")
        print(f"{path.name:<32}{'all':>10}{'':>8}{int(two.sum()):>8}{100 * ins_a[two].mean():>9.1f}"
              f"{100 * ins_b[two].mean():>10.1f}{100 * ins_d[two].mean():>11.1f}")
        again = fit_surface(c, prior=after)
        ins_p = ev.inside_band(c, ev.model_price_at_quote(c, again))
        print(f"{'':<32}{'with prior':>10}{'':>8}{int(two.sum()):>8}{100 * ins_p[two].mean():>9.1f}"
              "  (fit with its own cold fit as the prior: a steady market)")
        print(f"{'':<32}   per moneyness bucket z = ln(K/F)/(iv sqrt t), all expiries: after / Deribit (quotes)")
        for label, _, _ in ev.BUCKETS:
            rows = [r for r in ev.inside_band_buckets(c, after) if r["bucket"] == label]
            n = sum(r["n"] for r in rows)
            print(f"{'':<32}{label:>10}{'':>8}{n:>8}{100 * sum(r['model'] for r in rows) / n:>9.1f}{'':>10}"
                  f"{100 * sum(r['venue_mark'] for r in rows) / n:>11.1f}")
        print(f"{'':<32}   per expiry and bucket where the model misses a quote: expiry bucket quotes model-in Deribit-in")
        for r in ev.inside_band_buckets(c, after):
            if r["model"] < r["n"] or r["venue_mark"] < r["n"]:
                name = time.strftime("%d%b%y", time.gmtime(r["expiry_ts"])).upper()
                print(f"{'':<32}{name:>10}{r['bucket']:>10}{r['n']:>6}{r['model']:>9}{r['venue_mark']:>10}")


def attack_fits(c: OptionChain, names: list[str]) -> dict:
    """The fits compared in the fake-quote table (see ``--attack-fits``)."""
    clean = fit_surface(c)
    steady = ev.scaled_surface(clean, 1.0, c.asof - 12.0)  # the previous block (12 s earlier), same market
    moving = ev.scaled_surface(clean, 0.98, c.asof - 12.0)  # the previous block, every vol 2 % lower
    fits = {"before": lambda ch: fit_surface(ch, LEGACY_CONFIG), "after": fit_surface,
            "prior": lambda ch: fit_surface(ch, prior=steady), "moving": lambda ch: fit_surface(ch, prior=moving)}
    return {n: fits[n] for n in names}


def attack_tables(folder: Path, names: list[str]) -> None:
    """Worst move of the other quotes (fitted IV, 10-90 delta) and of the other series' hybrid marks when one quote
    (or two colluding ones) is replaced by a fake at 0.1x .. 10x the fitted price, before and after."""
    print("\nfake quotes: worst over factors 0.1-10x, tight/wide, deep/thin size; IV move of other quotes (vol pts),"
          " ratio to min(1 vol pt, half IV width); mark move / (1 vol pt x vega), all series and series that did"
          " not switch market<->model; cases passing the IV limit / all limits")
    print(f"{'chain':<32}{'expiry':>7}{'target':>11}{'fit':>8}{'cases':>6}{'worst IV':>10}{'median':>8}"
          f"{'IV ratio':>10}{'mark':>10}{'steady':>9}{'IV ok':>7}{'all ok':>7}")
    for path in chain_files(folder):
        c = load_deribit_csv(path).chain
        tables = {label: ev.attack_table(c, fit) for label, fit in attack_fits(c, names).items()}
        for expiry in ("thin", "deep"):
            for target in ("liquid", "wing", "collusion"):
                for label, tab in tables.items():
                    sub = ev.summarize([r for r in tab if r["expiry"] == expiry and r["target"] == target])
                    print(f"{path.name:<32}{expiry:>7}{target:>11}{label:>8}{sub['n']:>6}"
                          f"{sub['worst_iv_move_pts']:>10.2f}{sub['median_worst_iv_move_pts']:>8.2f}"
                          f"{sub['worst_iv_ratio']:>10.2f}{sub['worst_mark_ratio']:>10.3g}"
                          f"{sub['worst_mark_ratio_steady']:>9.3g}{sub['iv_passes']:>7}{sub['passes']:>7}")
        for label, tab in tables.items():
            single = [r for r in tab if r["target"] != "collusion" and r["factor"] == 3.0 and r["spread"] == "tight"
                      and r["expiry"] == "thin"]
            print(f"    {label}: tight 3x fair on the liquid / wing quote of the thin expiry: the other quotes of that "
                  f"expiry move by a median "
                  + " / ".join(f"{r['effect'].median_iv_move_same_expiry_pts:.2f}" for r in single[::2])
                  + ", worst " + " / ".join(f"{r['effect'].worst_iv_move_pts:.2f}" for r in single[::2])
                  + " vol pts")
        print(f"    load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
