"""The validation gate: nothing downstream sees data the auditors cannot trust, nothing vanishes.

``validate(ingested, ctx)`` does, in this order:

1. **file-level checks** that reject the delivery (``DeliveryRejected``; the partial run is never
   published): an identical delivery already processed (``AlreadyProcessed``, exit 0), no rows,
   a required column empty in every row, a truncated file, journal numbers below what the entity
   already processed, control totals that do not reconcile (see ``validation/reconcile.py``);
2. **row-level checks** from ``expectations/bookings.json`` run through Great Expectations;
   failing rows go to ``quarantine.parquet`` with the check and the reason, the rest to
   ``bookings.parquet`` (``BOOKING_SCHEMA``, bank accounts pseudonymised);
3. **journal-level findings** (unbalanced journals, numbering gaps, control-total differences)
   in rule-hit shape -> ``validation_findings.parquet`` and ``ValidationResult.journal_findings``;
4. **warnings** for suspicious-but-valid data (placeholder dates, master-data problems);
5. ``validation.json`` and GX Data Docs (``data_docs/index.html``) in the run folder.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from detect.errors import AlreadyProcessed, DeliveryRejected
from detect.ingest import IngestResult
from detect.privacy import load_key, pseudonymise_iban
from detect.validation import (
    filecheck, gxrun, journals, output, prepare, quarantine, reconcile, rowchecks, state,
)
from detect.validation.gxrun import ROW, GxRunner
from detect.validation.gxrun import sample_lazy as gx_sample_lazy
from detect.validation.suites import Check
from detect.validation.suites import load_suite, suites_dir

if TYPE_CHECKING:
    from detect.pipeline import RunContext

gxrun.preload()  # the pipeline imports this module before ingesting: overlap the GX import

# re-exported so the pipeline can ask before ingesting
already_processed = state.already_processed
remember_delivery = state.remember_delivery

QUARANTINE_LEAD = ["source_file", "source_line", "expectation", "reason"]
QUARANTINE_SHARE_WARN = 0.2
"""Quarantining this share of a delivery or more earns a warning to check the mapping."""
REVIEW_RULES = {"VAL-CTRL"}
"""Validation findings handed to scoring (the others duplicate rules of the catalog)."""


@dataclass
class ValidationResult:
    clean_path: Path
    quarantine_path: Path
    rows_in: int
    rows_clean: int
    rows_quarantined: int
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    journal_findings: pl.DataFrame = field(default_factory=journals.empty_hits)
    control_totals: list[dict[str, Any]] = field(default_factory=list)
    docs_index: Path | None = None
    unreliable_columns: list[str] = field(default_factory=list)
    """Columns flagged as mostly placeholders: kept, but date-based rules should not trust them."""
    checks: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    headline: list[str] = field(default_factory=list)

    def review_hits(self) -> pl.DataFrame:
        """Findings the rule catalog does not produce itself (control-total differences), in
        rule-hit shape, for scoring to turn into review items. Unbalanced journals and gaps are
        left to the catalog's JRN001/JRN002, which see the whole history."""
        return self.journal_findings.filter(pl.col("rule_id").is_in(list(REVIEW_RULES)))

    def summary(self) -> dict[str, Any]:
        """JSON-able digest for the run manifest."""
        by_rule = (self.journal_findings.group_by("rule_id").len().sort("rule_id").rows()
                   if self.journal_findings.height else [])
        return {
            "rows_in": self.rows_in, "rows_clean": self.rows_clean,
            "rows_quarantined": self.rows_quarantined,
            "quarantine_reasons": self.quarantine_reasons,
            "warnings": self.warnings,
            "journal_findings": {rule: int(n) for rule, n in by_rule},
            "control_totals": [{k: v for k, v in r.items() if k != "journals"}
                               for r in self.control_totals],
            "unreliable_columns": self.unreliable_columns,
            "data_docs": "data_docs/index.html" if self.docs_index else None,
            "timings": self.timings,
            "headline": self.headline,
        }


class _Clock:
    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.times[name] = round(self.times.get(name, 0.0) + now - self._t, 3)
        self._t = now


def _delivery_hashes(ingested: IngestResult) -> tuple[list[str], list[str]]:
    used = [i for i in ingested.inputs if i.role != "ignored"]
    return [i.sha256 for i in used], [Path(i.path).name for i in used]


def _source(ingested: IngestResult) -> pl.LazyFrame:
    """The delivery as a lazy scan with a row id, in delivered order. Nothing is materialised:
    every later step is a query over the ingested Parquet that returns a small result, so
    validation's memory does not grow with the delivery (issue #10)."""
    lazy = ingested.bookings.lazy()
    if not _in_delivered_order(lazy):  # rare (files out of order): sorted per query
        lazy = lazy.sort("source_file", "source_line", nulls_last=True, maintain_order=True)
    return lazy.with_row_index(ROW).with_columns(pl.col(ROW).cast(pl.Int64))


def _in_delivered_order(lazy: pl.LazyFrame) -> bool:
    """True when rows are already sorted by (source_file, source_line): one aggregate over the
    two columns."""
    same = pl.col("source_file") == pl.col("source_file").shift(1)
    ok = ((pl.col("source_file") > pl.col("source_file").shift(1))
          | (same & (pl.col("source_line") >= pl.col("source_line").shift(1))))
    nulls, good = lazy.select(
        (pl.col("source_file").null_count() + pl.col("source_line").null_count()).alias("n"),
        ok.slice(1).all().alias("ok")).collect().row(0)
    return bool(nulls == 0 and good)


def _failing(flagged: pl.LazyFrame, checks: list[Check], flags: dict[str, str]) -> pl.DataFrame:
    """The rows failing any quarantining check, in row order: the only rows collected whole."""
    used = [flags[c.key] for c in checks if c.key in flags and c.quarantines]
    # first the ids (a narrow query: only the checks' columns are read), then the full rows of
    # just those ids; filtering the full-width scan directly read the whole delivery into memory
    ids = (flagged.filter(pl.any_horizontal(used)).select(ROW).collect().get_column(ROW)
           if used else pl.Series(ROW, [], dtype=pl.Int64))
    if ids.is_empty():
        return flagged.head(0).collect()
    return flagged.filter(pl.col(ROW).is_in(ids.implode())).sort(ROW).collect()


def _pseudonymise_bank_accounts(frame: pl.LazyFrame, key: bytes) -> pl.LazyFrame:
    """``privacy.pseudonymise_iban`` applied to the distinct delivered values only (cleaning
    with a regex and upper-casing every row cost 0.3 s per 1M lines); each row then gets one
    lookup of its raw value. Same result by construction."""
    column = "bank_account"
    raw = frame.select(pl.col(column).unique().drop_nulls()).collect().get_column(column)
    if raw.is_empty():
        return frame
    pseudonyms = pseudonymise_iban(raw.to_frame(), column, key).get_column(column)
    return frame.with_columns(pl.col(column).replace_strict(
        raw, pseudonyms, default=None, return_dtype=pl.String))


def _pseudonymise_master(master: dict[str, pl.DataFrame], key: bytes, run_dir: Path) -> None:
    """IBANs in master data are pseudonymised like the bookings' (so rules can compare them),
    in memory and in ``master/*.parquet`` already written by the pipeline."""
    changed = []
    vendors = master.get("vendors")
    if vendors is not None and "bank_account" in vendors.columns and vendors.height:
        master["vendors"] = pseudonymise_iban(vendors, "bank_account", key)
        changed.append("vendors")
    changes = master.get("vendor_changes")
    if changes is not None and changes.height and "field" in changes.columns:
        is_bank = pl.col("field").str.to_lowercase().str.contains("bank|iban")
        bank, other = changes.filter(is_bank), changes.filter(~is_bank.fill_null(False))
        if bank.height:
            for col in ("old_value", "new_value"):
                bank = pseudonymise_iban(bank, col, key)
            master["vendor_changes"] = pl.concat([other, bank]).sort("changed_at")
            changed.append("vendor_changes")
    for name in changed:
        path = run_dir / "master" / f"{name}.parquet"
        if path.exists():
            master[name].write_parquet(path)


def _write_json(run_dir: Path, payload: dict[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / "validation.json.tmp"
    tmp.write_text(json.dumps(payload, indent=2, default=str, ensure_ascii=False), "utf-8")
    tmp.replace(run_dir / "validation.json")


def _reject(run_dir: Path, reasons: list[str], payload: dict[str, Any], *,
            hint: str | None = None, file: str | None = None) -> DeliveryRejected:
    """Write what was found (the full lists) and build the error to raise."""
    _write_json(run_dir, {**payload, "outcome": "rejected", "reasons": reasons})
    message = "delivery rejected: " + " | ".join(reasons)
    # the pipeline keeps a failed run's folder as runs/<id>.failed for diagnosis
    kept = run_dir.with_name(run_dir.name.removesuffix(".partial") + ".failed")
    return DeliveryRejected(message, file=file,
                            hint=(hint + "; " if hint else "") +
                            f"full list in {kept / 'validation.json'}")


def _journal_order(frame: pl.DataFrame, ctx: RunContext) -> tuple[pl.DataFrame, pl.DataFrame,
                                                              list[str]]:
    """Numeric journal ranges, previous ranges, and complaints about numbering going backwards."""
    vs = ctx.settings.validation
    ids = journals.numeric_ids(frame)
    ranges = journals.number_ranges(ids, vs.journal_gap_max)
    previous = state.previous_ranges(ctx.data_dir, ctx.entity)
    complaints = []
    if vs.journal_order != "off":
        back = journals.backwards(ranges, previous, vs.journal_gap_max)
        for row in back.head(10).iter_rows(named=True):
            complaints.append(
                f"journal numbers {row['lo']}..{row['hi']} (fiscal year {row['fiscal_year']}) lie "
                f"below {row['prev_hi']}, the highest number already processed (run "
                f"{row['run_id']})")
    return ids, ranges, complaints


def validate(ingested: IngestResult, ctx: RunContext) -> ValidationResult:
    """Gate one delivery; write the run's clean bookings, quarantine, findings and docs."""
    settings, vs, run_dir = ctx.settings, ctx.settings.validation, Path(ctx.run_dir)
    clock = _Clock()
    shas, names = _delivery_hashes(ingested)
    if not (vs.reprocess or getattr(ctx, "rescore_history", False)):
        # the pipeline asks its store before ingesting; this keeps validate() safe on its own
        previous_run = state.already_processed(ctx.data_dir, ctx.entity, shas)
        if previous_run:
            raise AlreadyProcessed(
                f"this delivery was already processed as run {previous_run}; nothing to do",
                file=names[0] if names else None,
                hint="set [validation] reprocess = true to process it again")

    frame = _source(ingested)  # lazy: each step below collects only its small result
    rows_in = int(frame.select(pl.len()).collect().item())
    clock.lap("load")
    filecheck.check_not_empty(frame, ingested, rows_in)
    filecheck.check_required(frame, ingested, rows_in)
    filecheck.check_truncated(frame, ingested)
    payload: dict[str, Any] = {"run_id": ctx.run_id, "entity": ctx.entity, "rows_in": rows_in}

    # file level: journal numbering and control totals (on every delivered line)
    ids, ranges, backwards = _journal_order(frame, ctx)
    recon = reconcile.reconcile(frame, ingested.control_totals, vs.control_totals,
                                vs.control_total_tolerance)
    payload["control_totals"] = recon.reports
    stop = list(recon.stop)
    if backwards and vs.journal_order == "stop":
        stop = backwards + stop
    clock.lap("file_checks")
    if stop:
        hint = None
        if backwards and vs.journal_order == "stop":
            hint = ("if this is a deliberate re-delivery of older journals, set [validation] "
                    "journal_order = \"warn\"")
        elif recon.warnings == [] and vs.control_totals == "stop":
            hint = "[validation] control_totals = \"warn\" turns journal differences into findings"
        raise _reject(run_dir, stop, payload, hint=hint)
    warnings_: list[str] = list(recon.warnings)
    if backwards:
        warnings_ += backwards
    seen = state.files_processed(ctx.data_dir, ctx.entity, shas)
    for sha, run in seen.items():
        name = names[shas.index(sha)]
        warnings_.append(f"{name} was already processed in run {run}; its lines replace the "
                         "stored lines with the same key")

    # pseudonymise before anything is written (and before GX sees the values)
    key = load_key(ctx.data_dir)
    frame = _pseudonymise_bank_accounts(frame, key)
    _pseudonymise_master(ingested.master, key, run_dir)
    clock.lap("pseudonymise")

    # placeholders and derived columns
    reports = prepare.placeholder_reports(frame, settings, rows_in)
    unreliable = {r.column for r in reports if r.unreliable}
    for r in reports:
        if r.unreliable:
            warnings_.append(r.message(rows_in, ingested.format))
    warnings_ += prepare.currency_warnings(frame, settings)
    view = prepare.add_derived(frame, settings, unreliable)
    clock.lap("prepare")

    # row level: the booking suite (vectorised masks decide, GX cross-checks and documents)
    directory = suites_dir(settings)
    suite = load_suite("bookings", directory)
    accounts = ingested.master.get("accounts")
    has = {name for name, f in ingested.master.items() if f is not None and f.height}
    skipped = {c.key for c in suite.checks if c.requires and c.requires not in has}
    suite = suite.without(skipped)
    params: dict[str, Any] = {"min_document_date": date.fromisoformat(vs.min_document_date)}
    if accounts is not None and accounts.height:
        params["chart_of_accounts"] = (accounts.get_column("gl_account").drop_nulls()
                                       .unique().sort().to_list())
    flagged, flags, row_checks = rowchecks.row_masks(view, suite, params)
    clock.lap("row_checks")
    key = ["entity", "fiscal_year", "journal_id"]
    gx_part = gx_sample_lazy(flagged, rows_in, vs.gx_rows, key)
    label = ("all rows" if gx_part.height == rows_in else
             f"sample of {gx_part.height:,} of {rows_in:,} rows")
    runner: GxRunner | None = None
    gx_results: dict[str, Any] = {}
    master_checks: list[dict[str, Any]] = []
    try:
        runner = GxRunner(run_dir / "data_docs" if vs.data_docs else None, ctx.run_id)
        clock.lap("gx_setup")
        gx_results = {r.key: r for r in runner.validate(suite, gx_part, params, vs.batch_rows,
                                                        batch_key=key, label=label)}
        clock.lap("gx_bookings")
        master_checks, master_warnings = rowchecks.master_checks(
            runner, ingested.master, directory, vs.batch_rows)
        warnings_ += master_warnings
        clock.lap("gx_master")
    except Exception as exc:  # noqa: BLE001 - GX cross-checks and documents; the masks decide
        runner = None
        warnings_.append(f"Great Expectations could not validate this delivery "
                         f"({type(exc).__name__}: {exc}); the vectorised checks decided alone "
                         "and there are no Data Docs")
    checks, disagree = rowchecks.check_report(suite, flagged, gx_part, flags, row_checks,
                                              gx_results)
    warnings_ += disagree
    clock.lap("check_counts")

    # only the rows failing some check are collected (with the columns their reasons show)
    base = frame.collect_schema().names()
    bad = _failing(flagged, suite.checks, flags)
    clock.lap("failing_rows")
    fails = quarantine.failures(bad, suite.checks, flags)
    rows = quarantine.per_row(fails)
    reasons = quarantine.counts(rows)
    if rows_in and rows.height / rows_in >= QUARANTINE_SHARE_WARN:
        top, n = next(iter(reasons.items()))
        warnings_.append(
            f"{rows.height / rows_in:.0%} of the rows were quarantined, {n:,} of them for "
            f"'{top}': that many usually means a wrong mapping or setting (date format, fiscal "
            "year start, column), not bad bookings; check quarantine.parquet")
    for c in checks:
        if c["severity"] != "critical" and c["failing_rows"]:
            warnings_.append(f"{c['reason']}: {c['failing_rows']:,} rows (kept; check {c['key']})")
    q_rows = (bad.select(base).join(rows.select(ROW, "expectation", "reason"), on=ROW,
                                    how="inner").sort(ROW))
    # the clean file is written slice by slice from the scan, minus the quarantined row ids
    clean = frame.filter(~pl.col(ROW).is_in(rows.get_column(ROW).implode())) \
        if rows.height else frame
    q_out = q_rows.select(QUARANTINE_LEAD + [c for c in q_rows.columns
                                             if c not in QUARANTINE_LEAD and c != ROW])
    clean_path, q_path = run_dir / "bookings.parquet", run_dir / "quarantine.parquet"
    run_dir.mkdir(parents=True, exist_ok=True)
    output.write_clean(frame, rows.get_column(ROW), clean_path, rows_in)
    q_out.write_parquet(q_path)
    clock.lap("write")

    # journal-level findings
    findings = pl.concat([
        journals.unbalanced(clean, q_rows, vs.balance_tolerance),
        journals.gaps(ids, state.previous_ranges(ctx.data_dir, ctx.entity), vs.journal_gap_max),
        recon.findings,
    ])
    findings.write_parquet(run_dir / "validation_findings.parquet")
    clock.lap("journal_findings")

    docs_index = None
    if runner is not None:
        try:
            docs_index = runner.build_docs()
        except Exception as exc:  # noqa: BLE001 - the run's data are complete without the HTML
            warnings_.append(f"Data Docs could not be built ({type(exc).__name__}: {exc})")
    clock.lap("data_docs")

    result = ValidationResult(
        clean_path=clean_path, quarantine_path=q_path, rows_in=rows_in,
        rows_clean=rows_in - q_out.height, rows_quarantined=q_out.height,
        quarantine_reasons=reasons, warnings=warnings_, journal_findings=findings,
        control_totals=recon.reports, docs_index=docs_index,
        unreliable_columns=sorted(unreliable),
        checks=checks + master_checks,
        timings=clock.times)
    result.headline = _headline(result, recon.headline, skipped)
    for text in warnings_:
        ctx.log.warn(text)
    _write_json(run_dir, {**payload, "outcome": "passed", **result.summary(),
                          "skipped_checks": sorted(skipped),
                          "placeholders": [vars(r) for r in reports],
                          "checks": result.checks, "control_totals": recon.reports,
                          "journal_ranges": ranges.to_dicts()})
    state.remember_delivery(ctx.data_dir, ctx.entity, shas, ctx.run_id, names)
    state.remember_ranges(ctx.data_dir, ctx.entity, ctx.run_id, ranges)
    clock.lap("state")
    result.timings = clock.times
    return result


def _headline(result: ValidationResult, control: list[str], skipped: set[str]) -> list[str]:
    lines = []
    if result.rows_quarantined:
        why = ", ".join(f"{k}: {v:,}" for k, v in result.quarantine_reasons.items())
        lines.append(f"quarantined {result.rows_quarantined:,} of {result.rows_in:,} rows "
                     f"({why}) -> quarantine.parquet")
    else:
        lines.append(f"validated {result.rows_in:,} rows, none quarantined")
    if result.journal_findings.height:
        names = {"VAL-UNBAL": "unbalanced journals", "VAL-GAP": "gaps in journal numbering",
                 "VAL-CTRL": "journals not matching control totals"}
        counts = result.summary()["journal_findings"]
        lines.append("journal findings: " + ", ".join(
            f"{n:,} {names.get(rule, rule)}" for rule, n in counts.items()))
    lines += control
    if skipped:
        lines.append(f"skipped checks (no master data): {', '.join(sorted(skipped))}")
    for text in result.warnings:
        if not text.startswith("control totals"):  # already summarised above
            lines.append("warning: " + text.split("; ")[0].split(". ")[0])
    if result.docs_index:
        lines.append("data docs: data_docs/index.html")
    return lines
