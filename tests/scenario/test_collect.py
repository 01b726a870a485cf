"""The scenario's record from the keepers' archive: their fitted surfaces (first and last of the path) are read from
the inputs documents of either schema, and documents without a surface (the scenario's own attestations) are
skipped."""
from __future__ import annotations

import json

import pytest

from keeper.quant.surface import CANONICAL_VERSION
from keeper.scenario.collect import keeper_surfaces


def _surface(level: float) -> dict:
    # flat SVI slices (b = 0): total variance a, i.e. implied vol sqrt(a / t)
    return {"version": CANONICAL_VERSION, "underlying": "ETH", "asof": 0.0,
            "slices": [{"expiry_ts": 1.0, "t": t, "forward": 2000.0, "a": level**2 * t, "b": 0.0, "rho": 0.0,
                        "m": 0.0, "sigma": 0.1} for t in (0.05, 0.2)]}


def _write(folder, name: str, doc: dict) -> None:
    (folder / f"0x{name}.json").write_text(json.dumps(doc))


@pytest.mark.parametrize("schema", ["backstop-inputs/1", "backstop-inputs/2"])
def test_keeper_surfaces_first_and_last_block(tmp_path, schema):
    for block, level in ((12, 0.6), (30, 1.2), (20, 0.9)):
        surface = _surface(level)
        doc = {"schema": schema, "block": {"number": block}}
        if schema.endswith("/1"):
            doc["surface"] = surface
        else:
            doc["underlyings"] = [{"asset": "0x0", "spot_wad": "1", "surface": surface},
                                  {"asset": "0x1", "spot_wad": "1", "surface": None}]
        _write(tmp_path, f"{block:02x}", doc)
    # the scenario's own attestations carry no surface; unreadable files are skipped
    _write(tmp_path, "aa", {"schema": "backstop-inputs/2", "block": {"number": 99},
                            "underlyings": [{"asset": "0x0", "spot_wad": "1", "surface": None}]})
    (tmp_path / "0xbb.json").write_text("{not json")
    snaps = keeper_surfaces(tmp_path)
    assert [s.label for s in snaps] == ["keepers' fit, first (block 12)", "keepers' fit, last (block 30)"]
    assert snaps[0].expiries == [0.05, 0.2]
    assert all(v == pytest.approx(0.6) for row in snaps[0].vols for v in row)
    assert all(v == pytest.approx(1.2) for row in snaps[1].vols for v in row)


def test_keeper_surfaces_need_two_documents(tmp_path):
    _write(tmp_path, "01", {"schema": "backstop-inputs/2", "block": {"number": 1},
                            "underlyings": [{"asset": "0x0", "spot_wad": "1", "surface": _surface(0.6)}]})
    assert keeper_surfaces(tmp_path) == []


def test_keeper_surfaces_of_the_named_underlying(tmp_path):
    """With two underlyings (documents order them by address) the plot takes the named one's surface (ETH's in the
    scenario), not whichever comes first."""
    for block in (5, 9):
        _write(tmp_path, f"{block:02x}", {"schema": "backstop-inputs/2", "block": {"number": block},
                                          "underlyings": [{"asset": "0xB1", "spot_wad": "1", "surface": _surface(0.5)},
                                                          {"asset": "0xE1", "spot_wad": "1", "surface": _surface(0.8)}]})
    eth = keeper_surfaces(tmp_path, "0xe1")
    assert len(eth) == 2 and all(v == pytest.approx(0.8) for s in eth for row in s.vols for v in row)
    assert all(v == pytest.approx(0.5) for s in keeper_surfaces(tmp_path) for row in s.vols for v in row)
