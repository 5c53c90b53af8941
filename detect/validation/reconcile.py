"""Control totals: does the delivery contain what its sender says it contains?

Reconciled against *every delivered line* (quarantined ones included): the totals describe the
file as sent, not what survived validation.

Policy (documented in docs/validation.md):

- journals named by the control totals but absent from the delivery, and overall figures
  that differ: the delivery is incomplete or altered -> the run stops;
- per-journal debit/credit/line-count differences and delivered journals the control totals do
  not know: ``validation.control_totals`` = "warn" (default: a finding per journal + a warning)
  or "stop";
- overall figures (line and journal count, debit and credit sums) are compared when no
  per-journal totals are given; otherwise the per-journal comparison covers them and names the
  culprits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl

from detect.ingest import ControlTotals
from detect.schema import AMOUNT
from detect.validation.journals import empty_hits, hits

MONEY = pl.Decimal(38, 2)
LIST_IN_MESSAGE = 10


@dataclass
class Reconciliation:
    reports: list[dict[str, Any]] = field(default_factory=list)
    findings: pl.DataFrame = field(default_factory=empty_hits)
    stop: list[str] = field(default_factory=list)
    """Reasons to reject the delivery."""
    warnings: list[str] = field(default_factory=list)
    headline: list[str] = field(default_factory=list)


def delivered_per_journal(frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """Per-journal sums, one streaming aggregate (``frame`` may be a scan of the delivery)."""
    return frame.lazy().group_by("journal_id").agg(
        pl.col("amount").filter(pl.col("amount") > 0).sum().cast(MONEY).alias("debit"),
        (-pl.col("amount").filter(pl.col("amount") < 0).sum()).cast(MONEY).alias("credit"),
        pl.len().cast(pl.Int64).alias("lines"),
        pl.col("entity").first(), pl.col("fiscal_year").first()).collect()


def _control_per_journal(per_journal: pl.DataFrame) -> pl.DataFrame:
    """Sum duplicate journal rows (a file may list debit and credit on separate lines)."""
    cols = per_journal.columns
    lines = pl.col("lines") if "lines" in cols else pl.lit(None, dtype=pl.Int64)
    return (per_journal.select(
        pl.col("journal_id").cast(pl.String).str.strip_chars(),
        pl.col("debit").cast(AMOUNT).cast(MONEY) if "debit" in cols else pl.lit(None, MONEY),
        pl.col("credit").cast(AMOUNT).cast(MONEY) if "credit" in cols else pl.lit(None, MONEY),
        lines.cast(pl.Int64).alias("lines"))
        .group_by("journal_id").agg(
            pl.col("debit").sum(), pl.col("credit").sum(),
            pl.when(pl.col("lines").is_null().all()).then(None)
            .otherwise(pl.col("lines").sum()).alias("lines")))


def compare_journals(delivered: pl.DataFrame, control: pl.DataFrame,
                     tolerance: float) -> pl.DataFrame:
    """Every journal that does not match, with both sides and the problem in words."""
    both = delivered.join(control, on="journal_id", how="full", coalesce=True,
                          suffix="_control")
    tol = pl.lit(tolerance)
    d_diff = pl.col("debit") - pl.col("debit_control")
    c_diff = pl.col("credit") - pl.col("credit_control")
    problem = (
        pl.when(pl.col("lines").is_null()).then(pl.lit("missing in delivery"))
        .when(pl.col("lines_control").is_null() & pl.col("debit_control").is_null()
              & pl.col("credit_control").is_null()).then(pl.lit("not in control totals"))
        .when((d_diff.abs() > tol) | (c_diff.abs() > tol)).then(pl.lit("amounts differ"))
        .when(pl.col("lines_control").is_not_null()
              & (pl.col("lines") != pl.col("lines_control"))).then(pl.lit("line count differs"))
    )
    return (both.with_columns(problem.alias("problem"), d_diff.alias("debit_difference"),
                              c_diff.alias("credit_difference"))
            .filter(pl.col("problem").is_not_null())
            .sort("journal_id"))


def _describe(row: dict[str, Any]) -> str:
    if row["problem"] == "missing in delivery":
        return f"{row['journal_id']}: missing in the delivery"
    if row["problem"] == "not in control totals":
        return f"{row['journal_id']}: not in the control totals"
    if row["problem"] == "line count differs":
        return f"{row['journal_id']}: {row['lines']} lines, control says {row['lines_control']}"
    parts = []
    for side in ("debit", "credit"):
        if row[f"{side}_difference"] not in (None, "0.00", "0"):
            parts.append(f"{side} {row[side]} delivered vs {row[f'{side}_control']} in control "
                         f"totals (difference {row[f'{side}_difference']})")
    return f"{row['journal_id']}: " + ", ".join(parts)


def _listing(rows: list[dict[str, Any]]) -> str:
    text = "; ".join(_describe(r) for r in rows[:LIST_IN_MESSAGE])
    if len(rows) > LIST_IN_MESSAGE:
        text += f"; and {len(rows) - LIST_IN_MESSAGE} more (all in validation.json)"
    return text


def _findings(mismatch: pl.DataFrame, source: str) -> pl.DataFrame:
    rows = mismatch.filter(pl.col("problem") != "missing in delivery")
    if rows.height == 0:
        return empty_hits()
    text = lambda col: pl.col(col).cast(pl.String).fill_null("–")  # noqa: E731
    de = pl.format("Kontrollsumme ({}) stimmt für Beleg {} nicht: Lieferung Soll {} / Haben {} "
                   "/ {} Zeilen, Kontrolldatei Soll {} / Haben {} / {} Zeilen.", pl.lit(source),
                   pl.col("journal_id"), text("debit"), text("credit"), text("lines"),
                   text("debit_control"), text("credit_control"), text("lines_control"))
    en = pl.format("Control totals ({}) do not reconcile for journal {} ({}): delivered debit {}"
                   " / credit {} / {} lines, control debit {} / credit {} / {} lines.",
                   pl.lit(source), pl.col("journal_id"), pl.col("problem"), text("debit"),
                   text("credit"), text("lines"), text("debit_control"), text("credit_control"),
                   text("lines_control"))
    return hits(rows, "VAL-CTRL", "high", de, en,
                ["problem", "debit", "credit", "lines", "debit_control", "credit_control",
                 "lines_control", "debit_difference", "credit_difference"])


def _overall(frame: pl.DataFrame | pl.LazyFrame, totals: ControlTotals, tolerance: float) -> list[str]:
    """Overall figures that differ, in words."""
    if totals.per_journal is not None:
        return []  # the per-journal comparison covers counts and sums, and names the journals
    stated = totals.overall or {}
    # one aggregate pass over the (possibly lazy) delivery
    lines, journals, debit, credit = frame.lazy().select(
        pl.len(), pl.col("journal_id").n_unique(),
        pl.col("amount").filter(pl.col("amount") > 0).sum().alias("debit"),
        (-pl.col("amount").filter(pl.col("amount") < 0).sum()).alias("credit")).collect().row(0)
    facts: dict[str, Any] = {"line_count": lines, "journal_count": journals,
                             "debit": debit, "credit": credit}
    out = []
    for name, actual in facts.items():
        if name not in stated or stated[name] is None:
            continue
        expected = stated[name]
        if name in ("line_count", "journal_count"):
            differs = int(expected) != int(actual)
        else:  # exact decimals: sums of a billion must still match to the cent
            diff = Decimal(str(actual or 0)) - Decimal(str(expected))
            differs = abs(diff) > Decimal(str(tolerance))
        if differs:
            out.append(f"{name.replace('_', ' ')} {actual} vs {expected} stated")
    return out


def reconcile(frame: pl.DataFrame | pl.LazyFrame, control_totals: list[ControlTotals], policy: str,
              tolerance: float) -> Reconciliation:
    """Compare every set of control totals with the delivered lines."""
    result = Reconciliation()
    if not control_totals:
        return result
    delivered = delivered_per_journal(frame)
    found = []
    for totals in control_totals:
        source = Path(totals.source).name
        report: dict[str, Any] = {"source": totals.source, "status": "ok"}
        overall = _overall(frame, totals, tolerance)
        if overall:
            result.stop.append(f"control totals {source}: " + "; ".join(overall))
            report["overall_differences"] = overall
        if totals.per_journal is not None:
            control = _control_per_journal(totals.per_journal)
            mismatch = compare_journals(delivered.select(pl.exclude("entity", "fiscal_year")),
                                        control, tolerance)
            mismatch = mismatch.join(delivered.select("journal_id", "entity", "fiscal_year"),
                                     on="journal_id", how="left")
            rows = mismatch.drop("entity", "fiscal_year").with_columns(
                pl.col(pl.Decimal).cast(pl.String)).to_dicts()
            missing = [r for r in rows if r["problem"] == "missing in delivery"]
            differ = [r for r in rows if r["problem"] != "missing in delivery"]
            report.update(journals_in_control=control.height, journals_delivered=delivered.height,
                          mismatches=len(rows), missing_in_delivery=len(missing),
                          differing=len(differ), journals=rows)
            if missing:
                result.stop.append(f"control totals {source}: {len(missing)} journal(s) missing "
                                   f"in the delivery: {_listing(missing)}")
            if differ:
                text = (f"control totals {source}: {len(differ)} of {control.height:,} journals "
                        f"do not reconcile: {_listing(differ)}")
                (result.stop if policy == "stop" else result.warnings).append(text)
                found.append(_findings(mismatch, source))
            result.headline.append(
                f"control totals {source}: {control.height:,} journals checked, "
                f"{len(rows)} do not reconcile" + (f" ({_listing(rows)})" if rows else ""))
        elif not overall:
            result.headline.append(f"control totals {source}: overall figures reconcile")
        if report.get("mismatches") or overall:
            report["status"] = "mismatch"
        result.reports.append(report)
    if found:
        result.findings = pl.concat(found)
    return result
