"""``belegwacht export findings``: a run's review items as CSV, Parquet or XLSX.

Why this shape: auditors take findings into Excel, audit software and working papers, so the
columns are the contract in DESIGN.md (``entity, fiscal_year, journal_id, line_no, posting_date,
gl_account, amount, risk_score, rank, rule_ids, model_score, reasons, status``) followed by the
other item fields. ``status`` is the *current* review status from the store.

Exported files are opened by spreadsheet programs, which run any cell starting with ``=``, ``+``,
``-``, ``@``, tab or CR as a formula (CSV/formula injection; booking texts come from outside).
Text cells starting with those characters get a leading single quote (OWASP guidance) in CSV and
XLSX; numbers and dates are written as typed values and never altered. Parquet keeps the raw
values (it is data, not a spreadsheet).
"""

from __future__ import annotations

import getpass
import os
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from detect.errors import UserError

CONTRACT_COLUMNS: list[str] = ["entity", "fiscal_year", "journal_id", "line_no", "posting_date",
                               "gl_account", "amount", "risk_score", "rank", "rule_ids",
                               "model_score", "reasons", "status"]
EXTRA_COLUMNS: list[str] = ["severity", "journal_amount", "period", "cost_center", "entered_by",
                            "vendor_id", "document_type", "description", "n_lines", "n_rules",
                            "above_capacity", "assignee", "last_comment", "last_decision_by",
                            "last_decision_at", "suppressed", "item_id", "run_id"]
FORMULA_PREFIX = r"^[=+\-@\t\r]"
FORMATS = (".csv", ".parquet", ".xlsx")


class ExportError(UserError):
    """The export cannot be written as asked."""


def neutralise(frame: pl.DataFrame) -> pl.DataFrame:
    """Prefix a single quote to every text cell a spreadsheet would run as a formula."""
    return frame.with_columns(
        pl.when(pl.col(c).str.contains(FORMULA_PREFIX)).then(pl.lit("'") + pl.col(c))
        .otherwise(pl.col(c)).alias(c)
        for c, t in frame.schema.items() if t == pl.String())


def resolve_run(data_dir: Path, run_id: str | None) -> Path:
    """The run folder of ``run_id``, or of ``CURRENT`` when None."""
    from detect.pipeline import RUNS, current_run_dir

    if run_id:
        run_dir = data_dir / RUNS / run_id
        if not run_dir.is_dir():
            known = sorted(p.name for p in (data_dir / RUNS).glob("*") if p.is_dir()
                           and "." not in p.name)[-5:] if (data_dir / RUNS).is_dir() else []
            raise ExportError(f"no published run {run_id!r}", file=str(data_dir / RUNS),
                              hint=f"recent runs: {', '.join(known) or 'none'}")
        return run_dir
    run_dir = current_run_dir(data_dir)
    if run_dir is None:
        raise ExportError("no published run yet", file=str(data_dir),
                          hint="run `belegwacht run SOURCE` first")
    return run_dir


def findings_frame(data_dir: Path, run_id: str | None, lang: str = "de",
                   store_url: str = "") -> pl.DataFrame:
    """The export rows: the run's findings joined with their current review state."""
    from detect.store import ReviewStore

    run_dir = resolve_run(data_dir, run_id)
    path = run_dir / "findings.parquet"
    if not path.exists():
        raise ExportError("the run has no findings.parquet", file=str(run_dir))
    found = pl.read_parquet(path)
    if lang == "en" and "reasons_en" in found.columns:
        found = found.with_columns(pl.col("reasons_en").alias("reasons"))
    if "item_id" not in found.columns:
        from detect.store import item_id
        found = found.with_columns(pl.Series("item_id", [
            item_id(e, y, j) for e, y, j in
            found.select("entity", "fiscal_year", "journal_id").iter_rows()], dtype=pl.String))
    state = ReviewStore.for_data_dir(data_dir, store_url).items(include_unflagged=True).select(
        "item_id", "status", "assignee", "last_comment", "last_decision_by", "last_decision_at",
        "suppressed")
    found = (found.drop([c for c in state.columns if c != "item_id" and c in found.columns])
             .join(state, on="item_id", how="left")
             .with_columns(pl.col("status").fill_null("open"),
                           pl.col("suppressed").fill_null(False),
                           pl.lit(run_dir.name).alias("run_id")))
    for name in CONTRACT_COLUMNS + EXTRA_COLUMNS:
        if name not in found.columns:
            found = found.with_columns(pl.lit(None, dtype=pl.String).alias(name))
    order = "rank" if found["rank"].null_count() < found.height else "risk_score"
    return (found.select(CONTRACT_COLUMNS + EXTRA_COLUMNS)
            .sort(order, "entity", "fiscal_year", "journal_id", descending=order == "risk_score",
                  nulls_last=True))


def pseudonymised(frame: pl.DataFrame, data_dir: Path, run_id: str | None) -> pl.DataFrame:
    """Employee names and private payees replaced by the same keyed pseudonyms the app shows,
    in name columns and inside the reason and booking texts."""
    from detect.app.data import personal_values  # the app's list of personal values
    from detect.privacy import Masker, load_key

    masker = Masker.build(personal_values(data_dir, resolve_run(data_dir, run_id)),
                          load_key(data_dir))
    return masker.frame(frame, ["entered_by", "assignee", "last_decision_by"],
                        ["reasons", "description", "last_comment"])


def export_findings(data_dir: Path, run_id: str | None, out: Path, lang: str = "de",
                    store_url: str = "", pseudonymise: bool = False) -> int:
    """Write the findings of ``run_id`` (default CURRENT) to ``out``; return the row count."""
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise ExportError(f"unknown export format {out.suffix or '(none)'!r}", file=str(out),
                          hint="use a file name ending in .csv, .parquet or .xlsx")
    frame = findings_frame(data_dir, run_id, lang, store_url)
    if pseudonymise:
        frame = pseudonymised(frame, data_dir, run_id)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    if suffix == ".parquet":
        frame.write_parquet(tmp)
    elif suffix == ".csv":
        write_csv(frame, tmp)
    else:
        write_xlsx(frame, tmp, run_label=frame["run_id"][0] if frame.height else "", lang=lang)
    os.replace(tmp, out)
    _log_export(data_dir, store_url, out, frame.height)
    return frame.height


def write_csv(frame: pl.DataFrame, path: Path) -> None:
    """UTF-8 with BOM (so Excel shows umlauts), comma, text always quoted, numbers bare."""
    safe = neutralise(frame)
    with open(path, "wb") as fh:
        fh.write("\ufeff".encode())
        safe.write_csv(fh, quote_style="non_numeric", date_format="%Y-%m-%d")


def write_xlsx(frame: pl.DataFrame, path: Path, run_label: str = "", lang: str = "de") -> None:
    """Typed cells (numbers, dates), bold frozen header, autofilter, sensible widths."""
    import xlsxwriter

    safe = neutralise(frame)
    wb = xlsxwriter.Workbook(str(path), {"strings_to_formulas": False, "strings_to_urls": False,
                                          "strings_to_numbers": False, "nan_inf_to_errors": True})
    header = wb.add_format({"bold": True, "bg_color": "#DDE4EE", "border": 1})
    date_fmt = wb.add_format({"num_format": "dd.mm.yyyy" if lang == "de" else "yyyy-mm-dd"})
    money = wb.add_format({"num_format": "#,##0.00"})
    score = wb.add_format({"num_format": "0.0"})
    prob = wb.add_format({"num_format": "0.000"})
    integer = wb.add_format({"num_format": "0"})
    wrap = wb.add_format({"text_wrap": True, "valign": "top"})
    ws = wb.add_worksheet("findings")
    for col, (name, dtype) in enumerate(safe.schema.items()):
        ws.write_string(0, col, name, header)
        series = safe[name]
        fmt, width = None, max(10, min(60, len(name) + 2))
        if isinstance(dtype, pl.Decimal) or name in ("amount", "journal_amount"):
            series = series.cast(pl.Float64, strict=False)
            fmt, width = money, 14
        elif dtype.is_float():
            fmt = prob if name == "model_score" else score
        elif dtype.is_integer():
            fmt = integer
        elif dtype in (pl.Date(), pl.Datetime()):
            fmt, width = date_fmt, 12
        elif name in ("reasons", "description", "last_comment"):
            fmt, width = wrap, 60
        ws.set_column(col, col, width, fmt)
        if safe.height:
            ws.write_column(1, col, series.to_list(), fmt)
    ws.freeze_panes(1, 0)
    ws.autofilter(0, 0, max(safe.height, 1), max(safe.width - 1, 0))
    info = wb.add_worksheet("about")
    rows = [("run", run_label), ("exported_at", datetime.now(UTC).isoformat(timespec="seconds")),
            ("rows", str(safe.height)),
            ("note", "Text cells starting with = + - @ tab or CR carry a leading ' (formula "
                     "injection guard).")]
    for r, (key, value) in enumerate(rows):
        info.write_string(r, 0, key, header)
        info.write_string(r, 1, value)
    info.set_column(1, 1, 80)
    wb.close()


def _log_export(data_dir: Path, store_url: str, out: Path, rows: int) -> None:
    """Exports leave the system with personal data: record who exported what."""
    from detect.store import ReviewStore

    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        user = "?"
    ReviewStore.for_data_dir(data_dir, store_url).log_access(
        user, "export_findings", f"{rows} rows to {out.name}")
