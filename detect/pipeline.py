"""One nightly run end to end: ingest -> validate -> history -> rules -> models -> scoring -> publish.

A run is a function of (entity, settings, delivery, data dir) with no hidden global state, so a
scheduler can fan entities out to workers. It writes into ``runs/<run_id>.partial/`` and only
renames it to ``runs/<run_id>/`` and switches ``CURRENT`` once everything is complete.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from detect.config import Settings
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
    _fsync_dir(data_dir)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _versions() -> dict[str, str]:
    names = ["belegwacht", "polars", "duckdb", "pyod", "scikit-learn", "great-expectations"]
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = version(name)
        except Exception:  # noqa: BLE001 - a missing optional package is not an error here
            out[name] = "?"
    return out


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


def run_delivery(sources: list[Path], *, fmt: str, settings: Settings, data_dir: Path,
                 control_totals: Path | None = None, log: StepLog | None = None,
                 rescore_history: bool = False) -> RunSummary:
    """Ingest, validate, score and publish one delivery; return what was done."""
    from detect import history, models, rules, scoring, store, validate

    data_dir.mkdir(parents=True, exist_ok=True)
    run_id = new_run_id(settings.entity)
    partial = data_dir / RUNS / f"{run_id}.partial"
    partial.mkdir(parents=True)
    log = log or StepLog()
    log.json_path = partial / "run.log.jsonl"
    ctx = RunContext(run_id, partial, data_dir, settings.entity, settings, log, rescore_history)
    started = time.perf_counter()
    log.event("run_start", run_id=run_id, sources=[str(s) for s in sources])

    with log.step("ingest", "Reading the delivery"):
        ingested = ingest(sources, fmt, settings, partial / "tmp")
        if control_totals is not None:
            from detect.ingest.control import read_control_totals
            ingested.control_totals.append(read_control_totals(control_totals))
        master_counts = write_master(ingested, partial)
    with log.step("validate", "Validating (Great Expectations)"):
        checked = validate.validate(ingested, ctx)
    with log.step("history", "Merging into the booking history"):
        history_glob = history.merge(ctx, checked.clean_path)
    with log.step("rules", "Running the rule catalog"):
        con = rules.connect(ctx, history_glob)
        rule_result = rules.run_rules(con, ctx)
    with log.step("models", "Scoring with outlier models"):
        model_scores = models.score_lines(pl.scan_parquet(history_glob), ctx)
    with log.step("scoring", "Ranking review items"):
        findings = scoring.build_items(pl.scan_parquet(history_glob), rule_result.hits,
                                       model_scores, ctx)
    with log.step("publish", "Publishing"):
        review = store.ReviewStore.for_data_dir(data_dir, settings.store_url)
        publish = review.publish_run(ctx, findings)
        manifest = {
            "run_id": run_id,
            "entity": settings.entity,
            "format": ingested.format,
            "created_at": datetime.now(UTC).isoformat(),
            "inputs": [vars(i) for i in ingested.inputs],
            "per_input": input_stats(checked.clean_path),
            "master": master_counts,
            "validation": checked.summary(),
            "rules": rule_result.summary(),
            "findings": {"items": findings.height, **publish},
            "config_hash": settings.fingerprint(),
            "versions": _versions(),
            "durations": {k: round(v, 3) for k, v in log.durations.items()},
            "outcome": "published",
        }
        manifest["durations"]["total"] = round(time.perf_counter() - started, 3)
        write_manifest(partial, manifest)
        final = data_dir / RUNS / run_id
        os.replace(partial, final)
        _fsync_dir(final.parent)
        switch_current(data_dir, run_id)
    log.json_path = final / "run.log.jsonl"
    log.event("run_done", run_id=run_id)
    return RunSummary(run_id, final, manifest)
