"""What an entity already processed: delivery hashes and journal number ranges.

Kept as small JSON files under ``<data_dir>/state/<entity>/``, written atomically (temp file,
fsync, rename). Entries are recorded when a delivery passes validation, tagged with the run id,
and only count once that run is *published* (``runs/<run_id>/`` exists): a run that fails later
leaves no trace that could block a retry.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

PROCESSED = "processed.json"
JOURNAL_NUMBERS = "journal_numbers.json"
RANGE_SCHEMA = {"fiscal_year": pl.Int32, "lo": pl.Int64, "hi": pl.Int64, "run_id": pl.String}


def entity_dir(data_dir: Path, entity: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in entity)
    return data_dir / "state" / safe


def is_published(data_dir: Path, run_id: str) -> bool:
    return (data_dir / "runs" / run_id).is_dir()


def read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def delivery_key(sha256s: list[str]) -> str:
    """One hash for the set of files of a delivery (order does not matter)."""
    return hashlib.sha256("\n".join(sorted(set(sha256s))).encode()).hexdigest()


def already_processed(data_dir: Path, entity: str, sha256s: list[str]) -> str | None:
    """The published run that processed exactly these files, or None."""
    if not sha256s:
        return None
    registry = read_json(entity_dir(data_dir, entity) / PROCESSED)
    entry = registry.get("deliveries", {}).get(delivery_key(sha256s))
    if entry and is_published(data_dir, entry["run_id"]):
        return str(entry["run_id"])
    return None


def files_processed(data_dir: Path, entity: str, sha256s: list[str]) -> dict[str, str]:
    """sha256 -> published run id, for single files of this delivery seen before."""
    files = read_json(entity_dir(data_dir, entity) / PROCESSED).get("files", {})
    return {s: files[s] for s in sha256s if s in files and is_published(data_dir, files[s])}


def remember_delivery(data_dir: Path, entity: str, sha256s: list[str], run_id: str,
                      names: list[str] | None = None) -> None:
    """Record the delivery under ``run_id`` (effective once that run is published)."""
    if not sha256s:
        return
    path = entity_dir(data_dir, entity) / PROCESSED
    registry = read_json(path)
    deliveries = registry.setdefault("deliveries", {})
    deliveries[delivery_key(sha256s)] = {
        "run_id": run_id, "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": names or []}
    files = registry.setdefault("files", {})
    for sha in sha256s:
        files.setdefault(sha, run_id)
        if not is_published(data_dir, files[sha]):
            files[sha] = run_id
    write_json_atomic(path, registry)


def previous_ranges(data_dir: Path, entity: str) -> pl.DataFrame:
    """Journal number ranges of published runs: fiscal_year, lo, hi, run_id."""
    runs = read_json(entity_dir(data_dir, entity) / JOURNAL_NUMBERS).get("runs", {})
    rows = [{"fiscal_year": r["fiscal_year"], "lo": r["lo"], "hi": r["hi"], "run_id": run_id}
            for run_id, ranges in runs.items()
            if is_published(data_dir, run_id) for r in ranges]
    return pl.DataFrame(rows, schema=RANGE_SCHEMA) if rows else pl.DataFrame(schema=RANGE_SCHEMA)


def remember_ranges(data_dir: Path, entity: str, run_id: str, ranges: pl.DataFrame) -> None:
    """Record this run's numeric journal ranges; drop entries of runs that never got published."""
    path = entity_dir(data_dir, entity) / JOURNAL_NUMBERS
    data = read_json(path)
    runs = {r: v for r, v in data.get("runs", {}).items() if is_published(data_dir, r)}
    runs[run_id] = ranges.select("fiscal_year", "lo", "hi").to_dicts()
    write_json_atomic(path, {"runs": runs})
