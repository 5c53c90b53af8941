"""BEN001 / BEN002 agree with the independent ``benford-py`` package on the same amounts."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pytest

from detect.config import Settings
from detect.rules import find_rule, load_catalog
from detect.rules.params import effective_params
from detect.rules.runner import run_rule, setup_views
from detect.schema import conform

bf = pytest.importorskip("benford", reason="benford-py (test extra) is not installed")


def amounts() -> np.ndarray:
    """Lognormal amounts (close to Benford) plus a heap of invented ones just under 5.000 €."""
    rng = np.random.default_rng(7)
    natural = np.exp(rng.normal(6.5, 1.8, 1500))
    invented = rng.uniform(4000, 4999.99, 400)
    x = np.round(np.concatenate([natural, invented]), 2)
    return x[x >= 10]  # the rules ignore amounts below 10, so does the reference input


def hits_for(rule_id: str, x: np.ndarray) -> list[dict]:
    frame = pl.DataFrame({
        "entity": "Musterstadt", "fiscal_year": 2025, "journal_id": [f"J{i}" for i in range(len(x))],
        "line_no": 1, "posting_date": date(2025, 3, 14), "gl_account": "527100",
        "entered_by": "MEIER", "source": "manual", "source_file": "t", "source_line": 1,
        "amount": [Decimal(f"{v:.2f}") for v in x]})
    con = duckdb.connect()
    con.register("b", conform(frame.lazy()).collect())
    setup_views(con, "b", "b", {}, Settings())
    rule = find_rule(load_catalog(), rule_id)
    params = effective_params(rule.id, rule.defaults(), rule.config_params, Settings())
    hits = run_rule(con, rule, params, delivery_only=False)
    return [json.loads(e) for e in hits["evidence"].to_list()]


@pytest.mark.parametrize(("rule_id", "digs"), [("BEN001", 1), ("BEN002", 2)])
def test_frequencies_and_statistics_match_benford_py(rule_id: str, digs: int) -> None:
    x = amounts()
    evidence = hits_for(rule_id, x)
    assert evidence, "the invented amounts must make the group nonconforming"
    ref = bf.first_digits(pd.Series(x), digs=digs, decimals=2, confidence=95, show_plot=False,
                          verbose=False).sort_index()
    mad = bf.mad(pd.Series(x), test=digs, decimals=2, verbose=False)
    chi2, _critical = bf.chi_sq(ref, ddf=len(ref) - 1, confidence=95, verbose=False)

    per_digit = {e["digit"]: e for e in evidence}
    for digit, e in per_digit.items():
        assert e["n"] == len(x)
        assert e["share"] == pytest.approx(ref.loc[digit, "Found"], abs=1e-12)
        assert e["expected"] == pytest.approx(ref.loc[digit, "Expected"], abs=1e-12)
        assert e["z"] == pytest.approx(ref.loc[digit, "Z_score"], abs=1e-3)
        assert e["mad"] == pytest.approx(mad, abs=1e-5)
        assert e["chi2"] == pytest.approx(chi2, abs=1e-3)
    # flagged digits are exactly benford-py's over-represented digits beyond the rule's Z limit
    defaults = find_rule(load_catalog(), rule_id).defaults()
    over = ref[(ref["Found"] >= defaults["min_ratio"] * ref["Expected"])
               & (ref["Z_score"] > defaults["min_z"])].index
    assert sorted(per_digit) == sorted(int(d) for d in over)
    # every line whose leading digit(s) are over-represented is flagged, no other line
    leading = np.array([int(f"{v:.2f}".replace(".", "")[:digs]) for v in x])
    assert len(evidence) == int(np.isin(leading, list(over)).sum())
    assert 4 in per_digit if digs == 1 else set(per_digit) & set(range(40, 50))


def test_conforming_amounts_are_not_flagged() -> None:
    rng = np.random.default_rng(11)
    x = np.round(np.exp(rng.uniform(np.log(10), np.log(10**6), 3000)), 2)  # log-uniform = Benford
    assert hits_for("BEN001", x) == []
    assert bf.mad(pd.Series(x), test=1, decimals=2, verbose=False) < 0.015
