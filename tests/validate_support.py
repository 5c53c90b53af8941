"""Helpers for the validation tests: build IngestResults from rows, run validate, publish."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl

from detect.config import Settings, ValidationSettings
from detect.ingest import INGEST_SCHEMA, IngestResult, InputFile, ingest
from detect.pipeline import RunContext
from detect.runlog import StepLog
from detect.schema import conform

_ids = itertools.count(1)


def settings(**validation: Any) -> Settings:
    """Test settings for entity "Teststadt" with [validation] overrides."""
    vs = dataclasses.replace(ValidationSettings(), **validation)
    return Settings(entity="Teststadt", validation=vs)


def line(journal: str, line_no: int, amount: float | None, **extra: Any) -> dict[str, Any]:
    row = dict(entity="Teststadt", fiscal_year=2024, period=3, journal_id=journal,
               line_no=line_no, posting_date=date(2024, 3, 4), document_date=date(2024, 3, 1),
               gl_account="5250000" if line_no == 1 else "1810000", amount=amount,
               currency="EUR", source_file="buchungen.csv", source_line=None)
    row.update(extra)
    return row


def journal(jid: str, amount: float, **extra: Any) -> list[dict[str, Any]]:
    return [line(jid, 1, amount, **extra), line(jid, 2, -amount, **extra)]


def ingest_result(rows: list[dict[str, Any]], *, sha: str | None = None,
                  master: dict[str, pl.DataFrame] | None = None,
                  control_totals: list[Any] | None = None) -> IngestResult:
    """An IngestResult as an ingest module would return it (source_line = position + 2)."""
    rows = [dict(r, source_line=r.get("source_line") or i + 2) for i, r in enumerate(rows)]
    schema = {k: v for k, v in INGEST_SCHEMA.items()}
    frame = pl.DataFrame(rows, schema_overrides={"amount": pl.Float64}, infer_schema_length=None)
    frame = frame.with_columns(pl.col("amount").cast(INGEST_SCHEMA["amount"]))
    lazy = conform(frame.lazy(), pl.Schema(schema))
    return IngestResult("test", lazy,
                        inputs=[InputFile("buchungen.csv", sha or f"sha-{next(_ids)}", 100)],
                        master=master or {}, control_totals=control_totals or [])


def context(data_dir: Path, cfg: Settings | None = None, run_id: str | None = None) -> RunContext:
    run_id = run_id or f"run{next(_ids):03d}"
    run_dir = data_dir / "runs" / f"{run_id}.partial"
    run_dir.mkdir(parents=True)
    cfg = cfg or settings()
    return RunContext(run_id, run_dir, data_dir, cfg.entity, cfg, StepLog(quiet=True))


def publish(ctx: RunContext) -> Path:
    """What the pipeline does after a successful run: the folder loses ``.partial``."""
    final = ctx.run_dir.with_name(ctx.run_id)
    ctx.run_dir.rename(final)
    return final


def ingest_folder(folder: Path, cfg: Settings, fmt: str = "ads",
                  control_totals: Path | None = None) -> IngestResult:
    files = [p for p in sorted(folder.iterdir()) if p.name != "profile.toml"]
    if fmt == "csv":
        cfg.mapping = str(folder / "profile.toml")
    result = ingest(files, fmt, cfg, folder / ".tmp")
    if control_totals is not None:
        from detect.ingest.control import read_control_totals
        result.control_totals.append(read_control_totals(control_totals))
    return result


def validated_both_ways(folder: Path, work: Path, *, use_facts: bool, gx_rows: int) -> dict:
    """Ingest an ADS folder and validate it, with the ingest's facts (the fast paths) or, with
    ``use_facts=False``, by validation's own queries; the outputs to compare."""
    import json

    from detect import validate

    cfg = dataclasses.replace(settings(data_docs=False, gx_rows=gx_rows), entity="default")
    result = ingest([folder], "ads", cfg, work)
    if not use_facts:
        result.facts = None
    checked = validate.validate(result, context(work / "data", cfg))
    checked.wait_for_gx()
    run = checked.clean_path.parent
    report = json.loads((run / "validation.json").read_text("utf-8"))
    for volatile in ("timings", "run_id"):
        report.pop(volatile, None)
    return {"bookings": pl.read_parquet(checked.clean_path),
            "quarantine": pl.read_parquet(run / "quarantine.parquet"),
            "findings": pl.read_parquet(run / "validation_findings.parquet"),
            "report": report}
