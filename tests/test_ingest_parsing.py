"""The fast paths of the shared parsers give exactly what the general rules give.

Each parser tries the common shape of a cell first (a raw date in the detected format, a plain
amount, a bare number) and sends only the other cells through the general rule. The references
below are the general rules as they were before the fast paths (issue #10); every tricky shape
we could think of must come out the same.
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest

from detect.config import Settings
from detect.errors import IngestError
from detect.ingest import ingest
from detect.ingest.ads import _one_unit_per_journal
from detect.ingest.parsing import (
    DEFAULT_DATE_PLACEHOLDERS, combine_time, date_parts, decimal_parts, dominant_format,
    format_order, int_parts, literal_skeleton, parse_date, parse_decimal,
)
from detect.ingest.textio import sha256_of
from detect.schema import AMOUNT

DATE_FORMATS = ["%Y%m%d", "%Y-%m-%d", "%m/%d/%Y", "%d.%m.%Y", "%Y/%m/%d"]
DATETIME_FORMATS = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y%m%d%H%M%S",
                    "%Y-%m-%d %H:%M:%S%.f", *DATE_FORMATS]
DATES = ["20240131", " 20240131", "20240131 ", "\t20240131", "2024-01-31", " 2024-01-31 ",
         "01/31/2024", "31.01.2024", "2024/01/31", "20240230", "2024-02-30", "", " ", None,
         "00000000", "00.00.0000", " 00.00.0000 ", "0", "0000-00-00", "19000101", "1900-01-01",
         "x", "2024-1-5", "1.2.2024", "240131", "2024-01-31 10:11:12", "20240131101112",
         "2024-01-31T10:11:12", "2024-01-31 10:11:12.250", " 2024-01-31 10:11:12 ",
         "13/01/2024", "01/13/2024", "+2024-01-31", "-2024-01-31", "99999999"]
AMOUNTS = ["12.5", "-12.50", "+3", ".5", "-.25", "0", "00012.10", "1,234.56", "1,234",
           "12,34", "1.234,56", "100-", "100.00-", " 7 ", "7\u00a0000.10", "1'000.5", "",
           "  ", None, "abc", "1.234", "1.2.3", "--1", "1e3", "12345678901234567.5",
           "9999999999999999.99", "99999999999999999.99", "1,23,456.00", "+-1", "- 1"]
TIMES = ["141059", "90036", "000001", "0", "235959", "14:10:59", "9:00:36", "+12345",
         "-12", " 141059", "141059 ", "1410591", "14105900", "", None, "abc", "+1234567"]


def _old_date(raw: pl.Expr, formats: list[str], placeholders: tuple[str, ...],
              dtype: pl.DataType) -> tuple[pl.Expr, pl.Expr]:
    text = raw.str.strip_chars()
    empty = text.is_null() | text.is_in(list(placeholders))
    value = pl.coalesce([text.str.strptime(dtype, f, strict=False) for f in formats])
    return pl.when(empty).then(None).otherwise(value), empty


def _old_decimal(raw: pl.Expr, decimal: str, thousands: str | None) -> pl.Expr:
    text = raw.str.strip_chars().str.replace_all(r"[\s\u00a0']", "")
    if thousands:
        grouped = rf"^[-+]?\d{{1,3}}(\{thousands}\d{{3}})+(\{decimal}\d+)?-?$"
        text = pl.when(text.str.contains(grouped)).then(
            text.str.replace_all(rf"\{thousands}", "", literal=False)).otherwise(text)
    if decimal != ".":
        text = pl.when(text.str.contains(".", literal=True)).then(pl.lit(None, pl.String)) \
            .otherwise(text.str.replace_all(rf"\{decimal}", ".", literal=False))
    text = pl.when(text.str.ends_with("-")).then(
        pl.concat_str(pl.lit("-"), text.str.strip_chars_end("-"))).otherwise(text)
    ok_shape = text.str.contains(r"^[-+]?(\d+(\.\d{0,2})?|\.\d{1,2})$")
    return pl.when(ok_shape).then(text).cast(AMOUNT, strict=False)


def _old_seconds(time_raw: pl.Expr) -> pl.Expr:
    digits = time_raw.str.replace_all(r"\D", "").str.pad_start(6, "0")
    return (digits.str.slice(0, 2).cast(pl.Int64, strict=False) * 3600
            + digits.str.slice(2, 2).cast(pl.Int64, strict=False) * 60
            + digits.str.slice(4, 2).cast(pl.Int64, strict=False))


@pytest.mark.parametrize("dtype,formats", [(pl.Date(), DATE_FORMATS),
                                           (pl.Datetime("us"), DATETIME_FORMATS)])
@pytest.mark.parametrize("prefer_index", [None, 0, 1, 2, 3, 4])
def test_dates_match_the_general_rule_whatever_format_is_preferred(
        dtype: pl.DataType, formats: list[str], prefer_index: int | None) -> None:
    df = pl.DataFrame({"raw": DATES}, schema={"raw": pl.String})
    prefer = None if prefer_index is None else formats[prefer_index]
    value, empty = date_parts(pl.col("raw"), formats, DEFAULT_DATE_PLACEHOLDERS, dtype, prefer)
    old_value, old_empty = _old_date(pl.col("raw"), formats, DEFAULT_DATE_PLACEHOLDERS, dtype)
    got = df.select(value.alias("v"), empty.alias("e"), old_value.alias("ov"),
                    old_empty.alias("oe"))
    # physical values: strptime accepts signed years that Python dates cannot hold
    assert got["v"].cast(pl.Int64).to_list() == got["ov"].cast(pl.Int64).to_list()
    assert got["e"].to_list() == got["oe"].to_list()


def test_a_placeholder_that_is_a_valid_date_still_becomes_null() -> None:
    df = pl.DataFrame({"raw": ["31.12.9999", "01.02.2024", " 31.12.9999"]})
    value, issue = parse_date(pl.col("raw"), "D", ["%d.%m.%Y"],
                              placeholders=(*DEFAULT_DATE_PLACEHOLDERS, "31.12.9999"))
    got = df.select(value.alias("v"), issue.alias("i"))
    assert got["v"].to_list()[0] is None and got["v"].to_list()[2] is None
    assert got["v"][1] is not None and got["i"].null_count() == 3


def test_preferred_format_only_jumps_formats_it_cannot_overlap() -> None:
    assert literal_skeleton("%d.%m.%Y %H:%M:%S%.f") == ".. ::"
    assert format_order(DATE_FORMATS, "%d.%m.%Y")[0] == "%d.%m.%Y"
    # %d/%m/%Y and %m/%d/%Y share their literals: 01/02/2024 matches both, order decides
    assert format_order(["%m/%d/%Y", "%d/%m/%Y"], "%d/%m/%Y") == ["%m/%d/%Y", "%d/%m/%Y"]
    assert format_order(DATE_FORMATS, None) == DATE_FORMATS
    sample = pl.Series(["31.01.2024", "01.02.2024", "x", None])
    assert dominant_format(sample, DATE_FORMATS, pl.Date()) == "%d.%m.%Y"
    assert dominant_format(pl.Series(["x"]), DATE_FORMATS, pl.Date()) is None


@pytest.mark.parametrize("decimal,thousands", [(".", ","), (".", None), (",", "."),
                                               (",", None), (".", "'")])
def test_amounts_match_the_general_rule(decimal: str, thousands: str | None) -> None:
    df = pl.DataFrame({"raw": AMOUNTS}, schema={"raw": pl.String})
    value, blank = decimal_parts(pl.col("raw"), decimal=decimal, thousands=thousands)
    got = df.select(value.alias("v"), blank.alias("b"),
                    _old_decimal(pl.col("raw"), decimal, thousands).alias("ov"),
                    (pl.col("raw").is_null() | (pl.col("raw").str.strip_chars() == ""))
                    .alias("ob"))
    assert got["v"].to_list() == got["ov"].to_list()
    assert got["b"].to_list() == got["ob"].to_list()
    _, issue = parse_decimal(pl.col("raw"), "Amount", decimal=decimal, thousands=thousands)
    issues = df.select(issue.alias("i"))["i"]
    assert issues.is_not_null().to_list() == (got["v"].is_null() & ~got["b"]).to_list()


def test_whole_numbers_match_the_general_rule() -> None:
    raw = ["1", " 1", "1 ", "+1", "-1", "01", "1.0", "", " ", None, "x", "9" * 30]
    df = pl.DataFrame({"raw": raw}, schema={"raw": pl.String})
    value, blank = int_parts(pl.col("raw"))
    got = df.select(value.alias("v"), blank.alias("b"))
    text = pl.col("raw").str.strip_chars()
    old = df.select(text.cast(pl.Int64, strict=False).alias("v"),
                    (pl.col("raw").is_null() | (text == "")).alias("b"))
    assert got.equals(old)


def test_entry_times_match_the_general_rule() -> None:
    from datetime import date
    df = pl.DataFrame({"t": TIMES, "d": [date(2024, 1, 31)] * len(TIMES)},
                      schema={"t": pl.String, "d": pl.Date})
    got = df.select(combine_time(pl.col("d"), pl.col("t")).alias("x"))["x"]
    old = df.select((pl.col("d").cast(pl.Datetime("us"))
                     + pl.duration(seconds=_old_seconds(pl.col("t")))).alias("x"))["x"]
    assert got.to_list() == old.to_list()


def test_one_unit_per_journal_ordered_and_unordered() -> None:
    key = ["source_file", "journal_id"]

    def frame(journals: list[str | None], units: list[str | None]) -> pl.LazyFrame:
        return pl.LazyFrame({"source_file": ["f"] * len(journals), "journal_id": journals,
                             "entity": units})

    assert _one_unit_per_journal(frame(["1", "1", "2"], ["A", "A", "B"]), key)
    assert not _one_unit_per_journal(frame(["1", "1", "2"], ["A", "B", "B"]), key)
    assert not _one_unit_per_journal(frame(["1", "1"], ["A", None]), key)
    assert _one_unit_per_journal(frame(["1", "1"], [None, None]), key)
    # journal 1 split by journal 2: the exact aggregate decides
    assert _one_unit_per_journal(frame(["1", "2", "1"], ["A", "B", "A"]), key)
    assert not _one_unit_per_journal(frame(["1", "2", "1"], ["A", "B", "C"]), key)
    assert _one_unit_per_journal(frame([None, None, "1"], ["A", "A", "B"]), key)
    assert _one_unit_per_journal(frame([], []), key)


HEADER = ("Journal_ID,Journal_ID_Line_Number,Effective_Date,Fiscal_Year,GL_Account_Number,"
          "Amount,Amount_Credit_Debit_Indicator,Business_Unit_Code\n")


def test_journal_split_over_units_takes_its_first_unit(tmp_path: Path) -> None:
    f = tmp_path / "gl.csv"
    f.write_text(HEADER + "1,1,20240201,2024,4000,1,D,\n2,1,20240201,2024,4000,1,D,B\n"
                 "1,2,20240201,2024,1800,1,C,A\n2,2,20240201,2024,1800,1,C,C\n"
                 "3,1,20240201,2024,1800,1,C,\n", encoding="utf-8")
    result = ingest([f], "auto", Settings(), tmp_path / "work")
    df = result.bookings.collect().sort("source_line")
    assert df["entity"].to_list() == ["A", "B", "A", "B", "default"]


def test_ragged_row_in_a_quoted_file_names_the_line(tmp_path: Path) -> None:
    f = tmp_path / "gl.csv"
    f.write_text(HEADER + '1,1,20240201,2024,4000,1,D,"A"\n1,2,"20240201",2024,1800,1,C,A,x\n',
                 encoding="utf-8")
    with pytest.raises(IngestError) as err:
        ingest([f], "auto", Settings(), tmp_path / "work")
    assert err.value.line == 3 and "9 fields, the header has 8" in str(err.value)


def test_quoted_line_breaks_shift_line_numbers(tmp_path: Path) -> None:
    f = tmp_path / "gl.csv"
    f.write_text(HEADER.replace("\n", ",JE_Line_Description\n")
                 + '1,1,20240201,2024,4000,1,D,A,"two\nlines"\n1,2,20240201,2024,1800,1,C,A,x\n',
                 encoding="utf-8")
    df = ingest([f], "auto", Settings(), tmp_path / "work").bookings.collect()
    assert df.sort("source_line")["source_line"].to_list() == [2, 4]


def test_hash_cache_sees_a_rewritten_file(tmp_path: Path) -> None:
    f = tmp_path / "a.csv"
    f.write_bytes(b"one")
    first = sha256_of(f)
    assert sha256_of(f) == first
    f.write_bytes(b"two")
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert sha256_of(f) != first


def test_hashing_across_buffer_reads_gives_the_file_hash_and_finds_a_late_quote(
        tmp_path: Path, monkeypatch) -> None:
    """``sha256_of`` reads through one reused buffer: the hash and the quote flag must be the
    whole file's, also when the file ends mid-buffer and the quote is in a later read."""
    import hashlib

    from detect.ingest import textio

    monkeypatch.setattr(textio, "HASH_BUFFER", 7)
    late, plain = tmp_path / "late.csv", tmp_path / "plain.csv"
    late.write_bytes(b"a,b\n" * 25 + b'1,"x"\n1,y')
    plain.write_bytes(b"a,b\n" * 25 + b"1,y")
    for f, has_quote in ((late, True), (plain, False)):
        assert sha256_of(f) == hashlib.sha256(f.read_bytes()).hexdigest()
        assert textio._QUOTED[textio.file_identity(f)] is has_quote


def test_the_quote_scan_takes_what_hashing_noted(tmp_path: Path, monkeypatch) -> None:
    """``sha256_of`` notes whether a file holds a quote; ``contains_byte`` then answers without
    reading the file again, also for a file rewritten in between (new identity: read)."""
    from detect.ingest import textio

    quoted, plain = tmp_path / "q.csv", tmp_path / "p.csv"
    quoted.write_bytes(b"a,b\n" * 1000 + b'1,"x"\n')
    plain.write_bytes(b"a,b\n1,x\n")
    sha256_of(quoted), sha256_of(plain)
    real_open = open

    def no_read(path, *args, **kwargs):
        if Path(path) in (quoted, plain):
            raise AssertionError(f"{path} read again")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", no_read)
    assert textio.contains_byte(quoted, b'"') is True
    assert textio.contains_byte(plain, b'"') is False
    monkeypatch.setattr("builtins.open", real_open)
    assert textio.contains_byte(plain, b"x") is True   # other bytes: scanned as before
    plain.write_bytes(b'a,b\n1,"x"\n')
    st = plain.stat()
    os.utime(plain, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert textio.contains_byte(plain, b'"') is True


def _long_ascii_start(rows: int = 40_000) -> bytes:
    """More than the first MiB (``textio.HEAD_CHECK``) of plain ASCII rows."""
    return b"".join(b"1,%d,20240201,2024,4000,1,D,A\n" % i for i in range(1, rows))


def test_cp1252_after_the_first_mib_is_read_again_as_cp1252(tmp_path: Path) -> None:
    f = tmp_path / "gl.csv"
    body = _long_ascii_start()
    f.write_bytes(HEADER.replace("\n", ",JE_Line_Description\n").encode()
                  + body.replace(b",A\n", b",A,x\n") + "2,1,20240201,2024,4000,1,D,A,Büro\n"
                  .encode("cp1252"))
    df = ingest([f], "auto", Settings(), tmp_path / "work").bookings.collect()
    assert df.filter(pl.col("journal_id") == "2")["description"].to_list() == ["Büro"]
    assert df["ingest_issue"].null_count() == df.height


def test_bad_byte_after_the_first_mib_names_its_line(tmp_path: Path) -> None:
    f = tmp_path / "gl.csv"
    body = _long_ascii_start()
    f.write_bytes(HEADER.encode() + body + b"2,1,20240201,2024,\x81\x8d,1,D,A\n")
    with pytest.raises(IngestError) as err:
        ingest([f], "auto", Settings(), tmp_path / "work")
    assert err.value.line == body.count(b"\n") + 2
    assert "neither UTF-8 nor Windows-1252" in str(err.value)


@pytest.mark.parametrize("row", ['1,2,20240201,2024,1800,1,C,"abc\n',
                                 '1,2,20240201,2024,1800,1,C,a"b\n'])
def test_broken_quoting_is_an_ingest_error_naming_the_file(tmp_path: Path, row: str) -> None:
    f = tmp_path / "gl.csv"
    f.write_text(HEADER + '1,1,20240201,2024,4000,1,D,"A"\n' + row
                 + "1,3,20240201,2024,1800,1,C,A\n", encoding="utf-8")
    with pytest.raises(IngestError, match="cannot read as delimited text") as err:
        ingest([f], "auto", Settings(), tmp_path / "work")
    assert err.value.file == str(f)
