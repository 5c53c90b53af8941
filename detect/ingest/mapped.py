"""Generic CSV / Parquet / XLSX with a mapping profile (``--format csv``).

Users with an ERP we do not know start here: a small TOML profile says which source column
feeds which canonical column, how dates and amounts are written and how debit/credit is coded.
The same machinery (``to_bookings``) turns ADS and GoBD tables into canonical bookings, so there
is one place where text becomes typed, signed, provenance-carrying booking lines.

Profile (all sections but ``[columns]`` optional)::

    [source]
    encoding = "auto"            # auto | utf-8 | cp1252
    delimiter = ";"              # default: sniffed from the header line
    decimal = ","                # decimal mark
    thousands = "."              # grouping mark, only accepted in groups of three
    date_formats = ["DD.MM.YYYY", "%Y-%m-%d"]
    datetime_formats = ["DD.MM.YYYY hh:mm:ss"]
    skip_rows = 0                # lines before the header
    sheet = "Buchungen"          # XLSX sheet name (default: first sheet)

    [columns]                    # canonical = "Source column" | ["A", "B"] (joined by a space)
    journal_id = "Belegnr"
    posting_date = "Buchungsdatum"
    gl_account = "Konto"

    [amount]                     # one of three shapes:
    column = "Betrag"            # signed amount, or with a D/C column:
    dc_column = "S/H"
    debit_codes = ["S", "D"]
    credit_codes = ["H", "C"]
    # debit_column = "Soll" / credit_column = "Haben"   (two unsigned columns)

    [constants]
    entity = "Musterstadt"
    currency = "EUR"
"""

from __future__ import annotations

import csv
import io
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from detect.config import Settings
from detect.errors import ConfigError, IngestError
from detect.ingest import INGEST_SCHEMA, IngestResult, InputFile
from detect.ingest.parsing import (
    cell_issue, combine_time, date_parts, decimal_parts, dominant_format, gather_issues,
    int_parts, strip_or_null,
)
from detect.ingest.textio import (
    EncodingChanged, as_utf8, contains_byte, count_lines, detect_encoding, ends_with_newline,
    read_head, sha256_of,
)
from detect.schema import AMOUNT, BOOKING_SCHEMA, MASTER_SCHEMAS, conform

NAME = "csv"

LINE = "__line"
"""Physical line (or record) of each raw row; becomes ``source_line``."""
ISSUE = "__issue"
"""Parse problems a reader found before mapping (e.g. GoBD typed columns)."""

TABLE_SUFFIXES = {".csv", ".txt", ".tsv", ".dat", ".parquet", ".xlsx", ".xlsm"}
DEFAULT_DATE_FORMATS = ["%Y-%m-%d", "%d.%m.%Y", "%Y%m%d", "%d/%m/%Y"]
DEFAULT_DATETIME_FORMATS = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%d.%m.%Y %H:%M:%S",
                            "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%d.%m.%Y %H:%M"]
ENCODINGS = {"auto": None, "utf-8": "utf-8", "utf8": "utf-8", "utf-8-sig": "utf-8-sig",
             "cp1252": "cp1252", "windows-1252": "cp1252", "ansi": "cp1252",
             "latin-1": "latin-1", "iso-8859-1": "latin-1", "iso-8859-15": "iso8859_15"}
# Canonical columns a profile may map; amount has its own section, provenance is ours.
MAPPABLE = [c for c in BOOKING_SCHEMA if c not in ("amount", "source_file", "source_line")]
EXTRA_KEYS = ["entered_date", "entered_time"]
"""Pseudo-columns: a date and a time column combined into ``entered_at`` (SAP CPUDT+CPUTM)."""
REQUIRED_MAPPED = ("journal_id", "gl_account", "posting_date")


# --- profile -----------------------------------------------------------------------------------

@dataclass
class SourceOptions:
    encoding: str = "auto"
    delimiter: str | None = None
    quote: str = '"'
    decimal: str = "."
    thousands: str | None = None
    date_formats: list[str] = field(default_factory=lambda: list(DEFAULT_DATE_FORMATS))
    datetime_formats: list[str] = field(default_factory=lambda: list(DEFAULT_DATETIME_FORMATS))
    date_placeholders: list[str] = field(default_factory=list)
    skip_rows: int = 0
    sheet: str | None = None


@dataclass
class AmountSpec:
    column: str | None = None
    dc_column: str | None = None
    debit_codes: list[str] = field(default_factory=lambda: ["D", "S", "DEBIT", "SOLL", "+"])
    credit_codes: list[str] = field(default_factory=lambda: ["C", "H", "CREDIT", "HABEN", "-"])
    debit_column: str | None = None
    credit_column: str | None = None

    @property
    def kind(self) -> str:
        if self.debit_column or self.credit_column:
            return "split"
        return "dc" if self.dc_column else "signed"

    def source_columns(self) -> list[str]:
        return [c for c in (self.column, self.dc_column, self.debit_column, self.credit_column)
                if c]


@dataclass
class Profile:
    name: str
    """Where the profile came from (a path, or 'built-in ADS'), for error messages."""
    source: SourceOptions = field(default_factory=SourceOptions)
    columns: dict[str, list[str]] = field(default_factory=dict)
    amount: AmountSpec = field(default_factory=AmountSpec)
    constants: dict[str, str] = field(default_factory=dict)
    gdpdu_table: str | None = None
    gdpdu_master: dict[str, dict[str, str]] = field(default_factory=dict)
    """GoBD only: master name -> {"table": described table, <master column>: source column}."""


def _to_list(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def strftime_format(fmt: str) -> str:
    """``DD.MM.YYYY hh:mm:ss`` (GoBD/Excel style) -> ``%d.%m.%Y %H:%M:%S``; strftime passes."""
    if "%" in fmt:
        return fmt
    out = fmt
    for token, repl in (("YYYY", "%Y"), ("JJJJ", "%Y"), ("YY", "%y"), ("JJ", "%y"),
                        ("MM", "%m"), ("DD", "%d"), ("TT", "%d"), ("hh", "%H"), ("HH", "%H"),
                        ("mm", "%M"), ("ss", "%S"), ("SS", "%S")):
        out = out.replace(token, repl)
    return out


def _check_keys(data: dict[str, Any], allowed: set[str], section: str, where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in [{section}]", file=where,
                          hint=f"allowed: {', '.join(sorted(allowed))}")


def profile_from_dict(data: dict[str, Any], where: str) -> Profile:
    """Validate a parsed profile; unknown sections and keys are errors (typos must not pass)."""
    _check_keys(data, {"source", "columns", "amount", "constants", "gdpdu"}, "profile", where)
    src = dict(data.get("source", {}))
    _check_keys(src, {f for f in SourceOptions.__dataclass_fields__} | {"date_format",
                "datetime_format"}, "source", where)
    if "date_format" in src:
        src["date_formats"] = _to_list(src.pop("date_format"))
    if "datetime_format" in src:
        src["datetime_formats"] = _to_list(src.pop("datetime_format"))
    if str(src.get("encoding", "auto")).lower() not in ENCODINGS:
        raise ConfigError(f"unknown encoding {src['encoding']!r} in [source]", file=where,
                          hint="use auto, utf-8 or cp1252")
    source = SourceOptions(**src)
    source.encoding = source.encoding.lower()
    source.date_formats = [strftime_format(f) for f in _to_list(source.date_formats)]
    source.datetime_formats = [strftime_format(f) for f in _to_list(source.datetime_formats)]
    if source.decimal not in (",", "."):
        raise ConfigError(f"decimal must be ',' or '.', not {source.decimal!r}", file=where)
    columns_raw = data.get("columns", {})
    _check_keys(columns_raw, set(MAPPABLE) | set(EXTRA_KEYS), "columns", where)
    columns = {k: _to_list(v) for k, v in columns_raw.items()}
    amount_raw = data.get("amount", {})
    _check_keys(amount_raw, set(AmountSpec.__dataclass_fields__), "amount", where)
    amount = AmountSpec(**amount_raw)
    if not (amount.column or amount.debit_column or amount.credit_column):
        raise ConfigError("[amount] needs 'column' (signed, or with 'dc_column') or "
                          "'debit_column' and 'credit_column'", file=where)
    constants = {k: str(v) for k, v in data.get("constants", {}).items()}
    _check_keys(constants, set(MAPPABLE), "constants", where)
    gdpdu = dict(data.get("gdpdu", {}))
    _check_keys(gdpdu, {"table"} | set(MASTER_SCHEMAS), "gdpdu", where)
    gdpdu_master: dict[str, dict[str, str]] = {}
    for name in MASTER_SCHEMAS:
        if name in gdpdu:
            spec = {k: str(v) for k, v in gdpdu.pop(name).items()}
            _check_keys(spec, {"table"} | set(MASTER_SCHEMAS[name]), f"gdpdu.{name}", where)
            key = MASTER_SCHEMAS[name].names()[0]
            if "table" not in spec or key not in spec:
                raise ConfigError(f"[gdpdu.{name}] needs table and {key}", file=where)
            gdpdu_master[name] = spec
    missing = [c for c in REQUIRED_MAPPED if c not in columns and c not in constants]
    if missing:
        raise ConfigError(f"[columns] must map {', '.join(missing)}", file=where)
    return Profile(where, source, columns, amount, constants, gdpdu.get("table"), gdpdu_master)


def load_profile(path: Path) -> Profile:
    if not path.exists():
        raise ConfigError("mapping profile not found", file=str(path),
                          hint="set mapping = \"...\" in belegwacht.toml to an existing file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", file=str(path)) from exc
    return profile_from_dict(data, str(path))


# --- reading raw tables ------------------------------------------------------------------------

def resolve_encoding(path: Path, wanted: str, *, trust_head: bool = False) -> str:
    """The encoding to decode ``path`` with; 'auto' checks the whole file (bounded memory).

    ``trust_head``: a UTF-8 file is only checked as far as ``textio.detect_encoding`` says;
    the caller must run the full check (without it) if reading the file fails.
    """
    enc = ENCODINGS.get(wanted.lower(), "?")
    if enc == "?":
        raise IngestError(f"unknown encoding {wanted!r}", file=str(path),
                          hint="use auto, utf-8 or cp1252")
    if enc is None:
        return detect_encoding(path, trust_head=trust_head)
    if enc.startswith("utf-8") and trust_head:
        return "utf-8-sig" if read_head(path, 3) == b"\xef\xbb\xbf" else "utf-8"
    if enc.startswith("utf-8"):
        # polars would fail later with no line number: check now, naming the first bad line
        from detect.ingest.textio import _check_decodes
        bom = read_head(path, 3) == b"\xef\xbb\xbf"
        _check_decodes(path, "utf-8", skip=3 if bom else 0)
        return "utf-8-sig" if bom else "utf-8"
    return enc


def to_utf8(path: Path, encoding: str, workdir: Path | None) -> Path:
    """UTF-8 copy of ``path`` (or the file itself); decode errors become an IngestError."""
    try:
        return as_utf8(path, encoding, workdir)
    except UnicodeDecodeError as exc:
        raise IngestError(f"not valid {encoding} at byte {exc.start} of a chunk",
                          file=str(path), hint="set [source] encoding to the file's real "
                          "encoding (utf-8 or cp1252)") from exc


def check_not_blank(path: Path) -> None:
    """An empty file, or one holding only blank lines, is an error naming the file."""
    size = path.stat().st_size
    if size == 0:
        raise IngestError("file is empty", file=str(path))
    if size <= 64 * 1024 and not read_head(path).lstrip(b"\xef\xbb\xbf").strip():
        raise IngestError("file is empty (only blank lines)", file=str(path))


def sniff_delimiter(header: str) -> str:
    counts = {d: header.count(d) for d in (";", ",", "\t", "|")}
    return max(counts, key=lambda d: counts[d]) if any(counts.values()) else ","


def _first_line(path: Path) -> str:
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        return fh.readline().lstrip("\ufeff").rstrip("\r\n")


def _locate_ragged(path: Path, delimiter: str, quote: str, skip_rows: int) -> tuple[int, int, int]:
    """(physical line, fields, expected) of the first row with too many fields (error path only)."""
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        for _ in range(skip_rows):
            fh.readline()
        reader = csv.reader(fh, delimiter=delimiter, quotechar=quote or None)
        expected, line = -1, skip_rows
        for row in reader:
            line_start = line + 1
            line = skip_rows + reader.line_num
            if expected < 0:
                expected = len(row)
            elif len(row) > expected:
                return line_start, len(row), expected
    return 0, 0, expected


@dataclass
class DelimitedScan:
    """A delimited file ready to read (``frame``), with what a reader needs besides it."""

    frame: pl.LazyFrame
    """All-String source columns plus ``__line`` (and ``__issue`` for a cut-off last row)."""
    check: Callable[[], object]
    """Reads every field once and raises the ``IngestError`` that a malformed file deserves
    (a row with too many fields, broken quoting), naming file and line. A well-formed file
    passes; the caller may run it up front or only when reading ``frame`` fails."""
    sample: pl.DataFrame | None
    """The first few hundred rows as text (source column names), to pick parse formats;
    None when the head cannot be read on its own."""


def scan_delimited(path: Path, *, encoding: str = "auto", delimiter: str | None = None,
                   quote: str = '"', skip_rows: int = 0, workdir: Path | None = None,
                   has_header: bool = True, column_names: list[str] | None = None,
                   eol: str = "\n") -> pl.LazyFrame:
    """A delimited text file as all-String columns plus ``__line`` (physical line number).

    Header = line ``skip_rows + 1``; the first data row is the next line. Quoted fields with
    embedded line breaks shift the following rows' line numbers accordingly; blank lines are
    counted and dropped. A malformed file raises here (``DelimitedScan.check`` runs up front);
    big tables use ``open_delimited`` and check only when the read fails.
    """
    scan = open_delimited(path, encoding=encoding, delimiter=delimiter, quote=quote,
                          skip_rows=skip_rows, workdir=workdir, has_header=has_header,
                          column_names=column_names, eol=eol, check_now=True)
    return scan.frame


def open_delimited(path: Path, *, encoding: str = "auto", delimiter: str | None = None,
                   quote: str = '"', skip_rows: int = 0, workdir: Path | None = None,
                   has_header: bool = True, column_names: list[str] | None = None,
                   eol: str = "\n", check_now: bool = False) -> DelimitedScan:
    """``scan_delimited`` without the up-front full read (unless ``check_now``).

    The check reads the whole file once (about 1 s per 1M lines); the read of the bookings
    fails on the same rows anyway (a blank-line filter touches every column), so
    ``materialise`` runs the check only then, to turn Polars' error into ours. Line numbers
    need the record count only when the file has quote characters (only a quoted field can
    hold a line break); that count is Polars' fast row count, not a parse. The encoding, too,
    is checked in full only then (Polars rejects invalid UTF-8 itself): a file whose first MiB
    is UTF-8 is read as UTF-8, and if it is not, the check raises ``EncodingChanged`` and
    ``ingest`` reads the delivery again with the encoding the full check found.
    """
    check_not_blank(path)
    enc = resolve_encoding(path, encoding, trust_head=not check_now)
    utf8 = to_utf8(path, enc, workdir)
    header = _first_line(utf8) if has_header and skip_rows == 0 else ""
    if has_header and skip_rows:
        with open(utf8, encoding="utf-8", errors="replace", newline="") as fh:
            for _ in range(skip_rows + 1):
                header = fh.readline().rstrip("\r\n")
    sep = delimiter or sniff_delimiter(header or _first_line(utf8))
    sep = "\t" if sep in ("\\t", "tab", "TAB") else sep
    scan = pl.scan_csv(utf8, separator=sep, quote_char=quote or None, infer_schema=False,
                       has_header=has_header, skip_rows=skip_rows, row_index_name="__record",
                       new_columns=column_names, eol_char=eol)
    try:
        names = [n for n in scan.collect_schema().names() if n != "__record"]
    except pl.exceptions.SchemaError as exc:   # column_names given but the file differs
        with open(utf8, encoding="utf-8", errors="replace", newline="") as fh:
            first = next(csv.reader(fh, delimiter=sep, quotechar=quote or None), [])
        raise IngestError(f"row has {len(first)} fields, {len(column_names or [])} columns "
                          "are described", file=str(path), line=1,
                          hint="the table description and the file disagree") from exc

    def check() -> int:
        if not check_now and resolve_encoding(path, encoding) != enc:
            raise EncodingChanged(str(path))   # e.g. cp1252 after a UTF-8 first MiB
        try:
            # Touch every field once (streaming, bounded memory): ragged rows fail here.
            return scan.select(pl.len().alias("__n"),
                               pl.all().exclude("__record").null_count()) \
                .collect(engine="streaming")["__n"][0]
        except pl.exceptions.ComputeError as exc:
            line, got, expected = _locate_ragged(utf8, sep, quote, skip_rows)
            if line:
                first = "the header" if has_header else "the first row"
                raise IngestError(f"row has {got} fields, {first} has {expected}",
                                  file=str(path), line=line,
                                  hint="check the delimiter and quoting of that line") from exc
            raise IngestError(f"cannot read as delimited text: {exc}".splitlines()[0],
                              file=str(path)) from exc

    n_records = check() if check_now else None
    if has_header and not names:
        raise IngestError("file has no header line", file=str(path))
    first_data_line = skip_rows + (2 if has_header else 1)
    frame = scan
    if quote and (n_records is not None or contains_byte(utf8, quote.encode())):
        if n_records is None:
            try:
                n_records = scan.select(pl.len()).collect().item()
            except pl.exceptions.ComputeError:   # broken quoting: the check names it
                n_records = check()
        # Physical lines = records + header + skipped (+ 1 for a missing final newline); any
        # surplus comes from line breaks inside quoted fields, which we then count per record.
        physical = count_lines(utf8) + (0 if ends_with_newline(utf8) else 1)
        embedded_breaks = physical > n_records + first_data_line - 1
    else:
        embedded_breaks = False   # without quoting no field can hold a line break
    if embedded_breaks:
        embedded = pl.sum_horizontal([pl.col(n).str.count_matches("\n").fill_null(0)
                                      for n in names])
        frame = frame.sort("__record").with_columns(
            (embedded.cum_sum() - embedded).alias("__shift"))
        line_expr = pl.col("__record").cast(pl.Int64) + first_data_line + pl.col("__shift")
    else:
        line_expr = pl.col("__record").cast(pl.Int64) + first_data_line
    frame = frame.with_columns(line_expr.alias(LINE))
    all_null = pl.all_horizontal([pl.col(n).is_null() for n in names])
    frame = frame.filter(~all_null)
    cut = _truncated_tail(utf8, sep, quote, len(names))
    if cut:
        frame = frame.with_columns(pl.when(pl.col(LINE) == pl.col(LINE).max()).then(pl.lit(
            f"truncated: the file ends inside this row ({cut} of {len(names)} fields, "
            "no line end)")).alias(ISSUE))
        frame = frame.select([*names, LINE, ISSUE])
    else:
        frame = frame.select([*names, LINE])
    sample = _head_sample(utf8, names, separator=sep, quote_char=quote or None,
                          has_header=has_header, skip_rows=skip_rows, eol_char=eol,
                          new_columns=column_names)
    return DelimitedScan(frame, lambda: None if check_now else check(), sample)


def _head_sample(path: Path, names: list[str], size: int = 128 * 1024,
                 **options: Any) -> pl.DataFrame | None:
    """The complete lines in the first ``size`` bytes, read with the scan's options."""
    with open(path, "rb") as fh:
        head = fh.read(size)
    if len(head) == size:
        head = head[: head.rfind(b"\n") + 1]
    try:
        df = pl.read_csv(io.BytesIO(head), infer_schema=False, truncate_ragged_lines=True,
                         raise_if_empty=False, **options)
    except Exception:  # noqa: BLE001 - a sample is an optimisation, never an error source
        return None
    return df if df.columns == names else None


def _truncated_tail(path: Path, sep: str, quote: str, expected: int) -> int:
    """Fields in the last line when the file ends without a line break and that line is short
    (a transfer cut off mid-row); 0 when the file ends normally."""
    if ends_with_newline(path):
        return 0
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        fh.seek(max(0, fh.tell() - 64 * 1024))
        tail = fh.read().decode("utf-8", errors="replace").splitlines()[-1:]
    if not tail:
        return 0
    row = next(csv.reader(tail, delimiter=sep, quotechar=quote or None), [])
    return len(row) if 0 < len(row) < expected else 0


def read_table(path: Path, source: SourceOptions, workdir: Path | None) -> pl.LazyFrame:
    """Any supported table file as a LazyFrame with its source columns and ``__line``."""
    table = open_table(path, source, workdir)
    table.check()
    return table.frame


def open_table(path: Path, source: SourceOptions, workdir: Path | None) -> DelimitedScan:
    """``read_table`` with the full-read check of delimited text left to the caller."""
    suffix = path.suffix.lower()
    if path.stat().st_size == 0:
        raise IngestError("file is empty", file=str(path))
    if suffix == ".parquet":
        frame = pl.scan_parquet(path).with_row_index("__record")
        return DelimitedScan(frame.with_columns(
            (pl.col("__record").cast(pl.Int64) + 1).alias(LINE)).drop("__record"),
            lambda: None, None)
    if suffix in (".xlsx", ".xlsm", ".xls"):
        try:
            df = pl.read_excel(path, sheet_name=source.sheet, engine="calamine",
                               read_options={"header_row": source.skip_rows},
                               drop_empty_rows=False)
        except Exception as exc:  # noqa: BLE001 - fastexcel raises many types for bad input
            raise IngestError(f"cannot read spreadsheet: {exc}".splitlines()[0],
                              file=str(path), hint="check [source] sheet") from exc
        if df.height == 0:
            raise IngestError("spreadsheet has no data rows", file=str(path))
        # Spreadsheet row of each record: header row (1-based) + 1 + index; blank rows are
        # kept until numbered, then dropped.
        blank = pl.all_horizontal([pl.col(c).is_null() for c in df.columns])
        return DelimitedScan(df.lazy().with_row_index("__record").with_columns(
            (pl.col("__record").cast(pl.Int64) + source.skip_rows + 2).alias(LINE)
        ).filter(~blank).drop("__record"), lambda: None, None)
    return open_delimited(path, encoding=source.encoding, delimiter=source.delimiter,
                          quote=source.quote, skip_rows=source.skip_rows, workdir=workdir)


# --- mapping to canonical bookings -------------------------------------------------------------

def normalise_name(name: str) -> str:
    """Column names compared tolerantly: case, spaces, underscores, dashes, dots, slashes."""
    return re.sub(r"[\s_\-./]+", "", name).casefold()


def find_column(names: list[str], wanted: str) -> str | None:
    if wanted in names:
        return wanted
    key = normalise_name(wanted)
    return next((n for n in names if normalise_name(n) == key), None)


def _text(expr: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """Any source dtype as text (Parquet/XLSX columns may already be typed)."""
    if dtype == pl.String:
        return expr
    if isinstance(dtype, pl.Datetime):
        return expr.dt.strftime("%Y-%m-%d %H:%M:%S")
    if dtype == pl.Date:
        return expr.dt.strftime("%Y-%m-%d")
    if dtype.is_float():
        return expr.round(6).cast(pl.String)
    return expr.cast(pl.String)


def _blank(text: pl.Expr) -> pl.Expr:
    return text.is_null() | (text.str.strip_chars() == "")


def derive_fiscal_year(date: pl.Expr, start_month: int) -> pl.Expr:
    """Fiscal year named after the calendar year it starts in (start month 1 = calendar year)."""
    year = date.dt.year().cast(pl.Int32)
    if start_month <= 1:
        return year
    return pl.when(date.dt.month() >= start_month).then(year).otherwise(year - 1)


def derive_period(date: pl.Expr, start_month: int) -> pl.Expr:
    return (((date.dt.month().cast(pl.Int32) - start_month) % 12) + 1).cast(pl.Int32)


KEEP_TRIMMED = frozenset({"entity"})
"""Text columns always trimmed inside the query: readers use them there (ADS fills the entity
of lines naming no unit, ``ads.read_gl``)."""


class Mapper:
    """Turns one raw table into canonical booking expressions, collecting parse issues."""

    def __init__(self, schema: pl.Schema, profile: Profile, source_file: str,
                 sample: pl.DataFrame | None = None) -> None:
        self.schema = schema
        self.sample = sample
        """First rows of the source (text), to pick the date format tried first."""
        self.names = [n for n in schema.names() if n not in (LINE, ISSUE)]
        self.profile = profile
        self.source_file = source_file
        self.issues: list[pl.Expr] = []
        self.staged: dict[str, pl.Expr] = {}
        """Parsed values computed once as temporary columns; issues then test those columns
        (building the issue from the parse expression would parse every cell twice)."""
        self.trimmed: dict[str, pl.Expr] = {}
        """Trimmed text columns, computed before ``staged`` (see ``typed``)."""
        self.keep_trimmed: set[str] = set()
        self.trim_later: list[str] | None = None
        """When a list: canonical text columns taken from one String source column are left
        untrimmed and named here, for the ingest to trim after the read (see ``typed``)."""

    def stage(self, value: pl.Expr, raw: pl.Expr, empty: pl.Expr, label: str,
              what: str) -> pl.Expr:
        """Stage ``value`` and ``empty`` side by side (they share subexpressions) and record
        the issue for cells that are neither empty nor parseable."""
        name, empty_name = f"__v{len(self.staged)}", f"__e{len(self.staged)}"
        self.staged[name] = value
        self.staged[empty_name] = empty
        self.issues.append(cell_issue(label, raw,
                                      ~pl.col(empty_name) & pl.col(name).is_null(), what))
        return pl.col(name)

    def preferred_format(self, column: str, formats: list[str],
                         dtype: pl.DataType) -> str | None:
        """The format most of the sample's ``column`` is written in (None: no sample)."""
        if self.sample is None or column not in self.sample.columns:
            return None
        return dominant_format(self.sample[column], formats, dtype)

    def column(self, wanted: str, role: str) -> str:
        found = find_column(self.names, wanted)
        if found is None:
            raise IngestError(f"mapped column {wanted!r} (for {role}) is not in the file",
                              file=self.source_file, column=wanted,
                              hint=f"fix [columns]/[amount] in {self.profile.name}; the file "
                                   f"has: {', '.join(self.names[:25])}")
        return found

    def raw(self, key: str) -> tuple[pl.Expr, pl.DataType, str] | None:
        """Text of the mapped source column(s) for canonical ``key``; None when unmapped."""
        wanted = self.profile.columns.get(key)
        if not wanted:
            return None
        found = [self.column(w, key) for w in wanted]
        if len(found) == 1:
            return pl.col(found[0]), self.schema[found[0]], found[0]
        parts = [strip_or_null(_text(pl.col(f), self.schema[f])) for f in found]
        return (pl.concat_str(parts, separator=" ", ignore_nulls=True), pl.String(),
                "+".join(found))

    def typed(self, key: str, target: pl.DataType) -> pl.Expr | None:
        got = self.raw(key)
        if got is None:
            const = self.profile.constants.get(key)
            return None if const is None else pl.lit(const).cast(target)
        expr, dtype, label = got
        src = self.profile.source
        if target == pl.String and self.trim_later is not None and dtype == pl.String \
                and len(self.profile.columns.get(key) or []) == 1 \
                and key not in KEEP_TRIMMED | self.keep_trimmed:
            # delivered as it is; the ingest trims after the read where a value may need it
            # (``parsing.finish_text``, ``IngestResult.trim_later``)
            self.trim_later.append(key)
            return expr
        if target == pl.String:
            # trimmed once as its own column: inside one expression Polars' streaming engine
            # trims twice (test and value), 0.3 CPU s per 1M lines over 15 text columns
            name = f"__s{len(self.trimmed)}"
            self.trimmed[name] = _text(expr, dtype).str.strip_chars()
            return pl.when(pl.col(name) == "").then(None).otherwise(pl.col(name))
        text = _text(expr, dtype)
        placeholders = self._placeholders()["placeholders"]
        if target == pl.Date:
            if dtype in (pl.Date,) or isinstance(dtype, pl.Datetime):
                return expr.cast(pl.Date)
            prefer = self.preferred_format(label, src.date_formats, pl.Date())
            value, empty = date_parts(text, src.date_formats, placeholders, pl.Date(), prefer)
            what = f"a date ({' or '.join(src.date_formats)})"
        elif isinstance(target, pl.Datetime):
            if dtype == pl.Date or isinstance(dtype, pl.Datetime):
                return expr.cast(pl.Datetime("us"))
            formats = src.datetime_formats + src.date_formats
            prefer = self.preferred_format(label, formats, pl.Datetime("us"))
            value, empty = date_parts(text, formats, placeholders, pl.Datetime("us"), prefer)
            what = f"a timestamp ({' or '.join(formats)})"
        elif target.is_integer():
            if dtype.is_integer():
                return expr.cast(target)
            value, empty = int_parts(text)
            value, what = value.cast(target, strict=False), "a whole number"
        else:
            raise AssertionError(f"no parser for {target}")
        return self.stage(value, text, empty, label, what)

    def _placeholders(self) -> dict[str, Any]:
        from detect.ingest.parsing import DEFAULT_DATE_PLACEHOLDERS
        extra = tuple(self.profile.source.date_placeholders)
        return {"placeholders": DEFAULT_DATE_PLACEHOLDERS + extra}

    def decimal(self, column: str, label: str) -> pl.Expr:
        dtype = self.schema[column]
        if dtype.is_numeric():
            return pl.col(column).round(2).cast(AMOUNT) if dtype.is_float() \
                else pl.col(column).cast(AMOUNT)
        src = self.profile.source
        text = pl.col(column).cast(pl.String)
        value, blank = decimal_parts(text, decimal=src.decimal, thousands=src.thousands)
        return self.stage(value, text, blank, label, "a valid amount")

    def amount(self) -> pl.Expr:
        spec = self.profile.amount
        if spec.kind == "split":
            parts = []
            for col, sign in ((spec.debit_column, 1), (spec.credit_column, -1)):
                if col:
                    found = self.column(col, "amount")
                    parts.append(self.decimal(found, found).abs().fill_null(0) * sign)
            return pl.sum_horizontal(parts).cast(AMOUNT)
        found = self.column(spec.column or "", "amount")
        value = self.decimal(found, found)
        if spec.kind == "signed":
            return value
        dc = self.column(spec.dc_column or "", "debit/credit indicator")
        text = _text(pl.col(dc), self.schema[dc])
        debit = [c.upper() for c in spec.debit_codes]
        credit = [c.upper() for c in spec.credit_codes]
        # Cells that already are a code as configured (upper case, no blanks) are looked up as
        # they are; only the others are trimmed and upper-cased first. Staged: used 3 times.
        exact = [c for c in debit + credit if c and c == c.strip()]
        name = f"__dc{len(self.staged)}"
        self.staged[name] = pl.when(text.is_in(exact)).then(text).otherwise(
            strip_or_null(pl.when(text.is_in(exact).not_()).then(text)).str.to_uppercase())
        code = pl.col(name)
        unknown = code.is_not_null() & ~code.is_in(debit + credit)
        self.issues.append(pl.format(   # built for unknown codes only (null parts -> null)
            "{}: '{}' is not a debit/credit code ({} / {})", pl.lit(dc),
            pl.when(unknown).then(code), pl.lit(", ".join(spec.debit_codes)),
            pl.lit(", ".join(spec.credit_codes))))
        # Amount is unsigned with the indicator: take its magnitude. No indicator: keep the sign.
        return (pl.when(code.is_in(debit)).then(value.abs())
                .when(code.is_in(credit)).then(-value.abs())
                .otherwise(value)).cast(AMOUNT)


def to_bookings(raw: pl.LazyFrame, profile: Profile, settings: Settings,
                source_file: str, sample: pl.DataFrame | None = None,
                extra: dict[str, pl.Expr] | None = None,
                trim_later: list[str] | None = None) -> pl.LazyFrame:
    """Map a raw table (source columns + ``__line``) to ``INGEST_SCHEMA`` with the profile.

    ``sample`` (the table's first rows as text) only picks the date format tried first;
    ``extra`` adds Boolean helper columns computed from the raw columns (after the schema's,
    see ``IngestResult.finishers``). ``trim_later``: a list to receive the text columns left
    untrimmed (the caller must have them trimmed, ``IngestResult.trim_later``); None: all
    trimmed here."""
    extra = extra or {}
    schema = raw.collect_schema()
    m = Mapper(schema, profile, source_file, sample)
    m.trim_later = trim_later
    if trim_later is not None and "line_no" not in profile.columns:
        m.keep_trimmed = {"journal_id"}  # numbered per journal inside the query (fill_derived)
    out: dict[str, pl.Expr] = {}
    for name in MAPPABLE:
        if name in ("entity", "currency"):
            continue
        expr = m.typed(name, BOOKING_SCHEMA[name])
        if expr is not None:
            out[name] = expr
    if "entered_at" not in out and "entered_date" in profile.columns:
        date = m.typed("entered_date", pl.Date())
        got = m.raw("entered_time")
        out["entered_at"] = combine_time(date, _text(got[0], got[1])) if got else \
            date.cast(pl.Datetime("us"))
    out["amount"] = m.amount()
    # entity: an explicit --entity / entity setting wins, then the profile, then the file.
    if settings.entity != "default":
        out["entity"] = pl.lit(settings.entity)
    elif "entity" in profile.constants:
        out["entity"] = pl.lit(profile.constants["entity"])
    elif profile.columns.get("entity"):
        out["entity"] = m.typed("entity", pl.String())
    else:
        out["entity"] = pl.lit(settings.entity)
    cur = m.typed("currency", pl.String())
    out["currency"] = cur if cur is not None else pl.lit(settings.currency)
    issues = list(m.issues)
    if ISSUE in schema.names():
        issues.insert(0, pl.col(ISSUE))
    frame = raw.with_columns(**m.trimmed).with_columns(**m.staged).with_columns(
        [e.alias(k) for k, e in out.items()]
        + [pl.lit(source_file).alias("source_file"), pl.col(LINE).alias("source_line"),
           gather_issues(issues)] + [e.alias(k) for k, e in extra.items()]
    ).select([*out, "source_file", "source_line", "ingest_issue", *extra])
    frame = fill_derived(frame, settings)
    return conform(frame, pl.Schema({**INGEST_SCHEMA, **{k: pl.Boolean() for k in extra}}))


def fill_derived(frame: pl.LazyFrame, settings: Settings) -> pl.LazyFrame:
    """fiscal_year, period from the posting date and line_no by order, when not delivered."""
    names = frame.collect_schema().names()
    start = settings.fiscal_year_start_month
    fy = derive_fiscal_year(pl.col("posting_date"), start)
    adds = []
    adds.append((pl.coalesce(pl.col("fiscal_year"), fy) if "fiscal_year" in names else fy)
                .cast(pl.Int32).alias("fiscal_year"))
    per = derive_period(pl.col("posting_date"), start)
    adds.append((pl.coalesce(pl.col("period"), per) if "period" in names else per)
                .cast(pl.Int32).alias("period"))
    frame = frame.with_columns(adds)
    if "line_no" not in names:
        frame = frame.with_columns(
            pl.col("source_line").rank("ordinal").over("source_file", "journal_id")
            .cast(pl.Int32).alias("line_no"))
    return frame


# --- the format module protocol ----------------------------------------------------------------

def sniff(path: Path, text: str) -> float:
    """A table file *might* be mapped, but only a configured profile makes it ours (see ingest)."""
    return 0.3 if path.suffix.lower() in TABLE_SUFFIXES else 0.0


def profile_for(settings: Settings) -> Profile:
    if not settings.mapping:
        raise IngestError("--format csv needs a mapping profile",
                          hint='set mapping = "mappings/<your-erp>.toml" in belegwacht.toml '
                               "(see mappings/example_infoma.toml)")
    return load_profile(Path(settings.mapping))


def read(files: list[Path], settings: Settings, workdir: Path) -> IngestResult:
    profile = profile_for(settings)
    frames, inputs, ignored = [], [], []
    trim_later: list[str] = []
    checks: list[Callable[[], object]] = []
    for path in files:
        if path.suffix.lower() not in TABLE_SUFFIXES:
            ignored.append(str(path))
            continue
        table = open_table(path, profile.source, workdir)
        checks.append(table.check)   # run by ``materialise`` if the read fails
        frames.append(to_bookings(table.frame, profile, settings, str(path), table.sample,
                                  trim_later=trim_later))
        inputs.append(InputFile(str(path), sha256_of(path), path.stat().st_size))
    if not frames:
        raise IngestError("no CSV, Parquet or XLSX file in the delivery",
                          file=", ".join(str(f) for f in files[:3]))
    return IngestResult(NAME, pl.concat(frames, how="vertical"), inputs=inputs, ignored=ignored,
                        warnings=[f"mapped with profile {profile.name}"],
                        deferred_checks=checks, trim_later=sorted(set(trim_later)))


__all__ = ["NAME", "Profile", "SourceOptions", "AmountSpec", "load_profile", "profile_from_dict",
           "read", "read_table", "open_table", "scan_delimited", "open_delimited", "sniff",
           "to_bookings", "find_column",
           "normalise_name", "strftime_format"]
