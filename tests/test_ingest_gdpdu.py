"""GoBD / GDPdU index.xml: typed tables (delimited ANSI, fixed-length UTF-8), mapping, bad files.

No genuine GDPdU export is available; the fixtures are built from the DTD gdpdu-01-09-2004 by
tests/fixtures/gdpdu/make_fixtures.py (see its docstring).
"""

from __future__ import annotations

import shutil
from datetime import date
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from detect.config import Settings
from detect.errors import ConfigError, IngestError
from detect.ingest import INGEST_SCHEMA, ingest
from detect.ingest.gdpdu import parse_index, read_gdpdu_tables

FIX = Path(__file__).parent / "fixtures" / "gdpdu"
REPO = Path(__file__).parents[1]
PROFILE = REPO / "mappings" / "example_gdpdu.toml"


def test_index_is_parsed_with_dtd_defaults() -> None:
    tables = parse_index(FIX / "delimited" / "index.xml")
    assert [t.name for t in tables] == ["Buchungen", "Konten"]
    b = tables[0]
    assert (b.encoding, b.decimal, b.grouping, b.column_delimiter) == ("cp1252", ",", ".", ";")
    assert b.skip_bytes == len("Belegnummer;Position;Buchungsdatum;Konto;Betrag;SollHaben;"
                               "Buchungstext;Erfasser\r\n")
    assert [c.name for c in b.columns if c.primary] == ["Belegnummer", "Position"]
    assert b.columns[4].accuracy == 2 and b.columns[5].maps == {"1": "S", "2": "H"}


def test_delimited_ansi_tables_are_typed(tmp_path: Path) -> None:
    tables = read_gdpdu_tables(FIX / "delimited" / "index.xml", tmp_path)
    b = tables["Buchungen"].collect().sort("__line")
    assert b.schema["Buchungsdatum"] == pl.Date and b.schema["Betrag"] == pl.Decimal(38, 2)
    assert b["Betrag"].to_list()[:4] == [Decimal("1234.56"), Decimal("1234.56"),
                                         Decimal("99.90"), Decimal("99.90")]
    assert b["SollHaben"].to_list()[:2] == ["S", "H"]                   # Map 1->S, 2->H
    assert b["Buchungstext"][0] == "Büromaterial Müller"                  # ANSI decoded
    assert b["Buchungstext"][2] == 'Straßenreinigung "Nord"'              # doubled quotes
    assert b["__line"].to_list() == [2, 3, 4, 5, 6, 7]                    # after SkipNumBytes
    assert b["__issue"][4] == ("Buchungsdatum: '31.02.2024' is not a date (%d.%m.%Y); "
                               "Betrag: '12,345' has more than 2 decimal places")
    assert b["__issue"][5] == "Betrag: 'abc' is not a number"
    k = tables["Konten"].collect()
    assert k["Bezeichnung"].to_list() == ["Geschäftsausgaben", "Bank Sparkasse",
                                          "Unterhaltung Straßen"]


def test_fixed_length_utf8_with_implied_accuracy_and_range(tmp_path: Path) -> None:
    j = read_gdpdu_tables(FIX / "fixed" / "index.xml", tmp_path)["Journal"].collect()
    j = j.sort("__line")
    assert j.height == 4                                       # Range From=2 skips the title
    assert j["BelegNr"].to_list() == ["B0000001", "B0000001", "B0000002", "B0000002"]
    assert j["Datum"].to_list() == [date(2024, 1, 5)] * 2 + [date(2024, 12, 31)] * 2
    assert j["Betrag"].to_list() == [Decimal("500"), Decimal("-500"), Decimal("1234.56"),
                                     Decimal("-1234.56")]
    assert j["Text"][2] == "Winterdienst Straße"               # padding stripped, UTF-8
    assert j["__line"].to_list() == [2, 3, 4, 5]
    assert j["__issue"].null_count() == 4


def test_booking_table_mapped_with_profile(tmp_path: Path) -> None:
    result = ingest([FIX / "delimited"], "auto", Settings(mapping=str(PROFILE)), tmp_path / "w")
    assert result.format == "gdpdu"
    df = result.bookings.collect().sort("source_line")
    assert df.schema == INGEST_SCHEMA and df.height == 6
    assert df["amount"].to_list()[:4] == [Decimal("1234.56"), Decimal("-1234.56"),
                                          Decimal("99.90"), Decimal("-99.90")]
    assert df["posting_date"][0] == date(2024, 1, 2) and df["line_no"][1] == 2
    assert df["source_file"][0].endswith("buchungen.csv")
    assert df["source_line"].to_list() == [2, 3, 4, 5, 6, 7]
    assert "Buchungsdatum: '31.02.2024' is not a date" in df["ingest_issue"][4]
    assert df["ingest_issue"][5] == "Betrag: 'abc' is not a number"
    roles = {Path(i.path).name: i.role for i in result.inputs}
    assert roles == {"index.xml": "description", "buchungen.csv": "bookings",
                     "konten.csv": "master:accounts"}
    accounts = result.master["accounts"]
    assert accounts["gl_account"].to_list() == ["5011000", "1810000", "5250000"]
    assert accounts["account_name"][0] == "Geschäftsausgaben"
    assert not any("not mapped" in w for w in result.warnings)


def test_master_table_column_typo(tmp_path: Path) -> None:
    prof = tmp_path / "p.toml"
    prof.write_text(PROFILE.read_text(encoding="utf-8").replace(
        'account_name = "Bezeichnung"', 'account_name = "Name"'), encoding="utf-8")
    with pytest.raises(IngestError, match="table 'Konten' has no column 'Name'"):
        ingest([FIX / "delimited"], "gdpdu", Settings(mapping=str(prof)), tmp_path / "w")


def test_without_profile_the_error_lists_the_tables(tmp_path: Path) -> None:
    with pytest.raises(IngestError) as err:
        ingest([FIX / "delimited"], "auto", Settings(), tmp_path / "w")
    assert "needs a mapping profile" in str(err.value)
    assert "Buchungen (Belegnummer, Position" in str(err.value)


def test_profile_without_gdpdu_table(tmp_path: Path) -> None:
    prof = tmp_path / "p.toml"
    prof.write_text(PROFILE.read_text(encoding="utf-8").replace('table = "Buchungen"', ""),
                    encoding="utf-8")
    with pytest.raises(ConfigError, match=r"no \[gdpdu\] table"):
        ingest([FIX / "delimited"], "gdpdu", Settings(mapping=str(prof)), tmp_path / "w")


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "export"
    shutil.copytree(FIX / "delimited", target)
    return target


def test_missing_table_file(tmp_path: Path) -> None:
    export = _copy(tmp_path)
    (export / "buchungen.csv").unlink()
    with pytest.raises(IngestError, match="'buchungen.csv' named in index.xml is missing"):
        ingest([export], "gdpdu", Settings(mapping=str(PROFILE)), tmp_path / "w")


def test_column_count_mismatch(tmp_path: Path) -> None:
    export = _copy(tmp_path)
    index = export / "index.xml"
    index.write_text(index.read_text(encoding="utf-8").replace(
        "<VariableColumn><Name>Erfasser</Name><AlphaNumeric/></VariableColumn>", ""),
        encoding="utf-8")
    with pytest.raises(IngestError) as err:
        ingest([export], "gdpdu", Settings(mapping=str(PROFILE)), tmp_path / "w")
    assert "buchungen.csv" in str(err.value) and "8 fields" in str(err.value)


def test_broken_index_xml(tmp_path: Path) -> None:
    export = _copy(tmp_path)
    index = export / "index.xml"
    index.write_text(index.read_text(encoding="utf-8").replace("</DataSet>", ""),
                     encoding="utf-8")
    with pytest.raises(IngestError, match="not well-formed XML"):
        ingest([export], "gdpdu", Settings(mapping=str(PROFILE)), tmp_path / "w")


def test_absolute_url_rejected(tmp_path: Path) -> None:
    export = _copy(tmp_path)
    index = export / "index.xml"
    index.write_text(index.read_text(encoding="utf-8").replace(
        "<URL>konten.csv</URL>", "<URL>file:///etc/passwd</URL>"), encoding="utf-8")
    with pytest.raises(IngestError, match="must be a relative path"):
        ingest([export], "gdpdu", Settings(mapping=str(PROFILE)), tmp_path / "w")
