"""Turn failing rows of the GX results into the quarantine: which row, which check, why.

A row that fails several checks is quarantined once: ``expectation`` names the first failing
check in suite order (that is also what the counts use), ``reason`` lists every failure with
the offending value.
"""

from __future__ import annotations

import polars as pl

from detect.validation.gxrun import ROW
from detect.validation.suites import Check

FAIL_SCHEMA = {ROW: pl.Int64, "order": pl.Int32, "expectation": pl.String, "label": pl.String,
               "reason": pl.String}


def _value_text(columns: list[str]) -> pl.Expr:
    parts = [pl.format("{}={}", pl.lit(c), pl.col(c).cast(pl.String).fill_null("(empty)"))
             for c in columns]
    return pl.concat_str(parts, separator=", ") if parts else pl.lit("")


def _reason(check: Check) -> pl.Expr:
    if check.reason_column:
        return pl.col(check.reason_column).cast(pl.String)
    # show the delivered columns, not the derived bounds (v_fy_*, v_*_latest)
    cols = [c.removeprefix("v_") for c in check.columns
            if not (c.startswith("v_fy") or c.endswith("_latest"))]
    if check.key.startswith("posting_date_") and "fiscal_year" in check.key:
        cols = ["posting_date", "fiscal_year", "period"]
    elif check.key.startswith("document_date_"):
        cols = ["document_date", "posting_date"]
    return pl.format("{}: {}", pl.lit(check.reason), _value_text(list(dict.fromkeys(cols))))


def failures(frame: pl.DataFrame, checks: list[Check], flags: dict[str, str]) -> pl.DataFrame:
    """One row per (failing row, quarantining check): _row, order, expectation, label, reason.

    ``frame`` holds a boolean column per check (name in ``flags``), true where the row fails.
    """
    parts = []
    used = {c.key: flags[c.key] for c in checks if c.key in flags and c.quarantines}
    # one pass counts every flag; filtering the full-width frame per check cost seconds at 1M
    totals = frame.select(pl.col(f).sum().alias(k) for k, f in used.items()).row(0, named=True) \
        if used and frame.height else {}
    for order, check in enumerate(checks):
        flag = used.get(check.key)
        if flag is None or not totals.get(check.key):
            continue
        reason = _reason(check)
        need = list(dict.fromkeys([ROW, flag, *check.columns, *reason.meta.root_names()]))
        hit = frame.select(c for c in need if c in frame.columns).filter(pl.col(flag))
        if check.keep_first:
            hit = hit.sort(ROW).filter(pl.int_range(pl.len()).over(check.columns) > 0)
        parts.append(hit.select(
            pl.col(ROW), pl.lit(order, dtype=pl.Int32).alias("order"),
            pl.lit(check.key).alias("expectation"), pl.lit(check.reason).alias("label"),
            reason.alias("reason")))
    if not parts:
        return pl.DataFrame(schema=FAIL_SCHEMA)
    return pl.concat(parts).cast(FAIL_SCHEMA)  # type: ignore[arg-type]


def per_row(fails: pl.DataFrame) -> pl.DataFrame:
    """Collapse to one row per quarantined line: _row, expectation, label, reason."""
    return (fails.sort(ROW, "order")
            .group_by(ROW, maintain_order=True)
            .agg(pl.col("expectation").first(), pl.col("label").first(),
                 pl.col("reason").unique(maintain_order=True).str.join("; ")))


def counts(rows: pl.DataFrame) -> dict[str, int]:
    """Quarantined rows per reason label, most frequent first."""
    c = rows.group_by("label").len().sort(["len", "label"], descending=[True, False])
    return {label: int(n) for label, n in c.iter_rows()}
