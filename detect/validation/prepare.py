"""Derived columns the booking suite compares against, and placeholder-date detection.

GX column-pair expectations compare two columns of the same row, so the row's fiscal-year bounds
are computed here once (vectorised) and the suite stays a plain, readable file.

A date column where most values are a placeholder (1900-01-01, ...) is *suspicious but valid*:
the rows are kept, the user is told which column and how many rows, and the column's range
checks are switched off for this delivery (``v_<column>`` is null), so a bad mapping never
quarantines most of a file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import polars as pl

from detect.config import Settings

DATE_COLUMNS = ("posting_date", "document_date", "entered_at")
"""Date columns checked for placeholders (entered_at by its date part)."""
ADS_COLUMNS = {"document_date": "Document_Date", "entered_at": "Entered_Date"}
"""Where the ADS reader takes these from (for the ``posting_date_column`` hint)."""


@dataclass
class PlaceholderReport:
    column: str
    rows: int
    share: float
    values: dict[str, int]
    unreliable: bool
    outside_fiscal_year: int = 0
    """Further rows (not placeholders) outside the fiscal year: evidence the column is wrong."""
    alternatives: list[tuple[str, float]] = field(default_factory=list)
    """Other date columns and the share of the placeholder rows where they look right."""

    def message(self, total: int, fmt: str = "") -> str:
        vals = ", ".join(f"{v} ({n:,})" for v, n in self.values.items())
        text = (f"{self.column}: {self.rows:,} of {total:,} rows ({self.share:.1%}) hold a "
                f"placeholder date [{vals}]")
        if not self.unreliable:
            return text + "."
        text += ("; they are kept, not quarantined, and the date checks on "
                 f"{self.column} are skipped for this delivery")
        if self.outside_fiscal_year:
            text += (f" ({self.outside_fiscal_year:,} further rows lie outside their fiscal year, "
                     "so the column does not look like a posting date)")
        text += "."
        if self.alternatives:
            best = ", ".join(f"{c} looks right in {s:.1%} of these rows"
                             for c, s in self.alternatives)
            text += f" Map another source column as {self.column}: {best}. "
            ads = [ADS_COLUMNS[c] for c, _ in self.alternatives if c in ADS_COLUMNS]
            if fmt == "ads" and ads and self.column == "posting_date":
                text += f"For this ADS export set posting_date_column = \"{ads[0]}\" in belegwacht.toml."
            else:
                text += (f"With a mapping profile set {self.column} = \"<source column>\" "
                         "(--format csv), or ask for an export with the real date.")
        else:
            text += f" Map the source column that holds the real {self.column} instead."
        return text


def _dates(values: list[str]) -> list[date]:
    return [date.fromisoformat(v) for v in values]


def month_start_days(year: pl.Expr, month: int) -> pl.Expr:
    """Days from 1970-01-01 to the first of ``month`` in ``year`` (1 <= year), as Int32:
    integer arithmetic (H. Hinnant's days_from_civil) instead of ``pl.date`` per row, which
    cost 0.02 CPU s per use per 1M lines in the row checks; a test compares both for every
    year 1000..9999 and month."""
    y = year.cast(pl.Int32) - (1 if month <= 2 else 0)
    day_of_year = (153 * ((month + 9) % 12) + 2) // 5   # counted from 1 March
    return y * 365 + y // 4 - y // 100 + y // 400 + (day_of_year - 719468)


def fiscal_year_bounds(settings: Settings) -> tuple[pl.Expr, pl.Expr]:
    """First and last day of the row's fiscal year (named after the year it starts in)."""
    first, last = fiscal_year_day_numbers(settings)
    return first.cast(pl.Date), last.cast(pl.Date)


def fiscal_year_day_numbers(settings: Settings) -> tuple[pl.Expr, pl.Expr]:
    """``fiscal_year_bounds`` as day numbers (Int32 days since 1970-01-01), for arithmetic."""
    start = settings.fiscal_year_start_month
    fy = pl.when(pl.col("fiscal_year").is_between(1000, 9998)).then(pl.col("fiscal_year"))
    return month_start_days(fy, start), month_start_days(fy + 1, start) - 1


def _date_of(column: str) -> pl.Expr:
    expr = pl.col(column)
    return expr.dt.date() if column == "entered_at" else expr


def placeholder_reports(frame: pl.DataFrame | pl.LazyFrame, settings: Settings,
                        total: int | None = None) -> list[PlaceholderReport]:
    """One report per date column that holds any placeholder value (aggregate queries that
    return only the counts, so ``frame`` may be a scan of the whole delivery)."""
    vs = settings.validation
    placeholders = _dates(vs.placeholder_dates)
    lazy = frame.lazy()
    if total is None:
        total = int(lazy.select(pl.len()).collect().item())
    first, last = fiscal_year_bounds(settings)
    reports = []
    for column in DATE_COLUMNS:
        is_ph = _date_of(column).is_in(placeholders)
        counts = (lazy.filter(is_ph).group_by(_date_of(column).alias("v")).len()
                  .sort(["len", "v"], descending=[True, False]).collect())
        if counts.height == 0:
            continue
        rows = int(counts["len"].sum())
        share = rows / total if total else 0.0
        rep = PlaceholderReport(column, rows, share,
                                {str(v): int(n) for v, n in counts.iter_rows()},
                                unreliable=share >= vs.placeholder_share_warn)
        if rep.unreliable and column == "posting_date":
            inside = _date_of(column).is_between(first, last)
            rep.outside_fiscal_year = lazy.select(
                (~is_ph & ~inside & pl.col(column).is_not_null()).sum()).collect().item()
            rep.alternatives = _alternatives(lazy.filter(is_ph), column, placeholders, first,
                                             last)
        reports.append(rep)
    return reports


def _alternatives(rows: pl.LazyFrame, column: str, placeholders: list[date], first: pl.Expr,
                  last: pl.Expr) -> list[tuple[str, float]]:
    """Share of ``rows`` where each other date column is filled, real and in the fiscal year."""
    exprs = [pl.len().alias("_n")]
    for other in DATE_COLUMNS:
        if other == column:
            continue
        d = _date_of(other)
        ok = d.is_not_null() & ~d.is_in(placeholders) & d.is_between(first, last)
        exprs.append(ok.mean().alias(other))
    shares = rows.select(exprs).collect().row(0, named=True)
    if not shares.pop("_n"):
        return []
    return sorted(((c, float(s)) for c, s in shares.items() if s and s >= 0.5),
                  key=lambda cs: -cs[1])


LATEST = "v_document_date_latest"
"""The derived column ``add_derived(..., bound=True)`` replaces by a lower bound."""


def latest_lower_bound_days(years: int) -> int:
    """Days that ``offset_by(f"{years}y")`` adds to a date at least (a year adds 365 or 366
    days, 2024-02-29 + 1y = 2025-02-28 is 365; one day of slack on top)."""
    return 365 * years - 1 if years >= 0 else 366 * years - 1


def add_derived(frame: pl.DataFrame | pl.LazyFrame, settings: Settings, unreliable: set[str],
                bound: bool = False) -> pl.DataFrame:
    """The ``v_`` columns the booking suite compares (see its ``notes``).

    ``bound``: ``v_document_date_latest`` is a lower bound of the exact column (posting date
    plus ``latest_lower_bound_days``: integer arithmetic, where ``offset_by`` per row cost
    0.03 CPU s at 1M lines), for a query that only needs a superset of the rows failing
    ``document date <= latest`` (``detect.validate._collect_rows``)."""
    vs = settings.validation
    first, last = fiscal_year_day_numbers(settings)   # day numbers: plain integer arithmetic
    tol = vs.fiscal_year_tolerance_days
    closing = pl.when(pl.col("period").fill_null(0) >= 13).then(
        pl.lit(vs.closing_period_days, pl.Int32)).otherwise(pl.lit(0, pl.Int32))
    posting = (pl.lit(None, dtype=pl.Date) if "posting_date" in unreliable
               else pl.col("posting_date"))
    document = (pl.lit(None, dtype=pl.Date) if "document_date" in unreliable
                else pl.col("document_date"))
    years = vs.document_date_max_years_after_posting
    latest = ((posting.cast(pl.Int32) + latest_lower_bound_days(years)).cast(pl.Date) if bound
              else posting.dt.offset_by(f"{years}y"))
    return frame.with_columns(
        posting.alias("v_posting_date"),
        document.alias("v_document_date"),
        (first - tol).cast(pl.Date).alias("v_fy_first_day"),
        (last + tol + closing).cast(pl.Date).alias("v_fy_last_day"),
        latest.alias(LATEST),
    )


def currency_counts(frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """Lines per non-null currency (currency, len), most frequent first: one aggregate."""
    return (frame.lazy().filter(pl.col("currency").is_not_null()).group_by("currency").len()
            .sort(["len", "currency"], descending=[True, False]).collect())


def currency_warnings(frame: pl.DataFrame | pl.LazyFrame, settings: Settings,
                      counts: pl.DataFrame | None = None) -> list[str]:
    """Mixed currencies are valid but change what sums mean: say so, with the counts
    (``counts``: ``currency_counts`` of ``frame`` if already at hand)."""
    if counts is None:
        counts = currency_counts(frame)
    if counts.height == 0:
        return []
    listing = ", ".join(f"{c} {n:,}" for c, n in counts.head(5).iter_rows())
    main = counts["currency"][0]
    out = []
    if counts.height > 1:
        out.append(f"currency: the delivery mixes currencies (lines: {listing}); journal sums "
                   "add amounts regardless of currency, so mixed journals may look unbalanced")
    if main != settings.currency:
        out.append(f"currency: most lines are in {main}, the configured currency is "
                   f"{settings.currency} (set currency = \"{main}\" in belegwacht.toml if the "
                   "ledger is kept in it)")
    return out
