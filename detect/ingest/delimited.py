"""Delimited text tables read as all-string LazyFrames, in bounded memory (DATEV and SAP readers).

Why a helper: both formats need the same three things that plain ``pl.scan_csv`` does not give:
column names that we choose (headers repeat names or carry a BOM), a provenance line number per
record, and a clear error when the file was cut off mid-row. Rows with *more* fields than the
header land in ``_overflow`` so the caller can report them per row instead of failing the file.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from pathlib import Path

import polars as pl

from detect.errors import IngestError
from detect.ingest.textio import as_utf8, count_lines, ends_with_newline

OVERFLOW = "_overflow"
LINE = "_line"
_TAIL = 256 * 1024


def norm_name(name: str) -> str:
    """Column name for tolerant matching: lower case, no accents, only letters and digits.

    ``"Gegenkonto (ohne BU-Schlüssel)"`` -> ``"gegenkontoohnebuschlussel"``;
    ``"Beleginfo – Art 1"`` and ``"Beleginfo - Art 1"`` -> ``"beleginfoart1"``.
    """
    text = unicodedata.normalize("NFKD", name.replace("ß", "ss"))
    text = "".join(c for c in text if not unicodedata.combining(c))
    return re.sub(r"[^a-z0-9]", "", text.lower())


def split_line(line: str, sep: str) -> list[str]:
    """Fields of one delimited line (CSV quoting with doubled quotes)."""
    rows = list(csv.reader(io.StringIO(line.rstrip("\r\n")), delimiter=sep, quotechar='"'))
    return rows[0] if rows else []


def head_lines(path: Path, encoding: str, n: int, size: int = 1024 * 1024) -> list[str]:
    """The first ``n`` physical lines of ``path`` decoded with ``encoding`` (BOM removed)."""
    with open(path, "rb") as fh:
        head = fh.read(size)
    enc = "utf-8-sig" if encoding in ("utf-8", "utf-8-sig") else encoding
    text = head.decode(enc, errors="replace")
    lines = text.splitlines()
    if len(head) == size and lines:
        lines = lines[:-1]  # possibly cut
    return lines[:n]


def utf8_source(path: Path, encoding: str, workdir: Path | None) -> Path:
    """A path Polars can read: the file itself when UTF-8 (a BOM sits on a header line we skip),
    else a chunk-transcoded copy (``textio.as_utf8``)."""
    if encoding in ("utf-8", "utf-8-sig"):
        return path
    return as_utf8(path, encoding, workdir)


def check_last_line(path: Path, encoding: str, sep: str, n_fields: int) -> None:
    """Raise when the file ends mid-row: no final newline *and* a short or unclosed last row.

    A complete last row without a trailing newline is accepted (editors do that).
    """
    if ends_with_newline(path):
        return
    size = path.stat().st_size
    with open(path, "rb") as fh:
        fh.seek(max(0, size - _TAIL))
        tail = fh.read()
    last = tail.rsplit(b"\n", 1)[-1]
    enc = "utf-8" if encoding in ("utf-8", "utf-8-sig") else encoding
    text = last.decode(enc, errors="replace")
    line_no = count_lines(path) + 1
    try:
        fields = next(csv.reader(io.StringIO(text), delimiter=sep, quotechar='"', strict=True))
    except (csv.Error, StopIteration):
        fields = None
    if fields is None or text.count('"') % 2 == 1:
        raise IngestError("file ends inside a quoted field: the last row is cut off "
                          "(truncated transfer?)", file=str(path), line=line_no,
                          hint="ask for the complete export")
    if len(fields) < n_fields:
        column = None
        raise IngestError(f"file ends mid-row: the last line has {len(fields)} of {n_fields} "
                          "fields (truncated transfer?)", file=str(path), line=line_no,
                          column=column, hint="ask for the complete export")


def scan_strings(path: Path, sep: str, n_fields: int, *, skip_lines: int,
                 first_line_no: int) -> pl.LazyFrame:
    """All-string scan with columns ``c0..c{n-1}``, ``_overflow`` and ``_line`` (record number
    counted from ``first_line_no``; equals the physical line unless a quoted field holds a line
    break)."""
    schema = {f"c{i}": pl.String() for i in range(n_fields)}
    schema[OVERFLOW] = pl.String()
    return pl.scan_csv(
        path, separator=sep, has_header=False, skip_lines=skip_lines, schema=schema,
        quote_char='"', truncate_ragged_lines=True, missing_columns="insert",
        row_index_name=LINE, row_index_offset=first_line_no, raise_if_empty=False,
    ).with_columns(pl.col(LINE).cast(pl.Int64))


def overflow_issue(source: str) -> pl.Expr:
    """Issue text for rows with more fields than the header names."""
    return pl.when(pl.col(OVERFLOW).is_not_null()).then(pl.lit(
        f"row has more fields than the {source} header names (an unquoted separator in a "
        "text field?)"))
