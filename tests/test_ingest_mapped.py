"""Mapped CSV / Parquet / XLSX with a TOML profile (``--format csv``)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from detect.config import Settings
from detect.errors import ConfigError, IngestError
from detect.ingest import INGEST_SCHEMA, ingest
from detect.ingest.mapped import load_profile, strftime_format

FIXTURES = Path(__file__).parent / "fixtures" / "mapped"
REPO = Path(__file__).parents[1]

PROFILE = """
[source]
encoding = "{encoding}"
delimiter = ";"
decimal = ","
thousands = "."
date_formats = ["DD.MM.YYYY"]
[columns]
journal_id = "Belegnummer"
line_no = "Zeile"
posting_date = "Buchungsdatum"
gl_account = "Sachkonto"
description = ["Buchungstext", "Zusatztext"]
entered_date = "Erfassungsdatum"
entered_time = "Erfassungszeit"
[amount]
column = "Betrag"
dc_column = "S/H"
[constants]
currency = "EUR"
entity = "Musterstadt"
"""
CSV = (
    "Belegnummer;Zeile;Buchungsdatum;Sachkonto;Betrag;S/H;Buchungstext;Zusatztext;"
    "Erfassungsdatum;Erfassungszeit\n"
    "B-1;1;31.12.2024;5011000;1.234,56;S;Bürobedarf;Müller;02.01.2025;07:05:00\n"
    "B-1;2;31.12.2024;1810000;1.234,56;H;Bürobedarf;;02.01.2025;07:05:00\n"
)


def _setup(tmp_path: Path, csv: str = CSV, profile: str = PROFILE, encoding: str = "auto",
           file_encoding: str = "utf-8", name: str = "journal.csv") -> tuple[Path, Settings]:
    data = tmp_path / name
    data.write_bytes(csv.encode(file_encoding))
    prof = tmp_path / "profile.toml"
    prof.write_text(profile.replace("{encoding}", encoding), encoding="utf-8")
    return data, Settings(mapping=str(prof))


def _run(files: list[Path], settings: Settings, tmp_path: Path, fmt: str = "csv"):
    result = ingest(files, fmt, settings, tmp_path / "work")
    return result, result.bookings.collect().sort("source_file", "source_line")


def test_cp1252_german_csv_with_dc_column(tmp_path: Path) -> None:
    data, settings = _setup(tmp_path, file_encoding="cp1252")
    result, df = _run([data], settings, tmp_path)
    assert result.format == "csv" and df.schema == INGEST_SCHEMA
    assert df["amount"].to_list() == [Decimal("1234.56"), Decimal("-1234.56")]
    assert df["description"].to_list() == ["Bürobedarf Müller", "Bürobedarf"]
    assert df["posting_date"].to_list() == [date(2024, 12, 31)] * 2
    assert df["entered_at"][0] == datetime(2025, 1, 2, 7, 5)
    assert df["fiscal_year"].to_list() == [2024, 2024] and df["period"].to_list() == [12, 12]
    assert df["entity"].unique().to_list() == ["Musterstadt"]
    assert df["currency"].unique().to_list() == ["EUR"]
    assert df["source_line"].to_list() == [2, 3]
    assert df["ingest_issue"].null_count() == 2


def test_explicit_entity_setting_beats_profile_constant(tmp_path: Path) -> None:
    data, settings = _setup(tmp_path)
    settings.entity = "Nebenstadt"
    _, df = _run([data], settings, tmp_path)
    assert df["entity"].unique().to_list() == ["Nebenstadt"]


def test_split_debit_credit_columns_and_skip_rows(tmp_path: Path) -> None:
    profile = """
[source]
delimiter = ","
skip_rows = 2
date_formats = ["%Y-%m-%d"]
[columns]
journal_id = "doc"
posting_date = "date"
gl_account = "account"
fiscal_year = "year"
[amount]
debit_column = "debit"
credit_column = "credit"
"""
    csv = ("Report: journal\nprinted 2025-01-01\ndoc,date,account,debit,credit,year\n"
           "9,2024-06-30,4000,100.00,,2024\n9,2024-06-30,1800,,100.00,2024\n")
    data, settings = _setup(tmp_path, csv, profile)
    _, df = _run([data], settings, tmp_path)
    assert df["amount"].to_list() == [Decimal("100"), Decimal("-100")]
    assert df["source_line"].to_list() == [4, 5]                # 2 skipped + header
    assert df["line_no"].to_list() == [1, 2]
    assert df["entity"].unique().to_list() == ["default"]


def test_bad_cells_are_row_issues_with_line_and_value(tmp_path: Path) -> None:
    csv = CSV + "B-2;1;31.13.2024;4000;12,3,4;S;x;;02.01.2025;07:05:00\n" \
                "B-2;2;31.12.2024;1800;1.00;Q;x;;02.01.2025;07:05:00\n"
    data, settings = _setup(tmp_path, csv)
    _, df = _run([data], settings, tmp_path)
    bad = df.filter(pl.col("ingest_issue").is_not_null())
    assert bad["source_line"].to_list() == [4, 5]
    assert "Buchungsdatum: '31.13.2024' is not a date" in bad["ingest_issue"][0]
    assert "Betrag: '12,3,4' is not a valid amount" in bad["ingest_issue"][0]
    assert "S/H: 'Q' is not a debit/credit code" in bad["ingest_issue"][1]
    # '1.00' with decimal ',' and thousands '.': not a valid group -> an issue, never 100
    assert "Betrag: '1.00' is not a valid amount" in bad["ingest_issue"][1]


def test_missing_mapped_column_names_file_column_and_profile(tmp_path: Path) -> None:
    data, settings = _setup(tmp_path, CSV.replace("Sachkonto", "Konto"))
    with pytest.raises(IngestError) as err:
        _run([data], settings, tmp_path)
    text = str(err.value)
    assert str(data) in text and "'Sachkonto'" in text and "profile.toml" in text


def test_wrong_explicit_encoding_is_an_error(tmp_path: Path) -> None:
    data, settings = _setup(tmp_path, encoding="utf-8", file_encoding="cp1252")
    with pytest.raises(IngestError, match="not valid utf-8") as err:
        _run([data], settings, tmp_path)
    assert str(data) in str(err.value) and "line 2" in str(err.value)


def test_profile_typos_are_config_errors(tmp_path: Path) -> None:
    prof = tmp_path / "p.toml"
    prof.write_text(PROFILE.replace("gl_account =", "gl_acount =").replace("{encoding}", "auto"),
                    encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown key 'gl_acount' in \\[columns\\]"):
        load_profile(prof)
    prof.write_text(PROFILE.replace('"{encoding}"', '"ebcdic"'), encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown encoding 'ebcdic'"):
        load_profile(prof)


def test_no_profile_configured(tmp_path: Path) -> None:
    data, _ = _setup(tmp_path)
    with pytest.raises(IngestError, match="needs a mapping profile"):
        _run([data], Settings(), tmp_path)


def test_auto_format_uses_configured_profile(tmp_path: Path) -> None:
    data, settings = _setup(tmp_path)
    result, df = _run([data], settings, tmp_path, fmt="auto")
    assert result.format == "csv" and df.height == 2


def test_parquet_with_typed_columns(tmp_path: Path) -> None:
    frame = pl.DataFrame({
        "Beleg": ["P1", "P1"], "Datum": [date(2024, 3, 1), date(2024, 3, 1)],
        "Konto": [4000, 1800], "Betrag": [19.99, -19.99], "Pos": [1, 2]})
    path = tmp_path / "journal.parquet"
    frame.write_parquet(path)
    prof = tmp_path / "p.toml"
    prof.write_text('[columns]\njournal_id = "Beleg"\nposting_date = "Datum"\n'
                    'gl_account = "Konto"\nline_no = "Pos"\n[amount]\ncolumn = "Betrag"\n',
                    encoding="utf-8")
    _, df = _run([path], Settings(mapping=str(prof)), tmp_path)
    assert df["amount"].to_list() == [Decimal("19.99"), Decimal("-19.99")]
    assert df["gl_account"].to_list() == ["4000", "1800"]
    assert df["posting_date"].to_list() == [date(2024, 3, 1)] * 2
    assert df["source_line"].to_list() == [1, 2]                 # record numbers


def test_xlsx_sheet(tmp_path: Path) -> None:
    frame = pl.DataFrame({"Beleg": ["X1", None, "X1"],
                          "Datum": ["05.02.2024", None, "05.02.2024"],
                          "Konto": ["4000", None, "1800"], "Betrag": ["10,00", None, "10,00"],
                          "SH": ["S", None, "H"]})          # a blank spreadsheet row inside
    path = tmp_path / "journal.xlsx"
    frame.write_excel(path, worksheet="Buchungen")
    prof = tmp_path / "p.toml"
    prof.write_text('[source]\nsheet = "Buchungen"\ndecimal = ","\n'
                    'date_formats = ["DD.MM.YYYY"]\n[columns]\njournal_id = "Beleg"\n'
                    'posting_date = "Datum"\ngl_account = "Konto"\n'
                    '[amount]\ncolumn = "Betrag"\ndc_column = "SH"\n', encoding="utf-8")
    _, df = _run([path], Settings(mapping=str(prof)), tmp_path)
    assert df["amount"].to_list() == [Decimal("10"), Decimal("-10")]
    assert df["posting_date"].to_list() == [date(2024, 2, 5)] * 2
    assert df["source_line"].to_list() == [2, 4]                 # spreadsheet rows


def test_example_profile_reads_its_fixture(tmp_path: Path) -> None:
    settings = Settings(mapping=str(REPO / "mappings" / "example_infoma.toml"))
    result, df = _run([FIXTURES / "infoma_journal.csv"], settings, tmp_path)
    assert df.height == 4 and df["ingest_issue"].null_count() == 4
    assert df["amount"].sum() == Decimal("0")
    assert df["amount"].to_list()[:2] == [Decimal("2380.00"), Decimal("-2380.00")]
    assert df["entered_at"][0] == datetime(2024, 4, 2, 16, 45, 10)
    assert df["description"][0] == "Reinigung Rathaus April"
    assert df["cost_center"][0] == "11100" and df["vendor_id"][0] == "70012"


def test_strftime_format_translation() -> None:
    assert strftime_format("DD.MM.YYYY") == "%d.%m.%Y"
    assert strftime_format("YYYYMMDD") == "%Y%m%d"
    assert strftime_format("DD.MM.YYYY hh:mm:ss") == "%d.%m.%Y %H:%M:%S"
    assert strftime_format("%Y-%m-%d") == "%Y-%m-%d"
