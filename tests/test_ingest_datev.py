"""DATEV EXTF ingest: genuine samples as they are, our quirk fixtures, and the bad cases."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from detect.config import Settings
from detect.errors import IngestError
from detect.ingest import datev, detect_format, ingest
from detect.ingest.textio import decode_head, read_head

REPO = Path(__file__).parents[1]
SHARED = REPO.parent / "shared" / "data"
FIX = Path(__file__).parent / "fixtures" / "datev"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(),
                                  reason=f"genuine samples folder {SHARED} is absent")


def _read(files: list[Path], tmp_path: Path, **settings) -> tuple[pl.DataFrame, datev.IngestResult]:
    result = datev.read(files, Settings(**settings), tmp_path)
    return result.bookings.collect(), result


def _totals(df: pl.DataFrame) -> tuple[Decimal, Decimal]:
    debit = df.filter(pl.col("amount") > 0)["amount"].sum()
    credit = -df.filter(pl.col("amount") < 0)["amount"].sum()
    return Decimal(str(debit)), Decimal(str(credit))


def _balanced_per_journal(df: pl.DataFrame) -> bool:
    sums = df.group_by("journal_id").agg(pl.col("amount").sum())
    return sums.filter(pl.col("amount") != 0).height == 0


# --- genuine samples -----------------------------------------------------------------------------

@needs_shared
def test_extf700_sample_two_lines_per_row_and_balanced(tmp_path: Path) -> None:
    path = SHARED / "datev_extf700_samples" / "EXTF_Buchungsstapel.csv"
    df, result = _read([path], tmp_path)
    assert df.height == 2 * 54
    assert df.schema == datev.INGEST_SCHEMA
    assert df["ingest_issue"].null_count() == df.height
    assert _balanced_per_journal(df)
    debit, credit = _totals(df)
    assert debit == credit
    assert df["entity"].unique().to_list() == ["29098-55003"]
    assert df["fiscal_year"].unique().to_list() == [2024]
    # row 1: 100,18 S Konto 48400 / Gegenkonto 8401, Belegdatum 3101
    first = df.filter(pl.col("source_line") == 3).sort("line_no")
    assert first["gl_account"].to_list() == ["48400", "8401"]
    assert first["amount"].cast(pl.Float64).to_list() == [100.18, -100.18]
    assert first["posting_date"].to_list() == [date(2024, 1, 31)] * 2
    assert first["cost_center"].to_list() == ["50", "50"]
    # H row: 4979,65 H Konto 8400 credited
    h_row = df.filter(pl.col("source_line") == 7).sort("line_no")
    assert h_row["amount"].cast(pl.Float64).to_list() == [-4979.65, 4979.65]
    assert h_row["journal_id"].to_list() == ["201802010"] * 2
    # foreign currency row: 124,00 CHF, Basis-Umsatz 100,00 EUR
    chf = df.filter(pl.col("description") == "Umsatz Schweiz")
    assert sorted(chf["amount"].cast(pl.Float64).to_list()) == [-100.0, 100.0]
    assert chf["currency"].unique().to_list() == ["EUR"]
    # Generalumkehr rows reverse their voucher
    assert df.filter(pl.col("reversal_of").is_not_null())["reversal_of"].unique().sort() \
        .to_list() == ["363", "364", "365", "366", "ar1111"]
    # creditor accounts (5 digits, 7xxxx with 4-digit Sachkonten) become vendor_id
    assert set(df["vendor_id"].drop_nulls()) == {"70000", "70010", "70020", "70030", "70040",
                                               "71000"}


@needs_shared
def test_extf510_sample_cp1252_crlf(tmp_path: Path) -> None:
    path = SHARED / "datev_extf510_sample" / "EXTF_Buchungsstapel.csv"
    df, result = _read([path], tmp_path)
    assert df.height == 2 * 38
    assert df["ingest_issue"].null_count() == df.height
    assert _balanced_per_journal(df)
    assert _totals(df) == (Decimal("260668.56"), Decimal("260668.56"))
    assert df["posting_date"].min() == date(2016, 1, 1)
    assert df["posting_date"].max() == date(2016, 3, 31)
    assert "Normalabschreibung Gebäude" in df["description"].to_list()  # cp1252 umlaut
    assert result.inputs[0].rows == 38


@needs_shared
def test_ruby_gem_120_columns_with_masters(tmp_path: Path) -> None:
    folder = SHARED / "datev_extf700_ruby_gem"
    df, result = _read(sorted(folder.glob("*.csv")), tmp_path)
    assert df.height == 4
    assert _totals(df) == (Decimal("5974.95"), Decimal("5974.95"))
    fach = df.filter(pl.col("description") == "Fachbuch: Controlling für Dummies").sort("line_no")
    assert fach["gl_account"].to_list() == ["1200", "4940"]
    assert fach["amount"].cast(pl.Float64).to_list() == [-24.95, 24.95]
    assert fach["posting_date"].to_list() == [date(2018, 2, 21)] * 2
    accounts = result.master["accounts"]
    # 3 labels + 4 personal accounts (Stammdaten) + 2 booked accounts without a label
    assert accounts.height == 9
    assert dict(accounts.select("gl_account", "account_type").iter_rows())["70001"] == "liability"
    assert set(accounts.filter(pl.col("account_name").is_null())["gl_account"]) == {"4940", "8400"}
    vendors = result.master["vendors"]
    assert vendors["vendor_id"].to_list() == ["70001", "70002", "70003"]
    assert vendors["vendor_name"][0] == "Meyer GmbH"


@needs_shared
def test_several_batches_in_one_folder_keep_same_named_copies_apart(tmp_path: Path) -> None:
    files = [SHARED / d / "EXTF_Buchungsstapel.csv"
             for d in ("datev_extf700_samples", "datev_extf510_sample", "datev_extf700_ruby_gem")]
    df, _ = _read(files, tmp_path)
    assert df.height == 2 * (54 + 38 + 2)
    assert df.group_by("source_file").len().height == 3
    assert df.select(pl.struct("entity", "fiscal_year", "journal_id", "line_no")
                     .is_unique().all()).item()


# --- our fixtures --------------------------------------------------------------------------------

def test_delivery_mapping(tmp_path: Path) -> None:
    df, result = _read(sorted((FIX / "delivery").iterdir()), tmp_path)
    assert df.height == 10
    assert result.warnings == ["DATEV: 3 booked accounts have no Kontenbeschriftung (DATEV "
                               "exports only individually labelled accounts); they are added to "
                               "the chart without a name"]
    assert df["entity"].unique().to_list() == ["1234-56"]
    inv = df.filter(pl.col("journal_id") == "RE-1001").sort("line_no")
    # MMDD * 100000 + position: invoice (15.01) and payment (20.01) never share keys
    assert inv["line_no"].to_list() == [11500001, 11500002, 12000001, 12000002]
    assert inv["gl_account"].to_list() == ["70001", "4900", "70001", "1200"]
    assert inv["amount"].cast(pl.Float64).to_list() == [-1190.0, 1190.0, 1190.0, -1190.0]
    assert inv["vendor_id"].to_list() == ["70001", None, "70001", None]
    assert inv["entered_by"].to_list()[:2] == ["mmueller", "mmueller"]
    assert inv["entered_by"][2] == "AB"  # no Beleginfo: the batch's Diktatkürzel
    assert inv["approved_by"][0] == "kschmidt"
    assert inv["entered_at"][0] == datetime(2025, 1, 15, 23, 12, 5)
    assert inv["description"][0] == 'Büromaterial "Premium"'
    assert inv["cost_center"][0] == "100"
    assert inv["bank_account"].to_list() == ["DE02120300000000202051", None] * 2
    # December voucher in a January batch belongs to the previous year
    dec = df.filter(pl.col("description") == "Porto Dezember")
    assert dec["posting_date"].unique().to_list() == [date(2024, 12, 31)]
    assert dec["journal_id"].unique().to_list() == ["20250203101500123-3"]
    assert dec["period"].unique().to_list() == [12]
    # TMM without leading zero
    assert df.filter(pl.col("journal_id") == "K-17")["posting_date"][0] == date(2025, 1, 5)
    assert df["currency"].unique().to_list() == ["EUR"]
    assert _balanced_per_journal(df)
    roles = {Path(i.path).name: i.role for i in result.inputs}
    assert roles == {"EXTF_Buchungsstapel_2025_01.csv": "bookings",
                     "EXTF_Kontenbeschriftungen.csv": "master:accounts",
                     "EXTF_Kreditoren.csv": "master:vendors"}
    chart = {r[0]: r[1:] for r in result.master["accounts"].iter_rows()}
    assert chart == {"1000": ("Kasse Rathaus", None), "4900": ("Bürobedarf", None),
                     "70001": ("Papier GmbH", "liability"), "70002": ("Erika Muster", "liability"),
                     "10000": ("Kunde AG", "asset"), "1200": (None, None), "4930": (None, None),
                     "8400": (None, None)}
    vendors = result.master["vendors"].sort("vendor_id")
    assert vendors["vendor_id"].to_list() == ["70001", "70002"]  # debtor 10000 left out
    assert vendors["bank_account"].to_list() == ["DE02500105170137075030",
                                                 "DE88100900001234567892"]
    assert vendors["is_person"].to_list() == [False, True]
    assert vendors["vendor_name"].to_list() == ["Papier GmbH", "Erika Muster"]


def test_other_writer_spelling_utf8_bom_lf_and_entity_setting(tmp_path: Path) -> None:
    df, result = _read([FIX / "variant" / "EXTF_Buchungsstapel_utf8.csv"], tmp_path,
                       entity="Musterstadt")
    assert df.height == 4 and not result.warnings
    assert df["entity"].unique().to_list() == ["Musterstadt"]
    assert df["entered_by"][0] == "mmueller"  # "Beleginfo – Art 1" with an en dash
    assert df["cost_center"][0] == "100"


def test_bad_rows_become_ingest_issues(tmp_path: Path) -> None:
    df, _ = _read([FIX / "bad" / "bad_rows.csv"], tmp_path)
    issues = dict(df.group_by("source_line").agg(pl.col("ingest_issue").first()).iter_rows())
    assert issues[3] is None
    assert "'1.234,56' has a thousands separator" in issues[4]
    assert issues[5] == "Belegdatum: '3102' is not a date (TTMM)"
    assert issues[6] == "Soll/Haben-Kennzeichen: 'X' is not S or H"
    assert df.filter(pl.col("source_line") == 6)["amount"].null_count() == 2


@pytest.mark.parametrize(("name", "line", "column", "text"), [
    ("wrong_version.csv", 1, "Versionsnummer", "EXTF header version '999' is not supported"),
    ("truncated.csv", 4, None, "file ends mid-row: the last line has 12 of 38 fields"),
    ("missing_column.csv", 2, "Konto", "required column is missing"),
    ("bad_bytes.csv", 3, None, "byte 0x81 is valid in neither UTF-8 nor Windows-1252"),
    ("empty.csv", None, None, "file is empty"),
    ("only_accounts.csv", None, None, "no DATEV Buchungsstapel (EXTF format category 21)"),
])
def test_bad_files_raise_clear_errors(tmp_path: Path, name: str, line: int | None,
                                      column: str | None, text: str) -> None:
    with pytest.raises(IngestError) as err:
        datev.read([FIX / "bad" / name], Settings(), tmp_path)
    assert text in err.value.message
    assert err.value.line == line
    assert err.value.column == column
    assert str(err.value).startswith(str(FIX / "bad" / name))


def test_unquoted_separator_in_text_is_a_row_issue(tmp_path: Path) -> None:
    src = (FIX / "delivery" / "EXTF_Buchungsstapel_2025_01.csv").read_bytes().splitlines()
    src[4] = src[4] + b';"extra"'
    path = tmp_path / "extra.csv"
    path.write_bytes(b"\r\n".join(src) + b"\r\n")
    df, _ = _read([path], tmp_path)
    assert "more fields than the DATEV header" in df.filter(pl.col("source_line") == 5) \
        ["ingest_issue"][0]
    assert df.filter(pl.col("source_line") != 5)["ingest_issue"].null_count() == 8


def test_without_column_name_line_documented_positions_apply(tmp_path: Path) -> None:
    lines = (FIX / "delivery" / "EXTF_Buchungsstapel_2025_01.csv").read_bytes().split(b"\r\n")
    path = tmp_path / "no_names.csv"
    path.write_bytes(b"\r\n".join([lines[0], *lines[2:]]))
    df, _ = _read([path], tmp_path)
    ref, _ = _read([FIX / "delivery" / "EXTF_Buchungsstapel_2025_01.csv"], tmp_path)
    cols = ["journal_id", "line_no", "gl_account", "amount", "posting_date", "entered_by",
            "cost_center", "description"]
    assert df.select(cols).equals(ref.select(cols))
    assert df["source_line"].min() == 2


def test_sniff_and_auto_detect(tmp_path: Path) -> None:
    batch = FIX / "delivery" / "EXTF_Buchungsstapel_2025_01.csv"
    accounts = FIX / "delivery" / "EXTF_Kontenbeschriftungen.csv"
    assert datev.sniff(batch, decode_head(read_head(batch))) == 1.0
    assert datev.sniff(accounts, decode_head(read_head(accounts))) == 0.6
    assert datev.sniff(batch, "Journal_ID,Amount\n1,2\n") == 0.0
    assert detect_format(sorted((FIX / "delivery").iterdir())) == "datev"
    result = ingest([FIX / "delivery"], "auto", Settings(), tmp_path)
    assert result.format == "datev"
    assert result.bookings.collect().height == 10


def test_large_file_streams_through_a_transcoded_copy(tmp_path: Path) -> None:
    """20,000 cp1252 rows: read lazily from a chunk-transcoded UTF-8 copy, counts and sums exact."""
    lines = (FIX / "delivery" / "EXTF_Buchungsstapel_2025_01.csv").read_bytes().split(b"\r\n")
    head, row = lines[:2], lines[2]
    path = tmp_path / "big.csv"
    with open(path, "wb") as fh:
        fh.write(b"\r\n".join(head) + b"\r\n")
        for i in range(20_000):
            fh.write(row.replace(b'"RE-1001"', b'"RE-%d"' % i) + b"\r\n")
    result = datev.read([path], Settings(), tmp_path / "work")
    assert isinstance(result.bookings, pl.LazyFrame)
    assert list((tmp_path / "work").glob("*big.csv.utf8"))  # transcoded copy, not a Python string
    agg = result.bookings.select(pl.len(), pl.col("amount").sum(),
                                 pl.col("journal_id").n_unique()).collect()
    assert agg.row(0) == (40_000, Decimal("0.00"), 20_000)


@pytest.mark.parametrize(("raw", "expected"), [
    ("1501", date(2025, 1, 15)),
    ("501", date(2025, 1, 5)),       # TMM without leading zero
    ("3112", date(2024, 12, 31)),    # December voucher in a January batch
    ("0502", date(2025, 2, 5)),      # a few days after the period: same year, not last year
    ("2902", date(2024, 2, 29)),     # only 2024 has a 29 February
    ("15012025", date(2025, 1, 15)),
    ("1301", date(2025, 1, 13)), ("3102", None), ("0113", None), ("abc", None), ("", None),
])
def test_voucher_date_year_from_period(raw: str, expected: date | None) -> None:
    out = datev.with_voucher_date(pl.DataFrame({"b": [raw]}), "b", date(2025, 1, 1),
                                  date(2025, 1, 31), "v", "i")
    assert out["v"][0] == expected
    assert (out["i"][0] is None) == (expected is not None)


def test_unknown_column_name_falls_back_to_position_with_a_warning(tmp_path: Path) -> None:
    lines = (FIX / "delivery" / "EXTF_Buchungsstapel_2025_01.csv").read_bytes().split(b"\r\n")
    lines[1] = lines[1].replace(b"Konto;Gegenkonto", b"Kontonr. (Sachkonto);Gegenkonto", 1)
    path = tmp_path / "renamed.csv"
    path.write_bytes(b"\r\n".join(lines))
    df, result = _read([path], tmp_path)
    assert result.warnings[0] == (f"{path}: column 'Konto' not found by name; using position 7 "
                                  "('Kontonr. (Sachkonto)')")
    assert df.filter(pl.col("journal_id") == "K-17").sort("line_no")["gl_account"].to_list() \
        == ["1000", "4930"]


def test_header_only_batch_is_a_warning_not_an_error(tmp_path: Path) -> None:
    lines = (FIX / "delivery" / "EXTF_Buchungsstapel_2025_01.csv").read_bytes().split(b"\r\n")
    path = tmp_path / "no_rows.csv"
    path.write_bytes(b"\r\n".join(lines[:2]) + b"\r\n")
    df, result = _read([path], tmp_path)
    assert df.height == 0
    assert result.warnings == [f"{path}: the Buchungsstapel holds no bookings"]


def test_file_ending_inside_a_quoted_text_is_truncated(tmp_path: Path) -> None:
    data = (FIX / "delivery" / "EXTF_Buchungsstapel_2025_01.csv").read_bytes()
    cut = data[: data.index(b"Porto Dezember") + 5]  # ends inside "Porto Dezember"
    path = tmp_path / "cut.csv"
    path.write_bytes(cut)
    with pytest.raises(IngestError) as err:
        datev.read([path], Settings(), tmp_path)
    assert err.value.line == 5
    assert "file ends inside a quoted field" in err.value.message


def test_all_eight_beleginfo_pairs_and_reference_from_belegfeld_2(tmp_path: Path) -> None:
    df, result = _read([FIX / "beleginfo" / "EXTF_Buchungsstapel_2025_02.csv"], tmp_path)
    assert df.height == 8 and df["ingest_issue"].null_count() == 8
    cols = ["journal_id", "posting_date", "document_date", "entered_by", "approved_by",
            "entered_at", "source", "document_type", "reference", "reversal_of"]
    rows = {r[0]: r[1:] for r in df.filter(pl.col("line_no") % 2 == 1).select(cols).iter_rows()}
    # Quelle, Belegart, Erfasst am, Belegdatum, Genehmiger, User, Storno zu, Referenz in pairs 1-8
    assert rows["RE-3001"] == (date(2025, 2, 3), date(2025, 1, 28), "mmueller", "kschmidt",
                               datetime(2025, 2, 3, 7, 15), "Schnittstelle", "ER",
                               "INV-2025-000123456", "RE-0999")
    # no Beleginfo: Belegfeld 2 is the reference; user and source from the header
    assert rows["RE-3002"] == (date(2025, 2, 4), date(2025, 2, 4), "AB", None, None, "RE", None,
                               "R8812", None)
    assert rows["K-30"][7] is None  # Belegfeld 1 is the journal id, not a reference
    # pairs 6-8 only
    assert rows["K-31"][2:5] == ("lwagner", "kschmidt", datetime(2025, 2, 5, 16, 45, 10))
    # both lines of a row carry the row's attributes
    assert df.filter(pl.col("journal_id") == "RE-3001")["reference"].to_list() \
        == ["INV-2025-000123456"] * 2


def test_beleginfo_names_are_matched_like_column_names() -> None:
    art = pl.DataFrame({"a": ["Erfasst am", "ERFASSUNGSDATUM", "Storno-zu", "Freigegeben von",
                              "Benutzer", "Belegart ", "unbekannt"]})
    out = art.select(datev._norm_expr(pl.col("a")))["a"].to_list()
    target = {n: t for t, names in datev.BELEGINFO_MAP.items() for n in names}
    assert [target.get(n) for n in out] == ["entered_at", "entered_at", "reversal_of",
                                            "approved_by", "entered_by", "document_type", None]


def test_unparseable_beleginfo_dates_are_row_issues(tmp_path: Path) -> None:
    data = (FIX / "beleginfo" / "EXTF_Buchungsstapel_2025_02.csv").read_bytes()
    path = tmp_path / "bad_info.csv"
    path.write_bytes(data.replace(b'"28.01.2025"', b'"31.02.2025"')
                     .replace(b'"03.02.2025 07:15:00"', b'"gestern"'))
    df, _ = _read([path], tmp_path)
    row = df.filter(pl.col("journal_id") == "RE-3001")
    issue = row["ingest_issue"][0]
    assert "Beleginfo Belegdatum: '31.02.2025' is not a date" in issue
    assert "Beleginfo Erfassungsdatum: 'gestern' is not a timestamp" in issue
    assert row["document_date"][0] == date(2025, 2, 3)  # falls back to the posting date
    assert row["entered_at"][0] is None
    assert df.filter(pl.col("journal_id") != "RE-3001")["ingest_issue"].null_count() == 6
