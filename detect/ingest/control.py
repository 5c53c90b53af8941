"""Control totals a delivery claims about itself (``belegwacht run --control-totals FILE``).

Two shapes are read, recognised by their header (names matched tolerantly):

- ADS-style log (like ``log_file.csv`` of the AICPA sample): one row per journal and side,
  ``Journal_ID, Amount_Credit_Debit_Indicator (D/C or S/H), Total``;
- a simple user CSV: ``journal_id, debit, credit[, lines]`` per journal, or one overall row
  ``line_count, debit, credit[, journal_count]``.

Reconciliation is validation's job; this module only reads exactly, to the cent.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import polars as pl

from detect.errors import IngestError
from detect.ingest import ControlTotals
from detect.ingest.mapped import LINE, find_column, scan_delimited
from detect.ingest.parsing import parse_decimal, parse_int, strip_or_null
from detect.schema import AMOUNT

DEBIT_CODES = ["D", "S", "DEBIT", "SOLL"]
CREDIT_CODES = ["C", "H", "CREDIT", "HABEN"]
PER_JOURNAL_SCHEMA = pl.Schema({"journal_id": pl.String(), "debit": AMOUNT, "credit": AMOUNT,
                                "lines": pl.Int64()})


def _col(names: list[str], *aliases: str) -> str | None:
    return next((c for a in aliases if (c := find_column(names, a))), None)


def _amounts(frame: pl.LazyFrame, column: str, path: Path) -> pl.Expr:
    """Parse ``column`` exactly; '.' decimals, or ',' when the file is written that way."""
    first_bad = None
    for decimal in (".", ","):
        value, issue = parse_decimal(pl.col(column), column, decimal=decimal,
                                     thousands="," if decimal == "." else ".")
        bad = frame.select(issue.alias("issue"), pl.col(LINE)).filter(
            pl.col("issue").is_not_null()).sort(LINE).head(1).collect()
        if bad.height == 0:
            return value
        first_bad = first_bad if first_bad is not None else bad
    assert first_bad is not None
    raise IngestError(str(first_bad["issue"][0]), file=str(path),
                      line=int(first_bad[LINE][0]), column=column)


def read_control_totals(path: Path) -> ControlTotals:
    """Read a control-total file into per-journal and/or overall totals (credits positive)."""
    if not path.exists():
        raise IngestError("control-total file not found", file=str(path))
    raw = scan_delimited(path)
    names = [n for n in raw.collect_schema().names() if n != LINE]
    journal = _col(names, "Journal_ID", "journal", "Belegnummer", "document")
    total = _col(names, "Total", "Amount")
    indicator = _col(names, "Amount_Credit_Debit_Indicator", "Debit_Credit_Indicator",
                     "dc", "indicator", "Soll_Haben")
    debit = _col(names, "debit", "Debit_Total", "Total_Debit", "Soll")
    credit = _col(names, "credit", "Credit_Total", "Total_Credit", "Haben")
    lines = _col(names, "lines", "line_count", "Lines_Count", "Number_Of_Lines", "Zeilen")
    if journal and total and indicator:
        return _ads_log(raw, path, journal, total, indicator)
    if debit and credit:
        if journal:
            return _per_journal(raw, path, journal, debit, credit, lines)
        return _overall(raw, path, names, debit, credit, lines)
    raise IngestError("not a control-total file: expected columns Journal_ID, "
                      "Amount_Credit_Debit_Indicator, Total (ADS log) or journal_id, debit, "
                      "credit[, lines] or line_count, debit, credit", file=str(path),
                      hint=f"the header has: {', '.join(names)}")


def _ads_log(raw: pl.LazyFrame, path: Path, journal: str, total: str,
             indicator: str) -> ControlTotals:
    code = strip_or_null(pl.col(indicator)).str.to_uppercase()
    bad = raw.filter(~code.is_in(DEBIT_CODES + CREDIT_CODES)).select(pl.col(indicator), LINE) \
        .sort(LINE).head(1).collect()
    if bad.height:
        raise IngestError(f"'{bad[indicator][0]}' is not a debit/credit indicator "
                          "(D/C or S/H)", file=str(path), line=int(bad[LINE][0]),
                          column=indicator)
    amount = _amounts(raw, total, path).abs()
    per = (raw.with_columns(strip_or_null(pl.col(journal)).alias("journal_id"),
                            amount.alias("__amount"), code.alias("__code"))
           .group_by("journal_id")
           .agg(pl.col("__amount").filter(pl.col("__code").is_in(DEBIT_CODES)).sum()
                .alias("debit"),
                pl.col("__amount").filter(pl.col("__code").is_in(CREDIT_CODES)).sum()
                .alias("credit"),
                pl.col(LINE).min().alias("__first"))
           .sort("__first")
           .with_columns(pl.lit(None, dtype=pl.Int64).alias("lines"))
           .select(PER_JOURNAL_SCHEMA.names()).collect())
    return ControlTotals(str(path), per.cast(dict(PER_JOURNAL_SCHEMA)),
                         _overall_from(per))


def _per_journal(raw: pl.LazyFrame, path: Path, journal: str, debit: str, credit: str,
                 lines: str | None) -> ControlTotals:
    exprs = [strip_or_null(pl.col(journal)).alias("journal_id"),
             _amounts(raw, debit, path).abs().alias("debit"),
             _amounts(raw, credit, path).abs().alias("credit")]
    if lines:
        value, issue = parse_int(pl.col(lines), lines)
        _raise_first(raw, issue, path, lines)
        exprs.append(value.alias("lines"))
    else:
        exprs.append(pl.lit(None, dtype=pl.Int64).alias("lines"))
    per = raw.sort(LINE).select(exprs).collect().cast(dict(PER_JOURNAL_SCHEMA))
    dupes = per.filter(pl.col("journal_id").is_duplicated())
    if dupes.height:
        raise IngestError(f"journal {dupes['journal_id'][0]} is listed twice", file=str(path),
                          column=journal)
    return ControlTotals(str(path), per, _overall_from(per))


def _overall(raw: pl.LazyFrame, path: Path, names: list[str], debit: str, credit: str,
             lines: str | None) -> ControlTotals:
    journals = _col(names, "journal_count", "journals", "Number_Of_Journals")
    exprs = [_amounts(raw, debit, path).abs().sum().alias("debit"),
             _amounts(raw, credit, path).abs().sum().alias("credit")]
    for key, col in (("line_count", lines), ("journal_count", journals)):
        if col:
            value, issue = parse_int(pl.col(col), col)
            _raise_first(raw, issue, path, col)
            exprs.append(value.sum().alias(key))
    row = raw.select(exprs).collect().row(0, named=True)
    overall: dict[str, int | Decimal] = {k: v for k, v in row.items() if v is not None}
    return ControlTotals(str(path), None, overall)  # type: ignore[arg-type]


def _raise_first(raw: pl.LazyFrame, issue: pl.Expr, path: Path, column: str) -> None:
    bad = raw.select(issue.alias("i"), LINE).filter(pl.col("i").is_not_null()).sort(LINE) \
        .head(1).collect()
    if bad.height:
        raise IngestError(bad["i"][0], file=str(path), line=int(bad[LINE][0]), column=column)


def _overall_from(per: pl.DataFrame) -> dict[str, int | Decimal]:
    out: dict[str, int | Decimal] = {
        "journal_count": per.height,
        "debit": per["debit"].sum() if per.height else Decimal("0"),
        "credit": per["credit"].sum() if per.height else Decimal("0"),
    }
    if per["lines"].null_count() == 0 and per.height:
        out["line_count"] = int(per["lines"].sum())
    return out
