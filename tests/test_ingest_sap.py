"""SAP FI ingest: the genuine US-locale BKPF/BSEG sample, a German SE16N delivery with related
tables, an ACDOCA-style table, and the bad cases."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from detect.config import Settings
from detect.errors import IngestError
from detect.ingest import detect_format, ingest, sap
from detect.ingest.textio import decode_head, read_head

REPO = Path(__file__).parents[1]
SHARED = REPO.parent / "shared" / "data"
FIX = Path(__file__).parent / "fixtures" / "sap"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(),
                                  reason=f"genuine samples folder {SHARED} is absent")


def _read(folder: Path, tmp_path: Path, **settings) -> tuple[pl.DataFrame, sap.IngestResult]:
    result = sap.read(sorted(folder.iterdir()), Settings(**settings), tmp_path)
    return result.bookings.collect(), result


@needs_shared
def test_us_locale_sample_as_is(tmp_path: Path) -> None:
    df, result = _read(SHARED / "sap_bkpf_bseg_us_locale", tmp_path)
    assert df.schema == sap.INGEST_SCHEMA
    assert df.height == 418
    assert df["journal_id"].n_unique() == 209
    assert df["ingest_issue"].null_count() == 418
    per_doc = df.group_by("journal_id").agg(pl.col("amount").sum(), pl.len())
    assert per_doc.filter(pl.col("amount") != 0).height == 0
    assert per_doc["len"].unique().to_list() == [2]
    debit = df.filter(pl.col("amount") > 0)["amount"].sum()
    assert Decimal(str(debit)) == Decimal("353336.01")
    first = df.filter(pl.col("journal_id") == "1500000169").sort("line_no")
    # "1,847.42" (US thousands + decimal point); line 1 SHKZG H, line 2 S
    assert first["amount"].cast(pl.Float64).to_list() == [-1847.42, 1847.42]
    assert first["posting_date"][0] == date(2026, 6, 16)  # 06/16/2026, MM/DD/YYYY
    assert first["document_date"][0] == date(2026, 6, 15)
    assert first["entered_at"][0] == datetime(2026, 6, 18, 8, 25)
    assert first["entered_by"][0] == "chief_accountant_US"
    assert first["entity"][0] == "US00" and first["fiscal_year"][0] == 2026
    assert first["period"][0] == 6
    assert first["document_type"][0] == "KZ" and first["source"][0] == "FBDC_C014"
    assert first["currency"][0] == "USD"
    # no HKONT in this extract: the account type stands in, and the run says so
    assert first["gl_account"].to_list() == ["KOART:S", "KOART:K"]
    assert any("no G/L account column" in w for w in result.warnings)
    assert {Path(i.path).name: (i.role, i.rows) for i in result.inputs} == {
        "BKPF.csv": ("bookings", 209), "BSEG.csv": ("bookings", 418)}


def test_german_delivery_with_related_tables(tmp_path: Path) -> None:
    df, result = _read(FIX / "de_export", tmp_path)
    assert df.height == 14 and not result.warnings
    assert result.ignored == [str(FIX / "de_export" / "LIESMICH.txt")]
    inv = df.filter(pl.col("journal_id") == "100000001").sort("line_no")  # leading zeros gone
    assert inv["gl_account"].to_list() == ["160000", "400000", "154000"]
    assert inv["amount"].cast(pl.Float64).to_list() == [-1190.0, 1000.0, 190.0]  # 1.190,00 H
    assert inv["vendor_id"].to_list() == ["100001", None, None]
    assert inv["cost_center"][1] == "1000"
    assert inv["description"][1] == 'Papier "A4"'
    assert inv["header_description"][0] == "Büromaterial Januar"  # cp1252, tab-separated BKPF
    assert inv["posting_date"][0] == date(2025, 1, 15)
    assert inv["document_date"][0] == date(2025, 1, 10)
    assert inv["entered_at"][0] == datetime(2025, 1, 15, 22, 15, 7)
    assert (inv["entered_by"][0], inv["approved_by"][0]) == ("SCHMIDT", "MUELLER")  # parked
    assert inv["reference"][0] == "RE-4711" and inv["source"][0] == "FB60"
    assert inv["reversal_of"].null_count() == 3
    storno = df.filter(pl.col("journal_id") == "100000003")
    assert storno["reversal_of"].unique().to_list() == ["100000001"]
    pay = df.filter(pl.col("journal_id") == "100000002").sort("line_no")
    assert pay["document_date"].null_count() == 2  # 00.00.0000
    assert pay["bank_account"].to_list() == ["DE89370400440532013000", None]  # REGUH, no proposal
    assert pay["reference"].to_list() == ["RE-4711", None]  # ZUONR when XBLNR is empty
    issues = dict(df.select("source_line", "ingest_issue").iter_rows())
    assert issues[11] == "DMBTR: '12,3,4' is not a valid amount"
    assert issues[12].startswith("Belegkoepfe.txt line 6: BUDAT: '31.02.2025' is not a date")
    assert issues[14] == "no BKPF header for document 1000/100000006/2025"
    assert sum(v is None for v in issues.values()) == 9
    clean = df.filter(pl.col("ingest_issue").is_null().all().over("journal_id"))
    assert clean["journal_id"].unique().sort().to_list() == ["100000001", "100000002",
                                                             "100000003"]
    assert (clean.group_by("journal_id").agg(pl.col("amount").sum())["amount"] == 0).all()

    vendors = result.master["vendors"].sort("vendor_id")
    assert vendors.rows() == [
        ("100001", "Papier GmbH", "DE89370400440532013000", date(2025, 1, 2), False),
        ("100002", "Erika Muster", "DE/10020030/1234567", date(2025, 1, 20), True)]
    accounts = result.master["accounts"].sort("gl_account")
    assert accounts["account_name"].to_list() == ["Verbindl. L+L", "Büromaterial und Papier"]
    changes = result.master["vendor_changes"].sort("field")
    assert changes.rows() == [
        ("100001", datetime(2025, 1, 28, 7, 59), "bank_account", None, "DE/37040044/0532013000",
         "KMEIER"),
        ("100001", datetime(2025, 1, 28, 7, 59), "vendor_name", "Papier GmbH",
         "Papier & Co GmbH", "KMEIER")]


def test_entity_setting_overrides_bukrs(tmp_path: Path) -> None:
    df, _ = _read(FIX / "de_export", tmp_path, entity="Musterstadt")
    assert df["entity"].unique().to_list() == ["Musterstadt"]


def test_acdoca_single_table_trailing_minus_and_leading_ledger(tmp_path: Path) -> None:
    df, result = _read(FIX / "acdoca", tmp_path)
    assert df.height == 2
    assert result.warnings == [f"{FIX / 'acdoca' / 'journal_entries.txt'}: only the leading "
                               "ledger 0L is read (RLDNR)"]
    assert df.sort("line_no")["amount"].cast(pl.Float64).to_list() == [1000.0, -1000.0]
    assert df["entity"].unique().to_list() == ["2000"]
    assert df["period"].unique().to_list() == [2]
    assert df.sort("line_no")["vendor_id"].to_list() == [None, "100009"]
    assert df.sort("line_no")["cost_center"].to_list() == ["2000", None]


@pytest.mark.parametrize(("folder", "line", "column", "text"), [
    ("no_amount", 1, "DMBTR", "required column is missing (amount in local currency)"),
    ("truncated", 3, None, "file ends mid-row: the last line has 6 of 15 fields"),
    ("bad_bytes", 3, None, "byte 0x8D is valid in neither UTF-8 nor Windows-1252"),
    ("bkpf_only", None, None, "only document headers (BKPF) were delivered"),
    ("empty", None, None, "file is empty"),
    ("no_posting_date", None, "BUDAT", "no BKPF (document header) table was delivered"),
])
def test_bad_deliveries_raise_clear_errors(tmp_path: Path, folder: str, line: int | None,
                                           column: str | None, text: str) -> None:
    with pytest.raises(IngestError) as err:
        _read(FIX / "bad" / folder, tmp_path)
    assert text in err.value.message
    assert err.value.line == line
    assert err.value.column == column
    assert err.value.file is not None and err.value.file.startswith(str(FIX / "bad" / folder))


def test_missing_account_and_account_type_names_hkont(tmp_path: Path) -> None:
    path = tmp_path / "lines.csv"
    path.write_text("BUKRS;BELNR;GJAHR;BUZEI;SHKZG;DMBTR;BUDAT\n1000;1;2025;1;S;1,00;01.01.2025\n",
                    encoding="utf-8")
    with pytest.raises(IngestError) as err:
        sap.read([path], Settings(), tmp_path)
    assert (err.value.file, err.value.column) == (str(path), "HKONT")


def test_se16_list_output_with_frames_rules_and_repeated_headers(tmp_path: Path) -> None:
    df, result = _read(FIX / "list_output", tmp_path)
    assert not result.warnings
    assert df.height == 4 and df["ingest_issue"].null_count() == 4
    assert df["journal_id"].unique().sort().to_list() == ["100000001", "100000002"]
    assert df["source_line"].to_list() == [7, 8, 11, 12]
    assert df["amount"].cast(pl.Float64).to_list() == [1000.0, -1000.0, 250.0, -250.0]
    assert df["posting_date"].to_list()[2] == date(2025, 1, 16)  # H_BUDAT, no BKPF needed


def test_field_labels_instead_of_technical_names(tmp_path: Path) -> None:
    path = tmp_path / "se16n.txt"
    path.write_text("Buchungskreis\tBelegnummer\tGeschäftsjahr\tBuchungszeile\tBuchungsdatum\t"
                    "Sachkonto\tSoll/Haben-Kennz.\tBetrag in HW\n"
                    "1000\t0000000042\t2025\t001\t02.01.2025\t0000400000\tS\t1.500,00\n"
                    "1000\t0000000042\t2025\t002\t02.01.2025\t0000113100\tH\t1.500,00\n",
                    encoding="utf-8")
    df = sap.read([path], Settings(), tmp_path).bookings.collect()
    assert df["journal_id"].unique().to_list() == ["42"]
    assert df.sort("line_no")["amount"].cast(pl.Float64).to_list() == [1500.0, -1500.0]
    assert df["posting_date"][0] == date(2025, 1, 2)


def test_sniff_and_auto_detect_folder(tmp_path: Path) -> None:
    bseg = FIX / "de_export" / "Positionen.csv"
    bkpf = FIX / "de_export" / "Belegkoepfe.txt"
    assert sap.sniff(bseg, decode_head(read_head(bseg))) == 0.95
    assert sap.sniff(bkpf, decode_head(read_head(bkpf))) == 0.95
    assert sap.sniff(FIX / "de_export" / "LFA1.csv",
                     decode_head(read_head(FIX / "de_export" / "LFA1.csv"))) == 0.0
    assert sap.sniff(bseg, '"EXTF";700;21;"Buchungsstapel"\n') == 0.0
    assert detect_format(sorted((FIX / "de_export").iterdir())) == "sap"
    gobd = tmp_path / "gobd"
    gobd.mkdir()
    (gobd / "index.xml").write_text("<DataSet/>", encoding="utf-8")
    (gobd / "BSEG.txt").write_bytes(bseg.read_bytes())
    assert sap.sniff(gobd / "BSEG.txt", decode_head(read_head(bseg))) == 0.5  # GoBD's table
    result = ingest([FIX / "de_export"], "auto", Settings(), tmp_path)
    assert result.format == "sap"
    assert result.bookings.collect().height == 14
    roles = {Path(i.path).name: i.role for i in result.inputs}
    assert roles["LIESMICH.txt"] == "ignored" and roles["LFA1.csv"] == "master:vendors"


def test_header_only_table_is_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "BSEG.csv"
    path.write_text("BUKRS;BELNR;GJAHR;BUZEI;SHKZG;DMBTR;HKONT;H_BUDAT\r\n", encoding="utf-8")
    result = sap.read([path], Settings(), tmp_path)
    assert result.bookings.collect().height == 0
    assert result.warnings == [f"{path}: the BSEG table holds no rows"]


def test_locale_from_values_day_first_slashes_and_pm_times(tmp_path: Path) -> None:
    """A comma CSV with decimal points but DD/MM/YYYY dates (a day above 12 says so)."""
    path = tmp_path / "gl.csv"
    path.write_text(
        "BUKRS,BELNR,GJAHR,BUZEI,SHKZG,DMBTR,HKONT,BUDAT,BLDAT,CPUDT,CPUTM\n"
        '1000,7,2025,1,S,"1,250.50",400000,25/03/2025,00/00/0000,25/03/2025,08:15:00 PM\n'
        '1000,7,2025,2,H,"1,250.50",113100,25/03/2025,00/00/0000,25/03/2025,08:15:00 PM\n',
        encoding="utf-8")
    df = sap.read([path], Settings(), tmp_path).bookings.collect().sort("line_no")
    assert df["ingest_issue"].null_count() == 2
    assert df["amount"].cast(pl.Float64).to_list() == [1250.5, -1250.5]
    assert df["posting_date"][0] == date(2025, 3, 25)
    assert df["document_date"][0] is None
    assert df["entered_at"][0] == datetime(2025, 3, 25, 20, 15)


def test_park_and_post_keeps_the_approver_even_when_it_is_the_parker(tmp_path: Path) -> None:
    """PPNAM empty: entered by USNAM, no approver. PPNAM set: entered by PPNAM, approved by
    USNAM - also when both are the same user, the self-approval rule USR003 looks for."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "BKPF.csv").write_text(
        "BUKRS;BELNR;GJAHR;BUDAT;USNAM;PPNAM\n"
        "1000;0100000001;2025;15.01.2025;SCHMIDT;SCHMIDT\n"     # parked and posted by one user
        "1000;0100000002;2025;15.01.2025;MUELLER;\n"            # posted directly
        "1000;0100000003;2025;15.01.2025;MUELLER;SCHMIDT\n",    # four eyes
        encoding="utf-8")
    (folder / "BSEG.csv").write_text(
        "BUKRS;BELNR;GJAHR;BUZEI;HKONT;SHKZG;DMBTR\n"
        + "".join(f"1000;010000000{d};2025;{i};400000;{sh};10,00\n"
                  for d in (1, 2, 3) for i, sh in ((1, "S"), (2, "H"))),
        encoding="utf-8")
    df, _ = _read(folder, tmp_path / "work")
    users = df.group_by("journal_id").agg(pl.col("entered_by", "approved_by").unique()) \
        .sort("journal_id").rows()
    assert users == [("100000001", ["SCHMIDT"], ["SCHMIDT"]),
                     ("100000002", ["MUELLER"], [None]),
                     ("100000003", ["SCHMIDT"], ["MUELLER"])]
