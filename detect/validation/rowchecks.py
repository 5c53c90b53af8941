"""Row-level checks of a suite: vectorised masks over all rows, GX on its sample, agreement.

``mask_exprs`` decides what is quarantined; ``check_report`` sets GX's counts beside the masks'
(on the rows GX saw they must agree); ``master_checks`` runs the master-data suites in GX.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from detect.errors import ConfigError
from detect.validation import masks
from detect.validation.gxrun import ROW, CheckResult, GxRunner
from detect.validation.suites import Check, Suite, load_suite, master_suite_names


def master_checks(runner: GxRunner, master: dict[str, pl.DataFrame], directory: Path,
                   batch_rows: int) -> tuple[list[dict[str, Any]], list[str]]:
    checks, warns = [], []
    for name, suite_name in master_suite_names(directory).items():
        frame = master.get(name)
        if frame is None or frame.height == 0:
            continue
        suite = load_suite(suite_name, directory)
        framed = frame.with_row_index(ROW).with_columns(pl.col(ROW).cast(pl.Int64))
        missing = {c.key for c in suite.checks if any(col not in framed.columns
                                                      for col in c.columns)}
        results = runner.validate(suite.without(missing), framed, {}, batch_rows)
        for r in results:
            checks.append({"suite": suite_name, "key": r.key, "type": r.type,
                           "columns": r.columns, "severity": r.severity, "reason": r.reason,
                           "failing_rows": r.unexpected_count, "gx": r.summary()})
            if r.unexpected_count:
                warns.append(f"master data {name}: {r.reason} in {r.unexpected_count:,} of "
                             f"{frame.height:,} rows (check {r.key}; see the Data Docs)")
    return checks, warns


def mask_exprs(view: pl.DataFrame | pl.LazyFrame, suite: Suite, params: dict[str, Any],
               unique: list[list[str]] | None = None, unique_key: list[str] | None = None
               ) -> tuple[dict[str, pl.Expr], dict[str, str]]:
    """Every row-level check of the suite as a boolean expression (key -> expression aliased
    ``_fail_<key>``; computed per query when used on a LazyFrame, never stored) and the flag
    names. The expressions read ``view``'s columns, so they apply to any frame with them, e.g.
    a few rows of ``view`` (``detect.validate._collect_rows``).

    ``unique``, if given, collects the column lists of uniqueness checks that found no
    duplicate at all (among the rows they do not skip): what the history merge would otherwise
    check again (``history.note_unique_keys``). ``unique_key``: columns known to identify
    every row (the ingest's journal runs, ``detect.ingest.JournalRuns``): a uniqueness check
    over them, or over more columns, fails no row and is not counted."""
    flags, exprs = {}, {}
    schema = view.collect_schema() if isinstance(view, pl.LazyFrame) else view.schema
    for check in suite.checks:
        unknown = [c for c in check.columns if c not in schema]
        if unknown:
            raise ConfigError(f"expectation {check.key} names unknown column(s) "
                              f"{', '.join(unknown)}", file=str(suite.path),
                              hint=f"columns: {', '.join(c for c in schema if c != ROW)}")
        try:
            expr = masks.fails(check, params, schema)
        except masks.Unsupported:
            continue  # table-level: GX only
        if isinstance(view, pl.LazyFrame) and ROW in schema and masks.uniqueness(check):
            cols, skip = masks.uniqueness(check)  # type: ignore[misc]
            expr = pl.lit(False) if unique_key is not None and set(unique_key) <= set(cols) \
                else _duplicate_rows(view, cols, skip)
            if unique is not None and expr.meta.eq(pl.lit(False)):
                unique.append(list(cols))
        flags[check.key] = f"_fail_{check.key}"
        exprs[check.key] = expr.fill_null(False).alias(flags[check.key])
    return exprs, flags


def can_fail(check: Check, expr: pl.Expr, nulls: dict[str, int] | None, rows: int,
             values: dict[str, pl.Series] | None = None) -> bool:
    """False when ``check``'s mask (``expr``, from ``mask_exprs``) is false in every row by
    what is known without a query: a constant false (uniqueness over columns known to identify
    every row), a (not-)null check on a column whose null count ``nulls`` gives (over all
    ``rows`` rows; only columns whose values the mask reads unchanged), or a row-wise check
    of one column whose every distinct value ``values`` holds (null included or not: a null
    is always tried) that fails none of them."""
    if expr.meta.undo_aliases().meta.eq(pl.lit(False).fill_null(False)):
        return False
    roots = set(expr.meta.root_names())
    if values and len(roots) == 1 and next(iter(roots)) in values and masks.uniqueness(check) is None \
            and not check.kwargs.get("row_condition"):
        known = values[next(iter(roots))]
        distinct = pl.concat([known, pl.Series(known.name, [None], dtype=known.dtype)])
        return bool(pl.DataFrame([distinct]).select(expr).to_series().any())
    column = check.kwargs.get("column")
    if nulls is None or check.kwargs.get("row_condition") or column not in nulls:
        return True
    if check.type == "expect_column_values_to_not_be_null":
        return nulls[column] != 0
    if check.type == "expect_column_values_to_be_null":
        return nulls[column] != rows
    return True


def _duplicate_rows(view: pl.LazyFrame, cols: list[str], skip: pl.Expr) -> pl.Expr:
    """Rows whose key occurs more than once, as ``_row in (ids)``: a streaming count per key hash
    finds the candidates, the exact comparison runs on those few rows only (same result as
    ``is_duplicated`` over the whole delivery, without holding its key columns)."""
    key_hash = pl.struct(cols).hash(seed=3)
    candidates = (view.filter(~skip).group_by(key_hash.alias("_h")).len()
                  .filter(pl.col("len") > 1).select("_h").collect().get_column("_h"))
    if candidates.is_empty():
        return pl.lit(False)
    rows = (view.filter(~skip & key_hash.is_in(candidates.implode())).select(ROW, *cols)
            .collect())
    ids = rows.filter(pl.struct(cols).is_duplicated()).get_column(ROW)
    return pl.col(ROW).is_in(ids.implode())


def flag_counts(frame: pl.DataFrame, flags: dict[str, str]) -> dict[str, int]:
    """Failing rows per check key in ``frame`` (which holds the ``_fail_<key>`` columns)."""
    if not flags or frame.height == 0:
        return {}
    return frame.select(pl.col(f).sum().alias(k) for k, f in flags.items()).row(0, named=True)


def check_report(suite: Suite, totals: dict[str, int], on_gx: dict[str, int], gx_rows: int,
                 row_checks: set[str], gx_results: dict[str, CheckResult]
                 ) -> tuple[list[dict[str, Any]], list[str]]:
    """Per check: failing rows (all data: ``totals``), GX's counts on the ``gx_rows`` rows it
    saw, and whether they agree with the masks' counts on those rows (``on_gx``)."""
    report, problems = [], []
    for check in suite.checks:
        gx_res = gx_results.get(check.key)
        entry: dict[str, Any] = {
            "suite": suite.name, "key": check.key, "type": check.type, "columns": check.columns,
            "severity": check.severity, "reason": check.reason,
            "row_level": check.key in row_checks,
            "failing_rows": int(totals.get(check.key) or 0),
            "gx": gx_res.summary() if gx_res else None}
        if check.key in row_checks and gx_res is not None and gx_rows:
            entry["agrees_with_gx"] = int(on_gx.get(check.key) or 0) == gx_res.unexpected_count
            if not entry["agrees_with_gx"]:
                problems.append(
                    f"check {check.key}: Great Expectations counts {gx_res.unexpected_count:,} "
                    f"failing rows on its {gx_rows:,} rows, the vectorised check "
                    f"{on_gx.get(check.key) or 0:,}; please report this")
        elif check.key not in row_checks and gx_res is not None and not gx_res.success:
            problems.append(f"table check {check.key} failed on the validated rows "
                            f"({check.reason}); see the Data Docs")
        report.append(entry)
    return report, problems
