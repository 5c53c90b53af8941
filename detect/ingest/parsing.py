"""Vectorised parsers for the text fields ERPs write, each paired with an issue expression.

A parser returns ``(value_expr, issue_expr)``: the typed value (null when unparseable) and a
message (null when fine). Ingest modules gather the issues into the ``ingest_issue`` column;
validation quarantines those rows with the message, so a bad cell is reported with its file,
line and column, and never silently becomes null.
"""

from __future__ import annotations

import polars as pl

from detect.schema import AMOUNT

DEFAULT_DATE_PLACEHOLDERS = ("", "00.00.0000", "00000000", "0000-00-00", "00/00/0000", "0")


def _blank(raw: pl.Expr) -> pl.Expr:
    return raw.is_null() | (raw.str.strip_chars() == "")


def _issue(column: str, raw: pl.Expr, bad: pl.Expr, what: str) -> pl.Expr:
    return pl.when(bad).then(
        pl.format("{}: '{}' is not {}", pl.lit(column), raw.str.slice(0, 40), pl.lit(what))
    )


def parse_decimal(raw: pl.Expr, column: str, *, decimal: str = ".", thousands: str | None = None,
                  allow_trailing_minus: bool = True) -> tuple[pl.Expr, pl.Expr]:
    """Parse ``1.234,56`` / ``1,234.56`` / ``100,00-`` into an exact decimal(18,2)."""
    text = raw.str.strip_chars().str.replace_all(r"[\s\u00a0']", "")
    if thousands:
        # a thousands separator is only allowed in groups of three digits before the decimal mark
        grouped = rf"^[-+]?\d{{1,3}}(\{thousands}\d{{3}})+(\{decimal}\d+)?-?$"
        text = pl.when(text.str.contains(grouped)).then(
            text.str.replace_all(rf"\{thousands}", "", literal=False)).otherwise(text)
    if decimal != ".":
        # a '.' left over (not a valid thousands group) must not turn into a decimal point
        text = pl.when(text.str.contains(".", literal=True)).then(pl.lit(None, pl.String)) \
            .otherwise(text.str.replace_all(rf"\{decimal}", ".", literal=False))
    if allow_trailing_minus:
        text = pl.when(text.str.ends_with("-")).then(
            pl.concat_str(pl.lit("-"), text.str.strip_chars_end("-"))).otherwise(text)
    ok_shape = text.str.contains(r"^[-+]?(\d+(\.\d{0,2})?|\.\d{1,2})$")
    value = pl.when(ok_shape).then(text).cast(AMOUNT, strict=False)
    issue = _issue(column, raw, ~_blank(raw) & value.is_null(), "a valid amount")
    return value, issue


def parse_date(raw: pl.Expr, column: str, formats: list[str] | tuple[str, ...],
               placeholders: tuple[str, ...] = DEFAULT_DATE_PLACEHOLDERS) -> tuple[pl.Expr, pl.Expr]:
    """Try each strptime format in turn; placeholders such as ``00.00.0000`` become null."""
    text = raw.str.strip_chars()
    empty = text.is_null() | text.is_in(list(placeholders))
    value = pl.coalesce([text.str.strptime(pl.Date, f, strict=False) for f in formats])
    value = pl.when(empty).then(None).otherwise(value)
    issue = _issue(column, raw, ~empty & value.is_null(), f"a date ({' or '.join(formats)})")
    return value, issue


def parse_datetime(raw: pl.Expr, column: str, formats: list[str] | tuple[str, ...],
                   placeholders: tuple[str, ...] = DEFAULT_DATE_PLACEHOLDERS) -> tuple[pl.Expr, pl.Expr]:
    text = raw.str.strip_chars()
    empty = text.is_null() | text.is_in(list(placeholders))
    value = pl.coalesce([text.str.strptime(pl.Datetime("us"), f, strict=False) for f in formats])
    value = pl.when(empty).then(None).otherwise(value)
    issue = _issue(column, raw, ~empty & value.is_null(), f"a timestamp ({' or '.join(formats)})")
    return value, issue


def parse_int(raw: pl.Expr, column: str) -> tuple[pl.Expr, pl.Expr]:
    text = raw.str.strip_chars()
    value = text.cast(pl.Int64, strict=False)
    issue = _issue(column, raw, ~_blank(raw) & value.is_null(), "a whole number")
    return value, issue


def combine_time(date: pl.Expr, time_raw: pl.Expr) -> pl.Expr:
    """Date + ``HH:MM:SS`` (or ``HHMMSS``) text -> datetime; null when either is missing."""
    digits = time_raw.str.replace_all(r"\D", "").str.pad_start(6, "0")
    seconds = (digits.str.slice(0, 2).cast(pl.Int64, strict=False) * 3600
               + digits.str.slice(2, 2).cast(pl.Int64, strict=False) * 60
               + digits.str.slice(4, 2).cast(pl.Int64, strict=False))
    return date.cast(pl.Datetime("us")) + pl.duration(seconds=seconds)


def gather_issues(issues: list[pl.Expr]) -> pl.Expr:
    """One ``ingest_issue`` text per row: all parse problems joined, null when none."""
    if not issues:
        return pl.lit(None, dtype=pl.String).alias("ingest_issue")
    joined = pl.concat_str(issues, separator="; ", ignore_nulls=True)
    return pl.when(joined == "").then(None).otherwise(joined).alias("ingest_issue")


def strip_or_null(raw: pl.Expr) -> pl.Expr:
    """Trimmed text; empty strings become null (ERPs write "" for absent values)."""
    text = raw.str.strip_chars()
    return pl.when(text == "").then(None).otherwise(text)
