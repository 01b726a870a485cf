"""`backstop backtest`: bad input exits 2 with one readable line and writes nothing; a tiny run writes its outputs."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from keeper.backtest.engine import POLICIES
from keeper.cli.main import main


def _run(args):
    return CliRunner().invoke(main, ["backtest", *args])


def _csv(path, rows):
    path.write_text("timestamp_utc,open,high,low,close,volume\n" + "".join(
        f"{t},1,1,1,{c},1\n" for t, c in rows))
    return path


def _ts(i, step=60):
    import datetime as dt

    return (dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(seconds=i * step)).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize("case", ["unknown", "empty", "malformed", "gap", "nonpositive", "header"])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, case):
    out = tmp_path / "out"
    if case == "unknown":
        arg = "NO_SUCH_PATH_2099"
    elif case == "empty":
        arg = str(_csv(tmp_path / "e.csv", []))
    elif case == "malformed":
        arg = str(_csv(tmp_path / "m.csv", [(_ts(0), 10), ("yesterday", 11), (_ts(2), 12)]))
    elif case == "gap":
        arg = str(_csv(tmp_path / "g.csv", [(_ts(i), 10 + i) for i in (0, 1, 2, 3, 9, 10)]))
    elif case == "nonpositive":
        arg = str(_csv(tmp_path / "n.csv", [(_ts(0), 10), (_ts(1), 0), (_ts(2), 12)]))
    else:
        (tmp_path / "h.csv").write_text("time,price\n1,2\n")
        arg = str(tmp_path / "h.csv")
    r = _run(["--path", arg, "--out", str(out), "--accounts", "5"])
    assert r.exit_code == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("backstop backtest: ")
    assert not out.exists()


def test_bad_option_exits_2(tmp_path):
    r = _run(["--path", "synthetic", "--cadence-minutes", "30", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "cadence" in r.stderr and not (tmp_path / "o").exists()


def test_small_run_writes_report_and_plots(tmp_path):
    rng = np.random.default_rng(3)
    close = 2000 * np.exp(np.cumsum(np.concatenate([[0], rng.normal(0, 0.004, 119)])))
    close[60:] *= 0.8  # a 20 % drop at bar 60
    path = _csv(tmp_path / "tiny.csv", [(_ts(i, 300), c) for i, c in enumerate(close)])
    out = tmp_path / "out"
    r = _run(["--path", str(path), "--accounts", "12", "--out", str(out), "--no-var", "--scenarios", "500"])
    assert r.exit_code == 0, r.output + r.stderr
    rep = json.loads((out / "report.json").read_text())
    (res,) = rep["paths"]
    assert res["bars"] == 120 and tuple(res["policies"]) == POLICIES
    md = (out / "report.md").read_text()
    assert "| tiny | backstop:hedging |" in md and "| static |" in md
    assert "| tiny |" in (out / "report.md").read_text()
    assert (out / "fund_balance.png").stat().st_size > 1000 and (out / "liquidations.png").stat().st_size > 1000


def test_unknown_policy_exits_2(tmp_path):
    r = _run(["--path", "synthetic", "--policy", "backstop:greedy", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "unknown policy" in r.stderr and not (tmp_path / "o").exists()
