"""GoBD / GDPdU "Beschreibungsstandard": an ``index.xml`` (DTD gdpdu-01-09-2004) describing
delimited or fixed-length tables.

``read_gdpdu_tables(index)`` reads *every* described table faithfully into typed Polars frames
(AlphaNumeric -> String, Numeric -> Decimal with the table's DecimalSymbol/DigitGroupingSymbol
and Accuracy/ImpliedAccuracy, Date -> Date with its Format), honouring the code page (ANSI,
UTF8, ...), SkipNumBytes, Range, ColumnDelimiter/RecordDelimiter/TextEncapsulator, FixedRange
and Map. Cells that do not fit their declared type become null and are reported in ``__issue``
with file, line, column and value - never silently dropped.

``read`` then maps one table (``[gdpdu] table = "..."`` in the mapping profile) to canonical
bookings with the same ``[columns]``/``[amount]`` profile as ``--format csv``.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from detect.config import Settings
from detect.errors import ConfigError, IngestError
from detect.ingest import IngestResult, InputFile
from detect.ingest.mapped import (
    ISSUE, LINE, profile_for, scan_delimited, strftime_format, to_bookings,
)
from detect.ingest.parsing import gather_issues, parse_date, parse_datetime
from detect.ingest.textio import as_utf8, sha256_of
from detect.schema import MASTER_SCHEMAS, conform

NAME = "gdpdu"

CODEPAGES = {"ANSI": "cp1252", "UTF8": "utf-8", "OEM": "cp850", "Macintosh": "mac_roman",
             "UTF16": "utf-16", "UTF7": "utf-7"}


@dataclass
class GColumn:
    name: str
    kind: str
    """alnum | numeric | date"""
    accuracy: int | None = None
    implied: int | None = None
    date_format: str = "DD.MM.YYYY"
    maps: dict[str, str] = field(default_factory=dict)
    fixed: tuple[int, int] | None = None
    """FixedRange as (first character, length), 1-based."""
    primary: bool = False


@dataclass
class GTable:
    url: str
    name: str
    description: str = ""
    encoding: str = "cp1252"
    decimal: str = ","
    grouping: str = "."
    skip_bytes: int = 0
    range_from: int | None = None
    range_to: int | None = None
    epoch: int = 30
    variable: bool = True
    column_delimiter: str = ";"
    record_delimiter: str | None = None
    text_encapsulator: str = '"'
    record_length: int | None = None
    columns: list[GColumn] = field(default_factory=list)


def sniff(path: Path, text: str) -> float:
    head = text[:4000]
    if "<DataSet" not in head:
        return 0.0
    if re.search(r"gdpdu-\d\d-\d\d-\d{4}\.dtd", head, re.IGNORECASE):
        return 1.0
    return 0.9 if "<Media" in head else 0.6


def _text(el: ET.Element | None, tag: str, default: str | None = None) -> str | None:
    if el is None:
        return default
    child = el.find(tag)
    return child.text if child is not None and child.text is not None else default


def _int(value: str | None, where: str, index: Path) -> int | None:
    if value is None or not value.strip():
        return None
    if not value.strip().isdigit():
        raise IngestError(f"{where} must be a whole number, not {value!r}", file=str(index))
    return int(value)


def _column(el: ET.Element, primary: bool, index: Path) -> GColumn:
    name = (_text(el, "Name") or "").strip()
    if not name:
        raise IngestError("a column has no <Name>", file=str(index))
    if el.find("Numeric") is not None:
        num = el.find("Numeric")
        col = GColumn(name, "numeric",
                      accuracy=_int(_text(num, "Accuracy"), f"{name}/Accuracy", index),
                      implied=_int(_text(num, "ImpliedAccuracy"), f"{name}/ImpliedAccuracy",
                                   index), primary=primary)
    elif el.find("Date") is not None:
        col = GColumn(name, "date", date_format=_text(el.find("Date"), "Format") or "DD.MM.YYYY",
                      primary=primary)
    else:
        col = GColumn(name, "alnum", primary=primary)
    col.maps = {(m.findtext("From") or ""): (m.findtext("To") or "") for m in el.findall("Map")}
    fr = el.find("FixedRange")
    if fr is not None:
        start = _int(fr.findtext("From"), f"{name}/FixedRange/From", index) or 1
        to = _int(fr.findtext("To"), f"{name}/FixedRange/To", index)
        length = _int(fr.findtext("Length"), f"{name}/FixedRange/Length", index)
        col.fixed = (start, length if length is not None else (to or start) - start + 1)
    return col


def _delimiter(value: str | None, default: str | None) -> str | None:
    if value is None:
        return default
    return value.replace("\\t", "\t")


def parse_index(index: Path) -> list[GTable]:
    """The tables ``index.xml`` describes (defaults per the DTD's comments)."""
    try:
        root = ET.parse(index).getroot()
    except ET.ParseError as exc:
        raise IngestError(f"index.xml is not well-formed XML: {exc}", file=str(index),
                          line=exc.position[0]) from exc
    if root.tag != "DataSet":
        raise IngestError(f"root element is <{root.tag}>, not <DataSet>", file=str(index))
    tables = []
    for tel in root.iter("Table"):
        url = (_text(tel, "URL") or "").strip()
        if not url or re.match(r"^[a-z]+://", url, re.IGNORECASE) or url.startswith("/"):
            raise IngestError(f"table URL {url!r} must be a relative path", file=str(index))
        t = GTable(url=url, name=(_text(tel, "Name") or url).strip(),
                   description=(_text(tel, "Description") or "").strip())
        for tag, enc in CODEPAGES.items():
            if tel.find(tag) is not None:
                t.encoding = enc
        t.decimal = _text(tel, "DecimalSymbol", ",") or ","
        t.grouping = _text(tel, "DigitGroupingSymbol", ".") or ""
        t.skip_bytes = _int(_text(tel, "SkipNumBytes"), "SkipNumBytes", index) or 0
        rng = tel.find("Range")
        if rng is not None:
            t.range_from = _int(rng.findtext("From"), "Range/From", index)
            to = _int(rng.findtext("To"), "Range/To", index)
            length = _int(rng.findtext("Length"), "Range/Length", index)
            t.range_to = to if to is not None else (
                (t.range_from or 1) + length - 1 if length is not None else None)
        t.epoch = _int(_text(tel, "Epoch"), "Epoch", index) or 30
        var, fix = tel.find("VariableLength"), tel.find("FixedLength")
        layout = var if var is not None else fix
        if layout is None:
            raise IngestError(f"table {t.name!r} has neither VariableLength nor FixedLength",
                              file=str(index))
        t.variable = var is not None
        t.record_delimiter = _delimiter(_text(layout, "RecordDelimiter"), None)
        if t.variable:
            t.column_delimiter = _delimiter(_text(layout, "ColumnDelimiter"), ";") or ";"
            t.text_encapsulator = _text(layout, "TextEncapsulator", '"') or ""
            kinds = ("VariablePrimaryKey", "VariableColumn")
        else:
            t.record_length = _int(_text(layout, "Length"), "FixedLength/Length", index)
            kinds = ("FixedPrimaryKey", "FixedColumn")
        for child in layout:
            if child.tag in kinds:
                t.columns.append(_column(child, child.tag.endswith("PrimaryKey"), index))
        if not t.variable and any(c.fixed is None for c in t.columns):
            raise IngestError(f"fixed-length table {t.name!r}: every column needs FixedRange",
                              file=str(index))
        tables.append(t)
    return tables


def _prepared(path: Path, table: GTable, workdir: Path) -> tuple[Path, int]:
    """UTF-8 copy without the SkipNumBytes prefix; returns it and the lines skipped."""
    if not path.exists():
        raise IngestError(f"table file of {table.name!r} is missing", file=str(path))
    skipped_lines = 0
    source = path
    if table.skip_bytes:
        with open(path, "rb") as fh:
            prefix = fh.read(table.skip_bytes)
            skipped_lines = prefix.count(b"\n")
            source = workdir / f"{path.name}.skip"
            workdir.mkdir(parents=True, exist_ok=True)
            with open(source, "wb") as out:
                while chunk := fh.read(16 * 1024 * 1024):
                    out.write(chunk)
    try:
        return as_utf8(source, "utf-8-sig" if table.encoding == "utf-8" else table.encoding,
                       workdir), skipped_lines
    except UnicodeDecodeError as exc:
        raise IngestError(f"not valid {table.encoding} (index.xml declares it)", file=str(path),
                          hint="fix the code page element (ANSI/UTF8) in index.xml") from exc


def _raw_fixed(path: Path, table: GTable) -> pl.LazyFrame:
    if table.record_length and not table.record_delimiter:
        text = path.read_text(encoding="utf-8")
        n = table.record_length
        records = [text[i:i + n] for i in range(0, len(text), n) if text[i:i + n].strip()]
        frame = pl.LazyFrame({"__rec": records}).with_row_index("__i")
        line = pl.col("__i").cast(pl.Int64) + 1          # record number: no lines here
    else:
        frame = pl.scan_csv(path, has_header=False, separator="\x1f", quote_char=None,
                            infer_schema=False, new_columns=["__rec"],
                            row_index_name="__i", eol_char=_eol(table, path))
        line = pl.col("__i").cast(pl.Int64) + 1
        frame = frame.filter(pl.col("__rec").is_not_null())
    rec = pl.col("__rec").str.strip_chars_end("\r")
    cols = [rec.str.slice(c.fixed[0] - 1, c.fixed[1]).alias(c.name)  # type: ignore[index]
            for c in table.columns]
    return frame.select([*cols, line.alias(LINE)])


def _eol(table: GTable, path: Path) -> str:
    delim = table.record_delimiter
    if delim is None or delim in ("\n", "\r\n"):
        return "\n"
    if len(delim) == 1:
        return delim
    raise IngestError(f"RecordDelimiter {delim!r} is not supported (only one character, "
                      "LF or CRLF)", file=str(path))


def _numeric(raw: pl.Expr, col: GColumn, table: GTable) -> tuple[pl.Expr, pl.Expr]:
    scale = col.accuracy if col.accuracy is not None else (col.implied or 0)
    text = raw.str.strip_chars().str.replace_all(r"[\s\u00a0]", "")
    if table.grouping and table.grouping != table.decimal:
        text = text.str.replace_all(re.escape(table.grouping), "", literal=False)
    if table.decimal != ".":
        text = text.str.replace_all(re.escape(table.decimal), ".", literal=False)
    text = pl.when(text.str.ends_with("-")).then(
        pl.concat_str(pl.lit("-"), text.str.strip_chars_end("-"))).otherwise(text)
    shape = r"^[-+]?\d+$" if col.implied else r"^[-+]?(\d+(\.\d*)?|\.\d+)$"
    exact = pl.when(text.str.contains(shape)).then(text).cast(pl.Decimal(38, 9), strict=False)
    if col.implied:
        exact = exact / (10 ** col.implied)
    value = exact.cast(pl.Decimal(38, scale), strict=False)
    blank = raw.is_null() | (raw.str.strip_chars() == "")
    bad = ~blank & exact.is_null()
    too_precise = ~blank & exact.is_not_null() & (exact != exact.round(scale))
    issue = (pl.when(bad).then(pl.format("{}: '{}' is not a number", pl.lit(col.name),
                                         raw.str.slice(0, 40)))
             .when(too_precise).then(pl.format("{}: '{}' has more than {} decimal places",
                                               pl.lit(col.name), raw, pl.lit(scale))))
    return value, issue


def _typed(raw: pl.LazyFrame, table: GTable, skipped_lines: int) -> pl.LazyFrame:
    exprs, issues = [], []
    for col in table.columns:
        text = pl.col(col.name)
        if col.kind == "alnum":
            value = text.str.strip_chars() if not table.variable else text
            if col.maps:
                value = value.replace(col.maps)
            exprs.append(value.alias(col.name))
            continue
        if col.kind == "numeric":
            value, issue = _numeric(text, col, table)
        else:
            fmt = strftime_format(col.date_format)
            if "%H" in fmt:
                value, issue = parse_datetime(text, col.name, [fmt])
            else:
                value, issue = parse_date(text, col.name, [fmt])
                if "%y" in fmt:   # two-digit years: the table's Epoch is the century window
                    value = pl.when(value.dt.year() >= 2000 + table.epoch).then(
                        value.dt.offset_by("-100y")).otherwise(value)
        exprs.append(value.alias(col.name))
        issues.append(issue)
    frame = raw.with_columns(pl.col(LINE) + skipped_lines)
    if table.range_from or table.range_to:
        rec = pl.int_range(1, pl.len() + 1)
        keep = pl.lit(True)
        if table.range_from:
            keep = keep & (rec >= table.range_from)
        if table.range_to:
            keep = keep & (rec <= table.range_to)
        frame = frame.sort(LINE).filter(keep)
    return frame.select([*exprs, pl.col(LINE), gather_issues(issues).alias(ISSUE)])


def _norm(path: Path) -> str:
    return os.path.normpath(os.path.abspath(path))


def table_path(index: Path, table: GTable) -> Path:
    """The table file, relative to index.xml (URLs are relative per the DTD)."""
    return Path(os.path.normpath(index.parent / table.url))


def read_table(index: Path, table: GTable, workdir: Path) -> pl.LazyFrame:
    """One described table as a typed LazyFrame (+ ``__line``, ``__issue``)."""
    path = table_path(index, table)
    if not path.exists():
        raise IngestError(f"table {table.name!r}: file {table.url!r} named in index.xml is "
                          "missing", file=str(index))
    utf8, skipped = _prepared(path, table, workdir)
    names = [c.name for c in table.columns]
    if table.variable:
        try:
            raw = scan_delimited(utf8, encoding="utf-8", delimiter=table.column_delimiter,
                                 quote=table.text_encapsulator, has_header=False,
                                 column_names=names, eol=_eol(table, path))
        except IngestError as err:   # name the delivered file, not our UTF-8 copy
            raise IngestError(f"table {table.name!r}: {err.message}", file=str(path),
                              line=err.line + skipped if err.line else None,
                              column=err.column, hint=err.hint) from None
        got = [n for n in raw.collect_schema().names() if n != LINE]
        if got != names:
            raise IngestError(f"table {table.name!r}: the file has {len(got)} columns, "
                              f"index.xml describes {len(names)}", file=str(path))
    else:
        raw = _raw_fixed(utf8, table)
    return _typed(raw, table, skipped)


def read_gdpdu_tables(index: Path, workdir: Path | None = None) -> dict[str, pl.LazyFrame]:
    """Every table ``index.xml`` describes, by its Name, typed as declared."""
    import tempfile
    work = workdir or Path(tempfile.mkdtemp(prefix="belegwacht-gdpdu-"))
    return {t.name: read_table(index, t, work / re.sub(r"\W+", "_", t.name))
            for t in parse_index(index)}


def _master_table(index: Path, tables: dict[str, GTable], name: str, spec: dict[str, str],
                  workdir: Path, profile: str) -> pl.DataFrame:
    """A described table -> master data ``name`` by the profile's ``[gdpdu.<name>]`` map."""
    table = tables.get(spec["table"])
    if table is None:
        raise IngestError(f"index.xml describes no table {spec['table']!r} (for {name})",
                          file=str(index), hint=f"fix [gdpdu.{name}] in {profile}")
    frame = read_table(index, table, workdir / "gdpdu")
    have = frame.collect_schema().names()
    exprs = []
    for target, source in spec.items():
        if target == "table":
            continue
        if source not in have:
            raise IngestError(f"table {table.name!r} has no column {source!r} (for {name})",
                              file=str(index), column=source,
                              hint=f"fix [gdpdu.{name}] in {profile}")
        dtype = MASTER_SCHEMAS[name][target]
        col = pl.col(source)
        if dtype == pl.String:
            col = col.cast(pl.String).str.strip_chars()
        exprs.append(col.cast(dtype, strict=False).alias(target))
    return conform(frame.select(exprs), MASTER_SCHEMAS[name]).collect()


def read(files: list[Path], settings: Settings, workdir: Path) -> IngestResult:
    from detect.ingest.textio import decode_head, read_head

    indexes = [f for f in files if f.suffix.lower() == ".xml"
               and sniff(f, decode_head(read_head(f))) >= 0.5]
    if not indexes:
        raise IngestError("no GoBD/GDPdU index.xml in the delivery",
                          file=", ".join(str(f) for f in files[:3]))
    result = IngestResult(NAME, pl.LazyFrame())
    frames = []
    used: set[Path] = set()
    for index in indexes:
        tables = parse_index(index)
        by_name = {t.name: t for t in tables}
        if not settings.mapping:
            listing = "; ".join(f"{t.name} ({', '.join(c.name for c in t.columns[:8])})"
                                for t in tables)
            raise IngestError("a GoBD export needs a mapping profile naming the booking table",
                              file=str(index), hint=f'set mapping = "..." in belegwacht.toml '
                              f'with [gdpdu] table = "<Name>"; tables: {listing}')
        profile = profile_for(settings)
        if not profile.gdpdu_table:
            raise ConfigError('the mapping profile has no [gdpdu] table = "..."',
                              file=profile.name, hint=f"tables: {', '.join(by_name)}")
        table = by_name.get(profile.gdpdu_table)
        if table is None:
            raise IngestError(f"index.xml describes no table {profile.gdpdu_table!r}",
                              file=str(index), hint=f"tables: {', '.join(by_name)}")
        path = table_path(index, table)
        raw = read_table(index, table, workdir / "gdpdu")
        frames.append(to_bookings(raw, profile, settings, str(path)))
        result.inputs.append(InputFile(str(index), sha256_of(index), index.stat().st_size,
                                       role="description"))
        result.inputs.append(InputFile(str(path), sha256_of(path), path.stat().st_size))
        used |= {_norm(index), _norm(path)}
        master_of = {spec["table"]: name for name, spec in profile.gdpdu_master.items()}
        for other in tables:
            if other is not table and (op := table_path(index, other)).exists():
                role = f"master:{master_of[other.name]}" if other.name in master_of \
                    else f"table:{other.name}"
                result.inputs.append(InputFile(str(op), sha256_of(op), op.stat().st_size,
                                               role=role))
                used.add(_norm(op))
        for name, spec in profile.gdpdu_master.items():
            result.master[name] = _master_table(index, by_name, name, spec, workdir,
                                                profile.name)
        mapped = {profile.gdpdu_table} | {s["table"] for s in profile.gdpdu_master.values()}
        others = [t.name for t in tables if t.name not in mapped]
        if others:
            result.warnings.append(f"{index.name}: tables read but not mapped to bookings: "
                                   f"{', '.join(others)}")
    result.ignored = [str(f) for f in files if _norm(f) not in used]
    result.bookings = pl.concat(frames, how="vertical")
    return result
