"""ADS GL_Detail ingest: the genuine AICPA sample as it is, a quirky fixture delivery, bad inputs."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from detect.config import Settings
from detect.errors import IngestError
from detect.ingest import INGEST_SCHEMA, ingest

DATA = Path(__file__).parents[1].parent / "shared" / "data"
ADS_SAMPLE = DATA / "aicpa_ads_sample" / "GL_Detail_YYYYMMDD_YYYYMMDD.csv"
FIXTURE = Path(__file__).parent / "fixtures" / "ads" / "delivery"
HEADER = ("Journal_ID,Journal_ID_Line_Number,Effective_Date,Fiscal_Year,GL_Account_Number,"
          "Amount,Amount_Credit_Debit_Indicator\n")

needs_sample = pytest.mark.skipif(not ADS_SAMPLE.exists(),
                                  reason=f"genuine ADS sample not available at {ADS_SAMPLE}")


def _read(path: Path, tmp_path: Path, settings: Settings | None = None) -> tuple:
    result = ingest([path], "auto", settings or Settings(), tmp_path / "work")
    return result, result.bookings.collect().sort("source_file", "source_line")


@needs_sample
def test_genuine_sample_counts_and_signed_amounts(tmp_path: Path) -> None:
    result, df = _read(ADS_SAMPLE, tmp_path)
    assert result.format == "ads"
    assert df.schema == INGEST_SCHEMA
    assert df.height == 28_160
    assert df.select(pl.struct("fiscal_year", "journal_id").n_unique()).item() == 13_295
    # journals stay whole: one entity per journal (its first Business_Unit_Code)
    assert df.select(pl.struct("entity", "fiscal_year", "journal_id").n_unique()).item() == 13_295
    assert df["ingest_issue"].null_count() == df.height
    debit = df.filter(pl.col("amount") > 0)["amount"].sum()
    credit = df.filter(pl.col("amount") < 0)["amount"].sum()
    assert debit == Decimal("463852232.48")
    assert credit == Decimal("-464481704.37")
    first = df.row(0, named=True)
    assert first["journal_id"] == "100000000" and first["line_no"] == 1
    assert first["amount"] == Decimal("9770.52") and first["gl_account"] == "473000"
    assert df.row(1, named=True)["amount"] == Decimal("-9770.52")   # 'H' = credit
    assert first["posting_date"] == date(1900, 1, 1)                  # placeholder kept as-is
    assert first["entered_at"] == datetime(2007, 1, 22, 10, 12, 5)
    assert first["entity"] == "9900" and first["fiscal_year"] == 2007
    assert first["source_line"] == 2 and df["source_line"].max() == 28_161
    assert set(df["currency"].unique()) == {"USD", "EUR"}
    unbalanced = df.group_by("journal_id").agg(pl.col("amount").sum()).filter(
        pl.col("amount") != 0)
    assert unbalanced.height == 4
    # the placeholder warning names the column, the count and the fix
    warning = " ".join(result.warnings)
    assert "Effective_Date" in warning and "23,137 of 28,160" in warning
    assert 'posting_date_column = "Entered_Date"' in warning


@needs_sample
def test_genuine_sample_posting_date_from_entered_date(tmp_path: Path) -> None:
    result, df = _read(ADS_SAMPLE, tmp_path, Settings(posting_date_column="Entered_Date"))
    assert df["posting_date"].min() == date(2007, 1, 2) or df["posting_date"].min().year == 2007
    assert df.filter(pl.col("posting_date") == date(1900, 1, 1)).height == 0
    assert not any("placeholder" in w for w in result.warnings)


@needs_sample
def test_genuine_sample_explicit_entity_setting_wins(tmp_path: Path) -> None:
    _, df = _read(ADS_SAMPLE, tmp_path, Settings(entity="Musterstadt"))
    assert df["entity"].unique().to_list() == ["Musterstadt"]


def test_fixture_delivery_folder_with_listings(tmp_path: Path) -> None:
    result, df = _read(FIXTURE, tmp_path)
    assert result.format == "ads"
    assert df.height == 6
    assert df["amount"].to_list() == [Decimal("1234.56"), Decimal("-1234.56"), Decimal("500"),
                                      Decimal("-500"), Decimal("99.9"), Decimal("-99.9")]
    # quoted description with an embedded line break: physical lines, header = line 1
    assert df["source_line"].to_list() == [2, 3, 4, 6, 7, 8]
    assert df.row(2, named=True)["description"] == "Miete Rathaus\nJanuar"
    row = df.row(0, named=True)
    assert row["header_description"] == "Rechnung 4711"          # 'JE_Header_ Description'
    assert (row["cost_center"], row["vendor_id"], row["reference"], row["bank_account"]) == (
        "KS100", "K1001", "RE-4711", "DE02120300000000202051")
    assert row["entered_at"] == datetime(2024, 1, 3, 9, 15, 2)   # '91502' = 09:15:02
    assert df["entity"].unique().to_list() == ["MUS"]             # line 2 has no BU: filled
    assert df["currency"].to_list()[-1] == "USD"
    m = result.master
    assert m["accounts"].height == 3 and m["accounts"]["account_type"].to_list()[-1] == "bank"
    vendors = m["vendors"].sort("vendor_id")
    assert vendors["created_at"].to_list() == [date(2019, 3, 1), date(2023, 12, 20)]
    assert vendors["is_person"].to_list() == [False, True]
    users = m["users"].sort("user_id")
    assert users["approval_limit"].to_list() == [None, Decimal("5000"), Decimal("25000")]
    assert users["is_service"].to_list() == [True, False, False]
    change = m["vendor_changes"].row(0, named=True)
    assert change["changed_at"] == datetime(2024, 1, 4, 18, 30)
    assert change["new_value"] == "DE89370400440532013000"
    assert len(result.control_totals) == 1
    assert result.control_totals[0].overall["debit"] == Decimal("1834.46")
    roles = {Path(i.path).name: i.role for i in result.inputs}
    assert roles["log_file.csv"] == "control_totals"
    assert roles["Supplier_Change_Log.csv"] == "master:vendor_changes"
    assert roles["README.txt"] == "ignored"
    assert all(len(i.sha256) == 64 for i in result.inputs)


def test_signed_amount_without_indicator_keeps_sign(tmp_path: Path) -> None:
    f = tmp_path / "gl.csv"
    f.write_text("Journal_ID,Effective_Date,GL_Account_Number,Amount\n"
                 "1,2024-03-01,4000,-12.50\n1,2024-03-01,1800,12.50\n", encoding="utf-8")
    _, df = _read(f, tmp_path)
    assert df["amount"].to_list() == [Decimal("-12.50"), Decimal("12.50")]
    assert df["line_no"].to_list() == [1, 2]                     # derived from file order
    assert df["fiscal_year"].to_list() == [2024, 2024] and df["period"].to_list() == [3, 3]


def test_unreadable_date_amount_and_indicator_become_row_issues(tmp_path: Path) -> None:
    f = tmp_path / "gl.csv"
    f.write_text(HEADER + "1,1,20240230,2024,4000,12.5,D\n1,2,20240201,2024,1800,1O0,X\n",
                 encoding="utf-8")
    _, df = _read(f, tmp_path)
    first, second = df.row(0, named=True), df.row(1, named=True)
    assert first["source_line"] == 2 and "Effective_Date: '20240230' is not a date" in \
        first["ingest_issue"]
    assert second["source_line"] == 3
    assert "Amount: '1O0' is not a valid amount" in second["ingest_issue"]
    assert "Amount_Credit_Debit_Indicator: 'X' is not a debit/credit code" in \
        second["ingest_issue"]
    assert second["source_file"] == str(f)


def test_missing_required_column_names_file_and_column(tmp_path: Path) -> None:
    f = tmp_path / "gl.csv"
    f.write_text("Journal_ID,GL_Account_Number,Amount\n1,4000,1\n", encoding="utf-8")
    with pytest.raises(IngestError) as err:
        _read(f, tmp_path)
    text = str(err.value)
    assert str(f) in text and "Effective_Date" in text and "missing" in text


def test_empty_file_is_an_error_naming_it(tmp_path: Path) -> None:
    f = tmp_path / "GL_Detail.csv"
    f.write_bytes(b"")
    with pytest.raises(IngestError, match="file is empty") as err:
        ingest([f], "ads", Settings(), tmp_path / "work")
    assert str(f) in str(err.value)


def test_blank_lines_only_is_empty(tmp_path: Path) -> None:
    f = tmp_path / "GL_Detail.csv"
    f.write_bytes(b"\r\n  \r\n")
    with pytest.raises(IngestError, match="file is empty \\(only blank lines\\)") as err:
        ingest([f], "ads", Settings(), tmp_path / "work")
    assert str(f) in str(err.value)


def test_unknown_encoding_bytes_name_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "gl.csv"
    f.write_bytes(HEADER.encode() + b"1,1,20240201,2024,4000,1,D\n1,2,20240201,2024,\x81\x8d,1,C\n")
    with pytest.raises(IngestError) as err:
        _read(f, tmp_path)
    assert str(f) in str(err.value) and "line 3" in str(err.value)
    assert "neither UTF-8 nor Windows-1252" in str(err.value)


def test_cp1252_file_is_transcoded(tmp_path: Path) -> None:
    f = tmp_path / "gl.csv"
    f.write_bytes(("Journal_ID,Effective_Date,GL_Account_Number,Amount,JE_Line_Description\n"
                   "7,2024-01-31,4000,1,Büro Straße\n").encode("cp1252"))
    _, df = _read(f, tmp_path)
    assert df["description"].to_list() == ["Büro Straße"]


def test_too_many_fields_names_the_line(tmp_path: Path) -> None:
    f = tmp_path / "gl.csv"
    f.write_text(HEADER + "1,1,20240201,2024,4000,1,D\n1,2,20240201,2024,1800,1,C,extra\n",
                 encoding="utf-8")
    with pytest.raises(IngestError) as err:
        _read(f, tmp_path)
    assert "line 3" in str(err.value) and "8 fields" in str(err.value)


def test_posting_date_column_that_does_not_exist(tmp_path: Path) -> None:
    f = tmp_path / "gl.csv"
    f.write_text(HEADER + "1,1,20240201,2024,4000,1,D\n", encoding="utf-8")
    with pytest.raises(IngestError, match="posting_date_column 'Buchungstag'"):
        _read(f, tmp_path, Settings(posting_date_column="Buchungstag"))


def test_truncated_last_line_is_marked(tmp_path: Path) -> None:
    f = tmp_path / "gl.csv"
    f.write_text(HEADER + "1,1,20240201,2024,4000,1,D\n1,2,20240201,2024,1800,1,C\n2,1,2024",
                 encoding="utf-8")
    _, df = _read(f, tmp_path)
    assert df.height == 3 and df["source_line"].to_list() == [2, 3, 4]
    assert df["ingest_issue"][:2].to_list() == [None, None]
    assert df["ingest_issue"][2].startswith(
        "truncated: the file ends inside this row (3 of 7 fields, no line end)")


def test_german_amount_where_ads_allows_none(tmp_path: Path) -> None:
    f = tmp_path / "gl.csv"
    f.write_text(HEADER + '1,1,20240201,2024,4000,"1.234,56",D\n1,2,20240201,2024,1800,'
                 '"1,234.56",C\n', encoding="utf-8")
    _, df = _read(f, tmp_path)
    assert "Amount: '1.234,56' is not a valid amount" in df["ingest_issue"][0]
    assert df["amount"][1] == Decimal("-1234.56") and df["ingest_issue"][1] is None
