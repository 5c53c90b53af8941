"""SAF-T Financial: the genuine Norwegian and Portuguese examples, a quirk fixture, bad files."""

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
NO = DATA / "saft_no_example" / "ExampleFile_SAF-T_Financial_888888888_20180228235959.xml"
PT = DATA / "saft_pt_demo" / "saft_idemo599999999.xml"
QUIRKS = Path(__file__).parent / "fixtures" / "saft" / "saft_quirks.xml"


def _read(path: Path, tmp_path: Path, settings: Settings | None = None):
    result = ingest([path], "auto", settings or Settings(), tmp_path / "work")
    return result, result.bookings.collect().sort("source_line")


def _sums(df: pl.DataFrame) -> tuple[Decimal, Decimal]:
    return (df.filter(pl.col("amount") > 0)["amount"].sum(),
            -df.filter(pl.col("amount") < 0)["amount"].sum())


@pytest.mark.skipif(not NO.exists(), reason=f"Norwegian SAF-T example not available at {NO}")
def test_norwegian_example(tmp_path: Path) -> None:
    result, df = _read(NO, tmp_path)
    assert result.format == "saft" and df.schema == INGEST_SCHEMA
    assert df.height == 170
    assert df["journal_id"].n_unique() == 53
    assert _sums(df) == (Decimal("9487049.35"), Decimal("9487049.35"))
    assert df["ingest_issue"].null_count() == 170
    assert result.master["accounts"].height == 22
    assert result.master["vendors"].height == 6
    assert result.master["customers"].height == 6
    assert result.control_totals[0].overall == {
        "journal_count": 53, "debit": Decimal("9487049.35"), "credit": Decimal("9487049.35")}
    first = df.row(0, named=True)
    assert (first["journal_id"], first["line_no"], first["gl_account"]) == ("1001", 1, "4000")
    assert first["amount"] == Decimal("10000") and first["currency"] == "NOK"
    assert first["posting_date"] == date(2017, 1, 5)          # GLPostingDate
    assert first["document_date"] == date(2017, 1, 4)         # TransactionDate
    assert first["fiscal_year"] == 2017 and first["period"] == 1
    assert first["source_line"] == 1109                       # the <Line> element's XML line
    second = df.row(1, named=True)
    assert second["amount"] == Decimal("-12500") and second["vendor_id"] == "2002"
    assert all(df.group_by("journal_id").agg(pl.col("amount").sum())["amount"] == 0)
    assert "6 customers" in " ".join(result.warnings)


@pytest.mark.skipif(not PT.exists(), reason=f"Portuguese SAF-T demo not available at {PT}")
def test_portuguese_demo_cp1252(tmp_path: Path) -> None:
    result, df = _read(PT, tmp_path)
    assert df.height == 165 and df["journal_id"].n_unique() == 52
    assert result.master["accounts"].height == 122
    assert df["ingest_issue"].null_count() == 165
    first = df.row(0, named=True)
    assert first["journal_id"] == "2017-03-10 VND 1" and first["source_line"] == 1712
    assert first["entered_at"] == datetime(2017, 3, 10, 23, 1, 1)
    assert first["entered_by"] == "INF" and first["currency"] == "EUR"
    assert first["entity"] == "Entidade comercial - Demonstração"   # decoded from cp1252
    assert first["fiscal_year"] == 2017
    debit, credit = _sums(df)
    assert debit == credit == Decimal("370502.42")           # header: 370502.414 (3 places)
    # the 3-place header totals are checked at ingest against the unrounded lines
    assert result.control_totals[0].overall == {"journal_count": 52}
    assert any("TotalDebit 370502.414 reconciles exactly with the unrounded lines; rounded "
               "to cents they sum to 370502.42" in w for w in result.warnings)
    assert any("6 amounts had more than two decimal places" in w for w in result.warnings)
    # RecordID repeats in two transactions of the demo: numbered by position, no duplicate keys
    assert df.filter(pl.struct("journal_id", "line_no").is_duplicated()).height == 0
    assert df.filter(pl.col("journal_id") == "2017-12-01 VND 16")["line_no"].to_list() == \
        [1, 2, 3, 4, 5, 6]
    assert any("RecordID repeats inside 2 transaction(s) (2017-12-01 VND 16, 2017-12-03 CXA 4)"
               in w for w in result.warnings)


def test_quirks_fixture(tmp_path: Path) -> None:
    result, df = _read(QUIRKS, tmp_path)
    # TransactionID '1' in two journals: qualified by JournalID so the journals stay apart
    assert df["journal_id"].to_list() == ["GL/1", "GL/1", "BANK/1", "BANK/1"]
    assert df["source_line"].to_list() == [39, 43, 56, 57]
    assert df["amount"].to_list()[:2] == [Decimal("1000.50"), Decimal("-1000.50")]
    assert df["entity"].unique().to_list() == ["Testkommune"]
    assert df["entered_by"][0] == "KARI" and df["description"][0] == "Husleie mars"
    assert df["vendor_id"][1] == "S1"
    issues = df["ingest_issue"].to_list()
    assert issues[2] == "DebitAmount: '500,00' is not a valid amount"
    assert issues[3] == "Line has neither DebitAmount nor CreditAmount"
    assert result.master["vendors"]["bank_account"].to_list() == ["NO9386011117947"]


def test_entity_setting_wins(tmp_path: Path) -> None:
    _, df = _read(QUIRKS, tmp_path, Settings(entity="Musterstadt"))
    assert df["entity"].unique().to_list() == ["Musterstadt"]


def test_truncated_xml_names_file_and_line(tmp_path: Path) -> None:
    text = QUIRKS.read_text(encoding="utf-8")
    cut = tmp_path / "cut.xml"
    cut.write_text(text[: text.index("<Journal>\n      <JournalID>BANK")], encoding="utf-8")
    with pytest.raises(IngestError) as err:
        ingest([cut], "saft", Settings(), tmp_path / "w")
    assert str(cut) in str(err.value) and "not well-formed XML" in str(err.value)
    assert f"line {cut.read_text(encoding='utf-8').count(chr(10)) + 1}:" in str(err.value)


def test_empty_file(tmp_path: Path) -> None:
    f = tmp_path / "saft.xml"
    f.write_bytes(b"")
    with pytest.raises(IngestError, match="file is empty"):
        ingest([f], "saft", Settings(), tmp_path / "w")
