"""One nightly run end to end: ingest -> validate -> history -> rules -> models -> scoring -> publish.

A run is a function of (entity, settings, delivery, data dir) with no hidden global state, so a
scheduler can fan entities out to workers. It writes into ``runs/<run_id>.partial/`` and only
renames it to ``runs/<run_id>/`` and switches ``CURRENT`` once everything is complete.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import platform
import shutil
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from detect.background import in_background
from detect.config import Settings
from detect.fsutil import fsync_path
from detect.errors import AlreadyProcessed, UserError
from detect.ingest import IngestResult, ingest
from detect.runlog import StepLog

RUNS = "runs"
CURRENT = "CURRENT"


@dataclass
class RunContext:
    run_id: str
    run_dir: Path
    data_dir: Path
    entity: str
    settings: Settings
    log: StepLog
    rescore_history: bool = False


@dataclass
class RunSummary:
    run_id: str
    run_dir: Path
    manifest: dict[str, Any] = field(default_factory=dict)


class Workers:
    """The run's worker process, started once the run holds its lock and knows the delivery
    is new, so its imports overlap ingest (``detect.jobworker``; on a first load it then
    computes the features of the ingest's file, ``_guess_history``): Great Expectations' part
    (``gxrun.prestart``; ``validate`` adopts it) and, for deliveries of at least ``[models]
    worker_min_mb``, the outlier models' part (``detect.modelworker``) in the same process,
    which then imports NumPy, SciPy, pandas and Polars once. ``close()`` kills whatever was not
    collected: a run that fails leaves no worker behind."""

    def __init__(self, run_id: str, settings: Settings, files: list[Path]) -> None:
        from detect.validation import gxrun

        self.models: Any = None
        self.gx: Any = None
        self.worker: Any = None
        self.notes: list[str] = []  # for the run log, once it has its file
        self.delivery_mb = _size_mb(files)
        threshold = float(settings.models.worker_min_mb)
        try:
            if threshold >= 0 and self.delivery_mb >= threshold:
                from detect.jobworker import GX, MODELS, JobWorker
                from detect.modelworker import ModelWorker

                worker = JobWorker.start(run_id, (GX, MODELS))
                if worker.started:
                    self.worker = worker
                    self.models = ModelWorker(run_id, worker)
                else:  # no process (no interpreter, process limits): models in-process
                    worker.close()
                    self.notes.append(f"the model worker could not be started "
                                      f"({worker.bound.start_error}); the outlier models run "
                                      "in this process after the rules")
            # GX's part of the shared worker, or a worker of its own (which reports its own
            # start failure when the gate collects it)
            self.gx = gxrun.prestart(run_id, self.worker)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def drop_models(self) -> None:
        """Run the model stage in this process after all (the worker's models part ends; GX's
        part goes on)."""
        if self.models is not None:
            self.models.close()
            self.models = None

    def gate_done(self) -> None:
        """``validate`` returned: a pre-started GX worker it did not adopt is not needed."""
        if self.gx is not None:
            self.gx.close()

    def close(self) -> None:
        """The run ends (published or failed): end the workers, the GX worker also when
        ``validate`` adopted it (it is collected before publishing; a failed run never will)."""
        if self.models is not None:
            self.models.close()
        if self.gx is not None:
            self.gx.close(adopted_too=True)
        if self.worker is not None:
            self.worker.close()


def _size_mb(files: list[Path]) -> float:
    """The delivery's size in MB (0 when a source is missing: the run reports that)."""
    from detect.ingest import expand_sources

    try:
        return sum(f.stat().st_size for f in expand_sources(files)) / 2**20
    except (UserError, OSError):
        return 0.0


def new_run_id(entity: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in entity)
    return f"{stamp}_{safe}"


def current_run_dir(data_dir: Path) -> Path | None:
    """The published run ``CURRENT`` names, or None before the first run."""
    pointer = data_dir / CURRENT
    if not pointer.exists():
        return None
    run_dir = data_dir / RUNS / pointer.read_text(encoding="utf-8").strip()
    return run_dir if run_dir.is_dir() else None


def switch_current(data_dir: Path, run_id: str) -> None:
    """Atomically point ``CURRENT`` at ``run_id`` (write temp, fsync, rename)."""
    tmp = data_dir / f".{CURRENT}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(run_id + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, data_dir / CURRENT)
    fsync_path(data_dir)


def _versions() -> dict[str, str]:
    names = ["belegwacht", "polars", "duckdb", "pyod", "scikit-learn", "great-expectations"]
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = version(name)
        except Exception:  # noqa: BLE001 - a missing optional package is not an error here
            out[name] = "?"
    return out


def _rule_versions() -> dict[str, str]:
    """sha256 (12 hex) of every rule file: which version of each rule produced the hits."""
    from detect.rules.loader import default_rules_dir

    root = default_rules_dir()
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()[:12]
            for p in sorted(root.rglob("*.yaml"))} if root.is_dir() else {}


def _model_meta(run_dir: Path) -> dict[str, Any]:
    """The fitted ensemble's parameters, versions and file hash (``models/ensemble.json``)."""
    path = run_dir / "models" / "ensemble.json"
    try:
        meta = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    keep = ("sha256", "params", "features", "dropped_features", "fit_lines", "history_lines",
            "seed", "skipped", "scored_lines")
    return {k: meta[k] for k in keep if k in meta}


def input_stats(bookings_path: Path) -> list[dict[str, Any]]:
    """Lines, journals, debits and credits per source file, for the manifest."""
    con = duckdb.connect()
    rows = con.execute(
        """
        SELECT source_file, count(*) AS lines,
               count(DISTINCT (fiscal_year, journal_id)) AS journals,
               coalesce(sum(amount) FILTER (WHERE amount > 0), 0) AS debit,
               coalesce(-sum(amount) FILTER (WHERE amount < 0), 0) AS credit
        FROM read_parquet(?) GROUP BY ALL ORDER BY source_file
        """,
        [str(bookings_path)],
    ).fetchall()
    return [dict(source_file=r[0], lines=r[1], journals=r[2], debit=str(r[3]), credit=str(r[4]))
            for r in rows]


def write_master(ingested: IngestResult, run_dir: Path) -> dict[str, int]:
    """Master data of the delivery as ``master/<name>.parquet``; returns row counts."""
    counts = {}
    if ingested.master:
        (run_dir / "master").mkdir(exist_ok=True)
    for name, frame in ingested.master.items():
        frame.write_parquet(run_dir / "master" / f"{name}.parquet")
        counts[name] = frame.height
    return counts


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    tmp = run_dir / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, default=str, ensure_ascii=False), "utf-8")
    os.replace(tmp, run_dir / "manifest.json")


_FROZEN: list[bool] = []


def freeze_imported_objects() -> None:
    """Move the objects that exist now (the modules and what importing them made) out of the
    cyclic garbage collector's generations, once per process: they live as long as the process,
    and each full collection of a 1M run traversed all of them again (2 x ~27 ms at 1M lines;
    ~13 ms with them frozen, ``gc.freeze``). Once only: in a long-lived process (an inbox loop,
    the tests) a later freeze would also pin the previous run's objects."""
    if not _FROZEN:
        _FROZEN.append(True)
        gc.freeze()


def run_delivery(sources: list[Path], *, fmt: str, settings: Settings, data_dir: Path,
                 control_totals: Path | None = None, log: StepLog | None = None,
                 rescore_history: bool = False, wait_seconds: float | None = None) -> RunSummary:
    """Ingest, validate, score and publish one delivery; return what was done.

    Under the entity's lock: recover after killed runs, skip a delivery already processed (same
    content), then run the stages into ``runs/<id>.partial/``. The review store's publish
    transaction is the commit point; after it the folder is renamed and ``CURRENT`` switched
    (``lifecycle.finish_publish``, which recovery repeats if the process dies in between). A
    failing run records its error in the store's runs table and keeps its folder as
    ``runs/<id>.failed``; the previous run stays current.
    """
    from concurrent.futures import ThreadPoolExecutor

    from detect import lifecycle

    data_dir = data_dir.resolve()   # GX data docs need an absolute path (--data-dir var)
    data_dir.mkdir(parents=True, exist_ok=True)
    log = log or StepLog()
    files = list(sources) + ([control_totals] if control_totals else [])
    run_id = new_run_id(settings.entity)
    # the delivery's sha256 (0.35 s per 170 MB; hashlib releases the GIL) is computed while
    # this thread imports the store and the stages (~0.6 s): start-up pays the longer, not both
    with ThreadPoolExecutor(max_workers=1) as pool:
        hashing = pool.submit(lifecycle.fingerprint, files)
        from detect import history, rules, scoring, validate  # noqa: F401 - see above
        from detect.store import ReviewStore
        freeze_imported_objects()
        delivery = hashing.result()
    if wait_seconds is None:
        wait_seconds = float(os.environ.get("BELEGWACHT_LOCK_WAIT", "0") or 0)
    log.json_path = None  # an inbox's log still names the previous run's file: not this run's
    with lifecycle.RunLock(data_dir, settings.entity, run_id=run_id,
                           wait_seconds=wait_seconds) as lock:
        lifecycle.crash_point("locked")
        for note in lock.notes:
            log.warn(note)
        review = ReviewStore.for_data_dir(data_dir, settings.store_url)
        recovered = lifecycle.recover(data_dir, settings.entity, review)
        recovered += lifecycle.prune_failed(data_dir, settings.entity, review,
                                            settings.store.keep_failed_runs)
        for note in recovered:
            log.warn(note)
        previous = review.delivery_run(settings.entity, delivery.hash)
        reprocess = rescore_history or getattr(settings.validation, "reprocess", False)
        if previous and not reprocess:
            raise AlreadyProcessed(
                f"this delivery was already processed as run {previous} (same content, "
                f"sha256 {delivery.hash[:12]}); nothing to do",
                file=str(sources[0]) if sources else None,
                hint="set [validation] reprocess = true or pass --rescore-history to "
                     "process it again")
        # the workers import GX and PyOD/scikit-learn from now on, next to ingest; not
        # before the checks above, so a skipped run or one refused the lock starts none (the
        # model worker is still ready before the history is merged)
        with Workers(run_id, settings, files) as workers:
            partial = data_dir / RUNS / f"{run_id}.partial"
            partial.mkdir(parents=True)
            lifecycle.write_run_info(partial, run_id, settings.entity, delivery)
            review.start_run(run_id, settings.entity, delivery_hash=delivery.hash)
            log.json_path = partial / "run.log.jsonl"
            for note in lock.notes + recovered:  # warned before this run's log existed
                log.event("warning", message=note)
            ctx = RunContext(run_id, partial, data_dir, settings.entity, settings, log,
                             rescore_history)
            try:
                manifest = _run_stages(ctx, sources, fmt, control_totals, delivery, review,
                                       lock.notes + recovered, workers)
            except BaseException as exc:
                workers.close()  # before the folder is renamed: the model worker writes into it
                _record_failure(ctx, review, exc)
                raise
    final = data_dir / RUNS / run_id
    log.event("run_done", run_id=run_id)
    return RunSummary(run_id, final, manifest)


def _record_failure(ctx: RunContext, review: Any, exc: BaseException) -> None:
    """The error goes into the store's runs table; the folder is kept as ``<id>.failed``."""
    from detect import lifecycle

    if isinstance(exc, AlreadyProcessed):
        outcome, text = "skipped", str(exc)
    elif isinstance(exc, UserError):
        outcome, text = "failed", str(exc)
    elif isinstance(exc, KeyboardInterrupt):
        outcome, text = "aborted", "interrupted"
    else:
        outcome, text = "failed", f"internal error: {type(exc).__name__}: {exc}"
    try:
        ctx.log.event("run_failed", run_id=ctx.run_id, outcome=outcome, error=text)
        record = review.get_run(ctx.run_id)
        if record and record["outcome"] == "published":
            # failed after the commit point: complete the publish instead of undoing it
            lifecycle.finish_publish(ctx.data_dir, ctx.entity, ctx.run_id, record["counts"])
            return
        review.fail_run(ctx.run_id, text, outcome=outcome)
        failed = lifecycle.fail_folder(ctx.data_dir, ctx.run_id)
        ctx.log.json_path = failed / "run.log.jsonl" if failed else None
        if outcome == "skipped" and failed is not None:
            shutil.rmtree(failed, ignore_errors=True)  # nothing worth keeping
    except Exception as inner:  # noqa: BLE001 - never hide the original error
        ctx.log.warn(f"could not record the failure of run {ctx.run_id}: {inner}")


def _run_stages(ctx: RunContext, sources: list[Path], fmt: str, control_totals: Path | None,
                delivery: Any, review: Any, notes: list[str],
                workers: Workers) -> dict[str, Any]:
    from concurrent.futures import ThreadPoolExecutor

    from detect import history, lifecycle, rules, scoring, validate

    settings, partial, log, data_dir = ctx.settings, ctx.run_dir, ctx.log, ctx.data_dir
    started = time.perf_counter()
    log.event("run_start", run_id=ctx.run_id, sources=[str(s) for s in sources])
    with log.step("ingest", "Reading the delivery"):
        from detect.privacy import load_key

        # bank accounts pseudonymised while ingest writes: its file can become the clean one
        ingested = ingest(sources, fmt, settings, partial / "tmp",
                          pseudonym_key=load_key(data_dir))
        if control_totals is not None:
            from detect.ingest.control import read_control_totals
            ingested.control_totals.append(read_control_totals(control_totals))
        master_counts = write_master(ingested, partial)
        for text in ingested.warnings:      # e.g. ADS placeholder dates and how to fix them
            log.warn(text)
    lifecycle.crash_point("ingested")
    _guess_history(workers, ingested, ctx)
    with log.step("validate", "Validating (Great Expectations)"):
        checked = validate.validate(ingested, ctx)
    workers.gate_done()
    lifecycle.crash_point("validated")
    with log.step("history", "Merging into the booking history"):
        history_glob = history.merge(ctx, checked.clean_path, checkpoint=lifecycle.crash_point)
    lifecycle.crash_point("history_merged")
    for note in workers.notes:
        log.warn(note)
    modelling = workers.models
    early: Future[Any] | None = None
    stats: Future[tuple[list[dict[str, Any]], dict[str, Any]]] | None = None
    if modelling is not None:
        lines = pl.scan_parquet(history_glob).select(pl.len()).collect().item()
        limit = settings.models.worker_max_lines
        if 0 <= limit < lines:
            log.info(f"outlier models after the rules, in this process: the history has "
                     f"{lines:,} lines, more than [models] worker_max_lines ({limit:,}); next "
                     "to the rules they would need the memory of both")
            workers.drop_models()
            modelling = None
        else:
            # features, fit and scoring need only the history: the worker runs them next to
            # the rules; the reason texts wait for the rule hits (``finish`` below)
            modelling.start(history_glob, ctx)
            # ranking's hit-independent part as soon as the worker hands over its scores,
            # on the core the worker leaves idle at the end of the rules
            early = in_background(_prepare_ranking, modelling, history_glob, ctx,
                                  name="belegwacht-early")
            # then the manifest's statistics, in a thread that waits for it (not during
            # publish, where they competed with the inserts and the model worker's writing)
            stats = in_background(_manifest_stats, early, checked.clean_path, history_glob,
                                  name="belegwacht-early")
    with log.step("rules", "Running the rule catalog"):
        con = rules.connect(ctx, history_glob)
        rule_result = rules.run_rules(con, ctx)
        con.close()
    lifecycle.crash_point("rules_done")
    hits = pl.concat([rule_result.hits, checked.review_hits()])  # + control-total findings
    with log.step("models", "Scoring with outlier models") as step:
        if modelling is not None:
            # the step's seconds, CPU and peak RSS are the worker's, plus main's wait for it
            model_scores = modelling.finish(hits, log, step)
        else:
            # imported here, not at start-up: PyOD pulls in scikit-learn, SciPy, pandas and
            # matplotlib (~2 CPU s), a cost of this stage that a rejected delivery never pays
            from detect import models

            # reason texts only for the top lines of journals that can show them (rule hits,
            # tail)
            model_scores = models.score_lines(pl.scan_parquet(history_glob), ctx,
                                              explain_journals=hits)
    lifecycle.crash_point("models_done")
    with log.step("scoring", "Ranking review items"):
        # rule rates over the whole history: a delta scores a journal as a re-export would
        rates = getattr(rule_result, "history_rates", None)
        extra = ({"history_rates": rates(), "history_journals": rule_result.history_population}
                 if callable(rates) else {})
        prepared = early.result() if early is not None else None
        # findings.parquet is written during publish, beside the store's inserts
        findings = scoring.build_items(pl.scan_parquet(history_glob), hits, model_scores, ctx,
                                       prepared=prepared, write=False, **extra)
    lifecycle.crash_point("scored")
    shutil.rmtree(partial / "tmp", ignore_errors=True)
    with log.step("publish", "Publishing"), ThreadPoolExecutor(max_workers=1) as pool:
        # without the model worker (10M, small deliveries) the manifest's statistics
        # (DuckDB/Polars, ~0.4 CPU s at 1M lines, GIL released) run here, while the store
        # inserts the items; the manifest goes in last (``publish_run``). One thread, one
        # after the other: each uses every core anyway, and at 10M their memory should not
        # add up with the insert's
        if stats is None:
            stats = pool.submit(_manifest_stats, None, checked.clean_path, history_glob)
        written = pool.submit(scoring.write_findings, findings, ctx)

        manifest: dict[str, Any] = {}

        def manifest_now() -> dict[str, Any]:
            written.result()  # findings.parquet before the manifest that lists the run
            if modelling is not None:
                # models/ and model_scores.parquet, written while the job ranked and inserted
                modelling.join(log)
            assert stats is not None
            per_input, years = stats.result()
            manifest.update({
                "run_id": ctx.run_id,
                "entity": settings.entity,
                "format": ingested.format,
                "created_at": datetime.now(UTC).isoformat(),
                "delivery": {"sha256": delivery.hash, "files": delivery.files},
                "inputs": [vars(i) for i in ingested.inputs],
                "ingest_warnings": ingested.warnings,
                "per_input": per_input,
                "master": master_counts,
                "validation": checked.summary(),
                "history": {"glob": history_glob, "fiscal_years": years},
                "rules": rule_result.summary(),
                "rule_versions": _rule_versions(),
                "models": _model_meta(partial),
                "findings": {"items": findings.height},
                "config_hash": settings.fingerprint(),
                "versions": _versions(),
                "rescore_history": ctx.rescore_history,
                "recovered": notes,
                "durations": {k: round(v, 3) for k, v in log.durations.items()},
                "outcome": "publishing",
            })
            manifest["durations"]["total"] = round(time.perf_counter() - started, 3)
            write_manifest(partial, manifest)
            lifecycle.crash_point("manifest_written")
            return manifest

        counts = review.publish_run(ctx, findings, delivery_hash=delivery.hash,
                                    delivery_files=delivery.files, manifest=manifest_now,
                                    before_commit=lambda: lifecycle.crash_point(
                                        "store_uncommitted"))
        manifest["findings"] = {"items": findings.height, **counts}
        manifest["outcome"] = "published"
    final = lifecycle.finish_publish(data_dir, ctx.entity, ctx.run_id, counts)
    log.json_path = final / "run.log.jsonl"  # the partial folder is gone now
    return manifest


def _guess_history(workers: Workers, ingested: IngestResult, ctx: RunContext) -> None:
    """On a first load, let the model worker compute the features of the ingest's canonical
    file while this process validates and merges (``ModelWorker.guess``): the history then
    usually becomes a byte copy of that file (validation keeps it as the clean file when
    nothing is quarantined; the merge copies a one-partition delivery), and the worker's idle
    time after its imports takes ~1.5 CPU s (1M lines) out of the rules' window, where both
    cores are busy. The worker checks that the history is that file before it uses them
    (``modelworker._guess_holds``); a wrong guess costs CPU, never a wrong score.

    Not guessed: without the model worker, for histories that exist already (a nightly delta
    keeps their lines: the guess would be wrong), for deliveries of more or less than one
    fiscal year (the merge writes one partition per year), and for deliveries above ``[models]
    worker_max_lines`` (their models run in this process after the rules; the worker's guess
    would need the memory of both)."""
    from detect import history

    path = ingested.bookings_file
    if workers.models is None or path is None:
        return
    try:
        if any(history.entity_root(ctx.data_dir, ctx.entity).glob("*/*.parquet")):
            return
        # one fiscal year: a first load of several becomes several partitions (a wrong guess
        # costs the worker ~1.3 CPU s at 1M lines and delays its start by ~1 s)
        lines, years = pl.scan_parquet(path).select(
            pl.len(), pl.col("fiscal_year").n_unique()).collect().row(0)
    except (OSError, pl.exceptions.PolarsError, ValueError):
        return
    limit = ctx.settings.models.worker_max_lines
    if years != 1 or 0 <= limit < lines:
        return
    workers.models.guess(Path(path), ctx)


def _prepare_ranking(modelling: Any, history_glob: str, ctx: RunContext) -> Any:
    """``scoring.prepare`` with the model worker's scores, once it has handed them over (while
    the rules run); None when the worker failed (``finish`` reports it)."""
    from detect import scoring

    scores = modelling.early_scores()
    if scores is None:
        return None
    return scoring.prepare(pl.scan_parquet(history_glob), scores, ctx)


def _manifest_stats(after: Future[Any] | None, clean_path: Path, history_glob: str
                    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The manifest's statistics: ``input_stats`` of the clean delivery and ``history.stats``
    (~0.35 CPU s at 1M lines). With the model worker they run in the early thread after
    ``after`` (ranking's preparation, at the end of the rules, when the worker's core is
    idle), not during publish; they read only files that are final once the history is
    merged."""
    from detect import history

    if after is not None:
        try:
            after.result()
        except BaseException:  # noqa: BLE001 - ranking raises it where it takes the result
            pass
    return input_stats(clean_path), history.stats(history_glob)


def run_inbox(inbox: Path, *, fmt: str, settings: Settings, data_dir: Path,
              log: StepLog | None = None, rescore_history: bool = False,
              wait_seconds: float | None = None) -> Any:
    """Process every delivery in ``inbox`` not yet processed, oldest first, each as its own run.

    A delivery is a file or a folder directly in the inbox; hidden and half-written names
    (``.tmp``, ``.part`` ...) are skipped, so uploaders should write under such a name and
    rename when done. Returns ``lifecycle.InboxResult`` (``.lines()``, ``.exit_code()``).
    """
    from detect import lifecycle

    log = log or StepLog()

    def run_one(path: Path) -> RunSummary:
        log.info(f"delivery {path.name}")
        return run_delivery([path], fmt=fmt, settings=settings, data_dir=data_dir, log=log,
                            rescore_history=rescore_history, wait_seconds=wait_seconds)

    return lifecycle.process_inbox(Path(inbox), run_one)
