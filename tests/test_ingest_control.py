"""Control-total files: the ADS sample's log_file.csv and simple user CSVs."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from detect.errors import IngestError
from detect.ingest.control import read_control_totals

DATA = Path(__file__).parents[1].parent / "shared" / "data"
LOG = DATA / "aicpa_ads_sample" / "log_file.csv"


@pytest.mark.skipif(not LOG.exists(), reason=f"genuine ADS log file not available at {LOG}")
def test_genuine_ads_log_file() -> None:
    ct = read_control_totals(LOG)
    per = ct.per_journal
    assert per is not None and per.height == 13_295
    assert per.schema == pl.Schema({"journal_id": pl.String, "debit": pl.Decimal(18, 2),
                                    "credit": pl.Decimal(18, 2), "lines": pl.Int64})
    first = per.row(0, named=True)
    assert first == {"journal_id": "100000000", "debit": Decimal("9770.52"),
                     "credit": Decimal("9770.52"), "lines": None}
    # the one journal whose log total is 0.02 off the GL detail
    odd = per.filter(pl.col("journal_id") == "1500000002").row(0, named=True)
    assert odd["debit"] == Decimal("339732014.90") == odd["credit"]
    assert ct.overall == {"journal_count": 13_295, "debit": Decimal("463852232.50"),
                          "credit": Decimal("464481704.39")}


def test_user_csv_per_journal_with_lines(tmp_path: Path) -> None:
    f = tmp_path / "totals.csv"
    f.write_text("journal_id,debit,credit,lines\nJ1,100.00,100.00,2\nJ2,\"1,250.50\",1250.5,3\n",
                 encoding="utf-8")
    ct = read_control_totals(f)
    assert ct.per_journal is not None
    assert ct.per_journal["debit"].to_list() == [Decimal("100"), Decimal("1250.50")]
    assert ct.per_journal["lines"].to_list() == [2, 3]
    assert ct.overall == {"journal_count": 2, "debit": Decimal("1350.50"),
                          "credit": Decimal("1350.50"), "line_count": 5}


def test_user_csv_overall_german_decimals(tmp_path: Path) -> None:
    f = tmp_path / "summen.csv"
    f.write_text("line_count;debit;credit\n28160;463.852.232,48;464.481.704,37\n",
                 encoding="utf-8")
    ct = read_control_totals(f)
    assert ct.per_journal is None
    assert ct.overall == {"line_count": 28160, "debit": Decimal("463852232.48"),
                          "credit": Decimal("464481704.37")}


def test_bad_indicator_names_line_and_column(tmp_path: Path) -> None:
    f = tmp_path / "log.csv"
    f.write_text("Journal_ID,Amount_Credit_Debit_Indicator,Total\n1,D,5\n1,X,5\n",
                 encoding="utf-8")
    with pytest.raises(IngestError) as err:
        read_control_totals(f)
    assert "line 3" in str(err.value) and "Amount_Credit_Debit_Indicator" in str(err.value)


def test_bad_amount_names_line_and_column(tmp_path: Path) -> None:
    f = tmp_path / "totals.csv"
    f.write_text("journal_id,debit,credit\nJ1,100.00,100.00\nJ2,1OO,100\n", encoding="utf-8")
    with pytest.raises(IngestError) as err:
        read_control_totals(f)
    assert "line 3" in str(err.value) and "'debit'" in str(err.value)


def test_unrecognised_file(tmp_path: Path) -> None:
    f = tmp_path / "other.csv"
    f.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(IngestError, match="not a control-total file"):
        read_control_totals(f)
    with pytest.raises(IngestError, match="not found"):
        read_control_totals(tmp_path / "missing.csv")
