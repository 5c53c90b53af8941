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
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from detect import history
from detect.errors import AlreadyProcessed, DeliveryRejected
from detect.ingest import IngestResult, JournalRuns
from detect.privacy import load_key, pseudonymise_iban, pseudonymise_master
from detect.schema import BOOKING_KEY
from detect.validation import (
    filecheck, gxrun, journals, output, prepare, quarantine, reconcile, rowchecks, state,
)
from detect.validation.gxrun import ROW, CheckResult, GxJob
from detect.validation.suites import Check, Suite
from detect.validation.suites import load_suite, master_suite_names, suites_dir

if TYPE_CHECKING:
    from detect.pipeline import RunContext

# re-exported so the pipeline can ask before ingesting
already_processed = state.already_processed
remember_delivery = state.remember_delivery

QUARANTINE_LEAD = ["source_file", "source_line", "expectation", "reason"]
JOURNAL = ["entity", "fiscal_year", "journal_id"]
QUARANTINE_SHARE_WARN = 0.2
"""Quarantining this share of a delivery or more earns a warning to check the mapping."""
REVIEW_RULES = {"VAL-CTRL"}
"""Validation findings handed to scoring (the others duplicate rules of the catalog)."""


@dataclass
class ValidationResult:
    """What the gate decided. ``checks``, ``warnings``, ``docs_index``, ``headline`` and
    ``summary()`` include Great Expectations' part, which runs in the background after
    ``validate`` returned (``wait_for_gx``): reading them waits for it, once."""

    clean_path: Path
    quarantine_path: Path
    rows_in: int
    rows_clean: int
    rows_quarantined: int
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    _warnings: list[str] = field(default_factory=list)
    journal_findings: pl.DataFrame = field(default_factory=journals.empty_hits)
    control_totals: list[dict[str, Any]] = field(default_factory=list)
    _docs_index: Path | None = None
    unreliable_columns: list[str] = field(default_factory=list)
    """Columns flagged as mostly placeholders: kept, but date-based rules should not trust them."""
    _checks: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    _headline: list[str] = field(default_factory=list)
    _pending: _GxPending | None = field(default=None, repr=False)

    @property
    def warnings(self) -> list[str]:
        self.wait_for_gx()
        return self._warnings

    @property
    def checks(self) -> list[dict[str, Any]]:
        self.wait_for_gx()
        return self._checks

    @property
    def docs_index(self) -> Path | None:
        self.wait_for_gx()
        return self._docs_index

    @property
    def headline(self) -> list[str]:
        self.wait_for_gx()
        return self._headline

    def wait_for_gx(self) -> None:
        """Merge Great Expectations' results (cross-check, master-data checks, Data Docs) into
        this result and ``validation.json``; waits for the background job if it still runs."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.finish(self)

    def review_hits(self) -> pl.DataFrame:
        """Findings the rule catalog does not produce itself (control-total differences), in
        rule-hit shape, for scoring to turn into review items. Unbalanced journals and gaps are
        left to the catalog's JRN001/JRN002, which see the whole history."""
        return self.journal_findings.filter(pl.col("rule_id").is_in(list(REVIEW_RULES)))

    def summary(self) -> dict[str, Any]:
        """JSON-able digest for the run manifest."""
        self.wait_for_gx()
        return self._summary()

    def _summary(self) -> dict[str, Any]:
        by_rule = (self.journal_findings.group_by("rule_id").len().sort("rule_id").rows()
                   if self.journal_findings.height else [])
        return {
            "rows_in": self.rows_in, "rows_clean": self.rows_clean,
            "rows_quarantined": self.rows_quarantined,
            "quarantine_reasons": self.quarantine_reasons,
            "warnings": self._warnings,
            "journal_findings": {rule: int(n) for rule, n in by_rule},
            "control_totals": [{k: v for k, v in r.items() if k != "journals"}
                               for r in self.control_totals],
            "unreliable_columns": self.unreliable_columns,
            "data_docs": "data_docs/index.html" if self._docs_index else None,
            "timings": self.timings,
            "headline": self._headline,
        }


@dataclass
class _GxOutcome:
    """What the background job found: GX's results on the booking sample, the master-data
    checks, the Data Docs site (built in a temporary folder) and what went wrong."""

    results: dict[str, CheckResult] = field(default_factory=dict)
    master_checks: list[dict[str, Any]] = field(default_factory=list)
    master_warnings: list[str] = field(default_factory=list)
    docs_index: Path | None = None
    error: str | None = None
    docs_error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_worker(cls, payload: dict[str, Any]) -> _GxOutcome:
        """The worker's ``result.json`` (see ``validation/gxworker.py``)."""
        index = payload.get("docs_index")
        return cls(results={r["key"]: CheckResult(**r) for r in payload.get("results", [])},
                   master_checks=payload.get("master_checks", []),
                   master_warnings=payload.get("master_warnings", []),
                   docs_index=Path(index) if index else None, error=payload.get("error"),
                   docs_error=payload.get("docs_error"), timings=payload.get("timings", {}))


def _hand_over(job: GxJob, suite: Suite, sample: pl.DataFrame, params: dict[str, Any],
               ctx: RunContext, master: dict[str, pl.DataFrame], directory: Path,
               label: str) -> None:
    """Hand Great Expectations' part of the gate to the worker process (``gxrun.GxJob``,
    started when ``validate`` began, so GX's import overlapped the gate's work): the booking
    suite on its sample, the master-data suites, Data Docs. The frames go as Parquet, the rest
    as ``job.json``, into the job's private temporary folder."""
    vs = ctx.settings.validation
    job_dir = job.job_dir
    sample.write_parquet(job_dir / "sample.parquet", statistics=False)
    names = []
    for name in master_suite_names(directory):
        frame = master.get(name)
        if frame is not None and frame.height:
            (job_dir / "master").mkdir(exist_ok=True)
            frame.write_parquet(job_dir / "master" / f"{name}.parquet", statistics=False)
            names.append(name)
    spec = {"run_name": ctx.run_id, "label": label, "batch_rows": vs.batch_rows,
            "batch_key": JOURNAL, "suite": {"raw": suite.raw, "path": str(suite.path)},
            "params": {k: {"$date": v.isoformat()} if isinstance(v, date) else v
                       for k, v in params.items()},
            "suites_dir": str(directory), "master": names, "docs": bool(vs.data_docs)}
    (job_dir / gxrun.JOB).write_text(json.dumps(spec, ensure_ascii=False), "utf-8")
    job.submit()


@dataclass
class _GxPending:
    """Everything needed to finish a result once GX is done (see ``wait_for_gx``)."""

    job: GxJob
    suite: Suite
    totals: dict[str, int]
    on_gx: dict[str, int]
    gx_rows: int
    row_checks: set[str]
    warnings_before: list[str]
    warnings_after: list[str]
    control_headline: list[str]
    skipped: set[str]
    json_head: dict[str, Any]
    json_tail: dict[str, Any]
    ctx: RunContext

    def finish(self, result: ValidationResult) -> None:
        started = time.perf_counter()
        try:
            gx = _GxOutcome.from_worker(self.job.result())
        except Exception as exc:  # noqa: BLE001 - GX decides nothing
            gx = _GxOutcome(error=f"Great Expectations could not validate this delivery "
                                  f"({type(exc).__name__}: {exc}); the vectorised checks "
                                  "decided alone and there are no Data Docs")
        waited = time.perf_counter() - started
        checks, disagree = rowchecks.check_report(self.suite, self.totals, self.on_gx,
                                                  self.gx_rows, self.row_checks, gx.results)
        gx_warnings = gx.master_warnings + disagree + ([gx.error] if gx.error else [])
        late = [gx.docs_error] if gx.docs_error else []
        result._checks = checks + gx.master_checks
        run_dir = Path(self.ctx.run_dir)
        target = run_dir / "data_docs"
        if gx.docs_index is not None and run_dir.is_dir() and not target.exists():
            try:
                shutil.move(str(gx.docs_index.parent), str(target))
                result._docs_index = target / "index.html"
            except OSError as exc:  # the run's data are complete without the HTML
                late.append(f"Data Docs could not be moved into the run folder "
                            f"({type(exc).__name__}: {exc})")
        self.job.close()  # the job folder (inputs, result, anything not moved)
        result._warnings = self.warnings_before + gx_warnings + self.warnings_after + late
        result.timings.update({k: v for k, v in gx.timings.items() if k != "gx_cpu_worker"})
        # the worker's whole CPU (interpreter start, imports, GX): not in the steps' figures
        cpu = self.job.cpu_seconds
        if cpu is None:
            cpu = gx.timings.get("gx_cpu_worker")
        if cpu is not None:
            result.timings["gx_cpu"] = cpu
        if self.job.max_rss_mb is not None:
            result.timings["gx_max_rss_mb"] = self.job.max_rss_mb
        result.timings["gx_wait"] = round(waited, 3)
        result._headline = _headline(result, self.control_headline, self.skipped)
        for text in gx_warnings + late:
            self.ctx.log.warn(text)
        if run_dir.is_dir():
            _write_json(run_dir, _passed_json(result, self.json_head, self.json_tail,
                                              "failed" if gx.error else "done"))


def _passed_json(result: ValidationResult, head: dict[str, Any], tail: dict[str, Any],
                 gx_status: str) -> dict[str, Any]:
    """``validation.json`` of a delivery that passed. ``great_expectations`` says whether GX's
    results are in it yet ("running": written when ``validate`` returns, rewritten with them
    before the run is published)."""
    return {**head, "outcome": "passed", **result._summary(), "skipped_checks": tail["skipped"],
            "placeholders": tail["placeholders"], "checks": result._checks,
            "control_totals": tail["control_totals"], "journal_ranges": tail["journal_ranges"],
            "great_expectations": gx_status}


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


def _source(ingested: IngestResult) -> tuple[pl.LazyFrame, bool]:
    """The delivery as a lazy scan with a row id, in delivered order, and whether that is the
    ingested order. Nothing is materialised: every later step is a query over the ingested
    Parquet that returns a small result, so validation's memory does not grow with the delivery
    (issue #10)."""
    lazy = ingested.bookings.lazy()
    facts = ingested.facts_of(ingested.bookings)
    in_order = facts.in_order if facts is not None else _in_delivered_order(lazy)
    if not in_order:  # rare (files out of order): sorted per query
        lazy = lazy.sort("source_file", "source_line", nulls_last=True, maintain_order=True)
    return lazy.with_row_index(ROW).with_columns(pl.col(ROW).cast(pl.Int64)), in_order


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


def _sample_pick(height: int, gx_rows: int, runs: pl.DataFrame | None) -> pl.Expr | None:
    """GX's sample of whole journals (``gxrun.sample_pick``). With the delivery's journals
    (``runs``, one row per journal) the pick is computed per journal, and rows are picked by
    journal id when each picked id names only one journal (the same rows, a cheaper test)."""
    pick = gxrun.sample_pick(height, gx_rows, JOURNAL)
    if pick is None or runs is None:
        return pick
    chosen = runs.filter(pick).get_column("journal_id")
    if chosen.null_count() or runs.filter(pl.col("journal_id").is_in(chosen.implode())) \
            .height != chosen.len():
        return pick
    return pl.col("journal_id").is_in(chosen.implode())


DERIVED_FROM = ["fiscal_year", "period", "posting_date", "document_date"]
"""The delivered columns ``prepare.add_derived`` computes its ``v_`` columns from."""


def _bound_is_superset(suite: Suite) -> bool:
    """True when every check reading ``prepare.LATEST`` fails only where the document date lies
    after it (a pair check with it as ``column_A``), so a lower bound of it fails a superset
    of the rows."""
    for check in suite.checks:
        if prepare.LATEST in check.columns and not (
                check.type == "expect_column_pair_values_a_to_be_greater_than_b"
                and check.kwargs.get("column_A") == prepare.LATEST
                and not check.kwargs.get("row_condition")):
            return False
    return True


def _collect_rows(frame: pl.LazyFrame, derive: Callable[[Any, bool], Any], suite: Suite,
                  exprs: dict[str, pl.Expr], flags: dict[str, str], height: int, gx_rows: int,
                  runs: pl.DataFrame | None = None, nulls: dict[str, int] | None = None,
                  values: dict[str, pl.Series] | None = None
                  ) -> tuple[dict[str, int], pl.DataFrame, pl.DataFrame]:
    """Every check's failing-row count, the rows failing a quarantining check (whole, in row
    order) and GX's sample of whole journals or all rows (row id, flags and the suite's columns).

    One narrow query over the delivery (``frame``) keeps the rows that may fail some check or
    are picked for GX, with the delivered columns the masks read; the ``v_`` columns
    (``derive``: ``prepare.add_derived``) and the masks (``exprs``) are then computed on those
    few rows only, and the rows failing none (and not picked) dropped again. The query's filter
    leaves out masks known to be false everywhere (``rowchecks.can_fail``: the ingest's null
    counts ``nulls``, keys known unique, every distinct value of a column in ``values``) and compares the document date with a lower bound of
    its latest allowed date (``derive(.., True)``), a superset of the failing rows. The counts
    are the flags' column sums (a row failing a check is always kept). Only if some row is to
    be quarantined, a second query fetches the full rows of just those ids. (Computing every
    mask as a column over every row before filtering cost 0.2 CPU s at 1M lines, this 0.1.)"""
    quarantining = [flags[c.key] for c in suite.checks if c.key in flags and c.quarantines]
    is_bad = pl.any_horizontal(quarantining) if quarantining else pl.lit(False)
    pick = _sample_pick(height, gx_rows, runs)
    if pick is None:  # GX validates every row (small delivery, or gx_rows = 0), but it too
        pick = pl.lit(True)  # needs only the suite's columns, not the whole delivery's
    by_key = {c.key: c for c in suite.checks}
    maybe = [e for k, e in exprs.items()
             if rowchecks.can_fail(by_key[k], e, nulls, height, values)]
    bound = _bound_is_superset(suite)
    base = frame.collect_schema().names()
    wanted = set(suite.columns()) | set(JOURNAL) | set(DERIVED_FROM) | set(pick.meta.root_names())
    for e in exprs.values():
        wanted |= set(e.meta.root_names())
    read = [c for c in base if c in wanted and c != ROW]
    rows = (derive(frame, bound).filter(pl.any_horizontal([*maybe, pick]))
            .select(ROW, *read).collect().sort(ROW))
    view = derive(rows, False)
    names = view.collect_schema().names()
    columns = [c for c in dict.fromkeys([*suite.columns(), *JOURNAL]) if c in names]
    narrow = (view.with_columns(exprs.values())
              .select(ROW, *flags.values(), *columns, pick.alias("_gx"))
              .filter(pl.any_horizontal([*flags.values(), "_gx"])))
    totals = rowchecks.flag_counts(narrow, flags)
    sample = narrow.filter(pl.col("_gx")).drop("_gx")
    ids = narrow.filter(is_bad).get_column(ROW)
    flagged = derive(frame, False).with_columns(exprs.values())
    if ids.is_empty():
        return totals, flagged.head(0).collect(), sample
    bad = flagged.filter(pl.col(ROW).is_in(ids.implode())).sort(ROW).collect()
    return totals, bad, sample


def _lines_source(ingested: IngestResult, clean: pl.LazyFrame, quarantined: int
                  ) -> pl.LazyFrame:
    """Where ``journals.unbalanced`` reads the lines of the unbalanced journals: with nothing
    quarantined, the ingest's main Parquet file itself (it holds every delivered line and the
    columns needed; the sums do not depend on row order). Polars pushes the journal filter into
    that file's reader and decodes the other columns only for matching rows, which the row
    index and the side file of ``clean`` prevent (1M lines: 0.050 -> 0.027 CPU s)."""
    path = ingested.bookings_file
    if quarantined or path is None or ingested.facts_of(ingested.bookings) is None:
        return clean
    main = pl.scan_parquet(path)
    needed = {"entity", "fiscal_year", "journal_id", "amount", "currency"}
    return main if needed <= set(main.collect_schema().names()) else clean


def _pseudonymise_master(master: dict[str, pl.DataFrame], key: bytes, run_dir: Path) -> None:
    """IBANs in master data are pseudonymised like the bookings' (so rules can compare them),
    in memory and in ``master/*.parquet`` already written by the pipeline."""
    for name in pseudonymise_master(master, key):
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


def _journal_order(frame: pl.DataFrame, ctx: RunContext, runs: JournalRuns | None = None
                   ) -> tuple[pl.DataFrame, pl.DataFrame, list[str]]:
    """Numeric journal ranges, previous ranges, and complaints about numbering going backwards."""
    vs = ctx.settings.validation
    ids = journals.numeric_ids(runs.table, distinct=True) \
        if runs is not None and runs.distinct_ids and runs.table is not None \
        else journals.numeric_ids(frame)
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


def _unique_booking_keys(unique_cols: list[list[str]], nulls: dict[str, int]) -> bool:
    """True when a uniqueness check found no duplicate over some of the booking key's columns
    (then the whole key, a superset, repeats nowhere either), none of them null in any row
    (so the check skipped no row): the clean rows, a subset, have distinct booking keys."""
    return any(set(cols) <= set(BOOKING_KEY) and all(nulls.get(c, 1) == 0 for c in cols)
               for cols in unique_cols)


def validate(ingested: IngestResult, ctx: RunContext) -> ValidationResult:
    """Gate one delivery; write the run's clean bookings, quarantine, findings and docs."""
    vs = ctx.settings.validation
    shas, names = _delivery_hashes(ingested)
    if not (vs.reprocess or getattr(ctx, "rescore_history", False)):
        # the pipeline asks its store before ingesting; this keeps validate() safe on its own
        previous_run = state.already_processed(ctx.data_dir, ctx.entity, shas)
        if previous_run:
            raise AlreadyProcessed(
                f"this delivery was already processed as run {previous_run}; nothing to do",
                file=names[0] if names else None,
                hint="set [validation] reprocess = true to process it again")
    # Great Expectations' worker process starts now and imports GX (niced) while the gate
    # works; a rejected or failing gate ends it (closing the job kills it)
    with GxJob(GxJob.new_dir(ctx.run_id)) as job:
        return _gate(ingested, ctx, job, shas, names)


def _gate(ingested: IngestResult, ctx: RunContext, job: GxJob, shas: list[str],
          names: list[str]) -> ValidationResult:
    settings, vs, run_dir = ctx.settings, ctx.settings.validation, Path(ctx.run_dir)
    clock = _Clock()
    # lazy: each step below collects only its small result
    frame, in_order = _source(ingested)
    # counted by the ingest on its way through the delivery, if it says so; else one query each
    facts = ingested.facts_of(ingested.bookings)
    rows_in = facts.rows if facts is not None else int(frame.select(pl.len()).collect().item())
    clock.lap("load")
    filecheck.check_not_empty(frame, ingested, rows_in)
    nulls = filecheck.check_required(frame, ingested, rows_in,
                                     facts.nulls if facts is not None else None)
    filecheck.check_truncated(frame, ingested, nulls, rows_in)
    payload: dict[str, Any] = {"run_id": ctx.run_id, "entity": ctx.entity, "rows_in": rows_in}

    # file level: journal numbering and control totals (on every delivered line)
    # the journals as the ingest found them, when each is one run of lines with its own key
    runs = facts.journals if facts is not None and facts.journals is not None \
        and facts.journals.distinct else None
    if facts is not None:   # used up below (held, the runs would stay for the whole job:
        facts.journals = None  # ~0.2 GB at 10M lines)
    ids, ranges, backwards = _journal_order(frame, ctx, runs)
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
    pseudonymised = ingested.pseudonym_key == key  # by ingest, with this data dir's key
    if not pseudonymised:  # one query for the distinct values, then one lookup per row
        frame = pseudonymise_iban(frame, "bank_account", key)
    if ingested.master_key != key:  # else the ingest did, with this key, before writing
        _pseudonymise_master(ingested.master, key, run_dir)
    clock.lap("pseudonymise")

    # placeholders and derived columns
    reports = prepare.placeholder_reports(frame, settings, rows_in)
    unreliable = {r.column for r in reports if r.unreliable}
    for r in reports:
        if r.unreliable:
            warnings_.append(r.message(rows_in, ingested.format))
    currencies = prepare.currency_counts(frame)
    warnings_ += prepare.currency_warnings(frame, settings, currencies)
    def derive(rows: Any, bound: bool) -> Any:
        return prepare.add_derived(rows, settings, unreliable, bound=bound)
    view = derive(frame, False)
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
    unique_cols: list[list[str]] = []
    keys_unique = runs is not None and runs.lines_increase  # runs distinct, lines increasing
    exprs, flags = rowchecks.mask_exprs(
        view, suite, params, unique_cols, list(BOOKING_KEY) if keys_unique else None)
    row_checks = set(flags)
    clock.lap("row_checks")

    # only the rows failing some check are collected (with the columns their reasons show),
    # together with GX's sample
    base = frame.collect_schema().names()
    # null counts of the delivered columns the masks read as the ingest wrote them
    known = None if facts is None else \
        {c: n for c, n in facts.nulls.items() if pseudonymised or c != "bank_account"}
    totals, bad, gx_part = _collect_rows(frame, derive, suite, exprs, flags, rows_in,
                                         vs.gx_rows, runs.table if runs is not None else None,
                                         known, {"currency": currencies.get_column("currency")})
    on_gx = rowchecks.flag_counts(gx_part, flags)
    label = ("all rows" if gx_part.height == rows_in else
             f"sample of {gx_part.height:,} of {rows_in:,} rows")
    clock.lap("failing_rows")
    fails = quarantine.failures(bad, suite.checks, flags)
    rows = quarantine.per_row(fails)
    reasons = quarantine.counts(rows)
    later: list[str] = []  # warnings after GX's in the list (the order they always had)
    if rows_in and rows.height / rows_in >= QUARANTINE_SHARE_WARN:
        top, n = next(iter(reasons.items()))
        later.append(
            f"{rows.height / rows_in:.0%} of the rows were quarantined, {n:,} of them for "
            f"'{top}': that many usually means a wrong mapping or setting (date format, fiscal "
            "year start, column), not bad bookings; check quarantine.parquet")
    checks, _ = rowchecks.check_report(suite, totals, on_gx, gx_part.height, row_checks, {})
    for c in checks:
        if c["severity"] != "critical" and c["failing_rows"]:
            later.append(f"{c['reason']}: {c['failing_rows']:,} rows (kept; check {c['key']})")
    q_rows = (bad.select(base).join(rows.select(ROW, "expectation", "reason"), on=ROW,
                                    how="inner").sort(ROW))
    # the clean file is written slice by slice from the scan, minus the quarantined row ids
    clean = frame.filter(~pl.col(ROW).is_in(rows.get_column(ROW).implode())) \
        if rows.height else frame
    q_out = q_rows.select(QUARANTINE_LEAD + [c for c in q_rows.columns
                                             if c not in QUARANTINE_LEAD and c != ROW])
    clean_path, q_path = run_dir / "bookings.parquet", run_dir / "quarantine.parquet"
    run_dir.mkdir(parents=True, exist_ok=True)
    q_out.write_parquet(q_path)
    # ingest's canonical file is the clean file when no row goes and nothing changes: kept
    # (a link), not encoded again; otherwise the writer encodes on one core while the
    # journal-level findings use the other (timings: "journal_findings" while it writes,
    # "write" the wait for it after them)
    keep = (ingested.bookings_file is not None and pseudonymised and in_order
            and rows.height == 0)
    with ThreadPoolExecutor(1, thread_name_prefix="clean-write") as pool:
        writing = pool.submit(output.keep, ingested.bookings_file, clean_path) if keep else \
            pool.submit(output.write_clean, frame, rows.get_column(ROW), clean_path, rows_in)
        findings = pl.concat([
            journals.unbalanced(_lines_source(ingested, clean, rows.height), q_rows,
                                vs.balance_tolerance,
                                runs.table if runs is not None else None),
            journals.gaps(ids, state.previous_ranges(ctx.data_dir, ctx.entity),
                          vs.journal_gap_max, frame),
            recon.findings,
        ])
        findings.write_parquet(run_dir / "validation_findings.parquet")
        clock.lap("journal_findings")
        writing.result()
    if keys_unique or _unique_booking_keys(unique_cols, nulls):
        history.note_unique_keys(clean_path)  # the merge need not count the keys again
    clock.lap("write")

    # Great Expectations: cross-checks the masks on its sample, checks the master data, writes
    # the Data Docs. It decides nothing, so a niced worker process does it while the next
    # stages work; the result waits for it when read (the pipeline: when it publishes the run).
    # Data Docs are built outside the run folder (a failed run may be renamed while GX still
    # writes) and moved in when collected
    _hand_over(job, suite, gx_part, params, ctx, ingested.master, directory, label)
    result = ValidationResult(
        clean_path=clean_path, quarantine_path=q_path, rows_in=rows_in,
        rows_clean=rows_in - q_out.height, rows_quarantined=q_out.height,
        quarantine_reasons=reasons, _warnings=warnings_ + later, journal_findings=findings,
        control_totals=recon.reports, unreliable_columns=sorted(unreliable),
        _checks=checks, timings=clock.times)
    result._headline = _headline(result, recon.headline, skipped)
    for text in warnings_ + later:
        ctx.log.warn(text)
    tail = {"skipped": sorted(skipped), "placeholders": [vars(r) for r in reports],
            "control_totals": recon.reports, "journal_ranges": ranges.to_dicts()}
    _write_json(run_dir, _passed_json(result, payload, tail, "running"))
    result._pending = _GxPending(
        job=job, suite=suite, totals=totals, on_gx=on_gx, gx_rows=gx_part.height,
        row_checks=row_checks, warnings_before=warnings_, warnings_after=later,
        control_headline=recon.headline, skipped=skipped, json_head=payload, json_tail=tail,
        ctx=ctx)
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
        counts = result._summary()["journal_findings"]
        lines.append("journal findings: " + ", ".join(
            f"{n:,} {names.get(rule, rule)}" for rule, n in counts.items()))
    lines += control
    if skipped:
        lines.append(f"skipped checks (no master data): {', '.join(sorted(skipped))}")
    for text in result._warnings:
        if not text.startswith("control totals"):  # already summarised above
            lines.append("warning: " + text.split("; ")[0].split(". ")[0])
    if result._docs_index:
        lines.append("data docs: data_docs/index.html")
    return lines
