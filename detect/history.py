"""The entity's booking history: every delivery merged by the booking key.

Why: deliveries are deltas (last night's bookings) or full re-exports (the whole fiscal year at
month end), and rules and models need more than one night (a duplicate payment spans two
deliveries; a model learns an account's usual amounts from months of data). So each run merges
its clean bookings into ``data_dir/history/<entity>/fiscal_year=<y>/data.parquet``: lines whose
key ``(entity, fiscal_year, journal_id, line_no)`` is in the delivery are replaced, the others
stay, new keys are added. Merging the same delivery twice gives the same history, byte for byte
(rows are sorted by the key), which makes a rerun after a crash safe.

Atomic across partitions: every touched partition is first written as
``data.parquet.<owner>.<run>.new`` (the reader glob ``*.parquet`` ignores it), then a journal
``MERGE-<owner>.json`` listing the swaps is written (the commit point), the files are renamed over
the old ones and the journal is removed. ``<owner>`` is the entity whose run lock is held.
``recover`` (run at the start of each merge) finishes a committed merge or discards an
uncommitted one, so a killed run never leaves a half-merged history.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import polars as pl

from detect.fsutil import fsync_path

from detect.schema import BOOKING_KEY, BOOKING_SCHEMA

HISTORY = "history"
PART_FILE = "data.parquet"
JOURNAL = "MERGE.json"


def entity_dirname(entity: str) -> str:
    """A file-system-safe folder name for an entity (stable; unique per entity)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in entity).strip(".") or "_"
    if safe != entity:
        safe += "-" + hashlib.sha1(entity.encode()).hexdigest()[:6]
    return safe


def entity_root(data_dir: Path, entity: str) -> Path:
    return Path(data_dir) / HISTORY / entity_dirname(entity)


def history_glob(data_dir: Path, entity: str | None = None) -> str:
    """Glob over one entity's partitions (or every entity's when ``entity`` is None)."""
    root = Path(data_dir) / HISTORY
    return str((entity_root(data_dir, entity) if entity else root / "*") / "*" / "*.parquet")


def partition_path(data_dir: Path, entity: str, fiscal_year: int) -> Path:
    return entity_root(data_dir, entity) / f"fiscal_year={int(fiscal_year)}" / PART_FILE


def _write_durable(frame: pl.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(path, statistics=True)
    fsync_path(path)


def _journal(root: Path, owner: str) -> Path:
    """One merge journal per lock owner (entity), so runs of other entities never collide."""
    return root / f"{JOURNAL.removesuffix('.json')}-{entity_dirname(owner)}.json"


def _new_name(owner: str, run_id: str) -> str:
    return f"{PART_FILE}.{entity_dirname(owner)}.{run_id}.new"


def recover(data_dir: Path, owner: str) -> list[str]:
    """Finish a committed merge of ``owner``'s runs or discard an uncommitted one.

    ``owner`` is the entity whose run lock the caller holds (``ctx.entity``); other entities'
    merges, possibly in progress right now, are left alone.
    """
    root = Path(data_dir) / HISTORY
    if not root.is_dir():
        return []
    done: list[str] = []
    journal = _journal(root, owner)
    if journal.exists():
        swaps = json.loads(journal.read_text("utf-8"))["swaps"]
        for new, final in swaps:
            if (root / new).exists():
                os.replace(root / new, root / final)
        for new, final in swaps:
            fsync_path((root / final).parent)
        journal.unlink()
        fsync_path(root)
        done.append(f"history: completed an interrupted merge of {len(swaps)} partition(s)")
    leftovers = sorted(root.glob(f"*/*/{PART_FILE}.{entity_dirname(owner)}.*.new"))
    for path in leftovers:
        path.unlink()
    if leftovers:
        done.append(f"history: discarded {len(leftovers)} uncommitted partition file(s)")
    return done


def merge(ctx: Any, clean_bookings_path: Path,
          checkpoint: Any = None) -> str:
    """Merge the delivery's clean bookings into the history; return the glob to read it by.

    ``checkpoint(name)`` is called between the phases (for crash tests); default: nothing.
    One entity in the delivery -> that entity's glob; several -> every entity's.
    """
    data_dir = Path(ctx.data_dir)
    root = data_dir / HISTORY
    root.mkdir(parents=True, exist_ok=True)
    for line in recover(data_dir, ctx.entity):
        ctx.log.info(line)
    delivery = (pl.scan_parquet(clean_bookings_path)
                .select([pl.col(c).cast(t) for c, t in BOOKING_SCHEMA.items()])
                .with_row_index("_order")
                .collect())
    # a key twice in one delivery: the later row wins (as a later delivery would)
    delivery = (delivery.sort("_order").unique(list(BOOKING_KEY), keep="last")
                .drop("_order"))
    groups = delivery.select("entity", "fiscal_year").unique().sort("entity", "fiscal_year")
    swaps: list[tuple[str, str]] = []
    added = replaced = 0
    for entity, year in groups.iter_rows():  # one iteration per partition, not per row
        part = delivery.filter((pl.col("entity") == entity) & (pl.col("fiscal_year") == year))
        final = partition_path(data_dir, entity, year)
        merged = part
        if final.exists():
            old = pl.scan_parquet(final)
            kept = old.join(part.lazy().select(list(BOOKING_KEY)), on=list(BOOKING_KEY), how="anti")
            old_rows = old.select(pl.len()).collect().item()
            kept_df = kept.collect()
            replaced += old_rows - kept_df.height
            merged = pl.concat([kept_df, part], how="vertical")
        added += part.height
        merged = merged.sort(list(BOOKING_KEY))
        new = final.with_name(_new_name(ctx.entity, ctx.run_id))
        _write_durable(merged, new)
        swaps.append((str(new.relative_to(root)), str(final.relative_to(root))))
        if checkpoint:
            checkpoint("history_partition_written")
    if swaps:
        journal = _journal(root, ctx.entity)
        tmp = journal.with_name(journal.name + ".tmp")
        tmp.write_text(json.dumps({"run_id": ctx.run_id, "swaps": swaps}), "utf-8")
        fsync_path(tmp)
        os.replace(tmp, journal)  # commit point
        fsync_path(root)
        if checkpoint:
            checkpoint("history_committed")
        recover(data_dir, ctx.entity)
    ctx.log.info(f"history: {added} lines merged into {len(swaps)} fiscal-year partition(s), "
                 f"{replaced} replaced")
    entities = groups["entity"].unique().to_list()
    if len(entities) == 1:
        return history_glob(data_dir, entities[0])
    if not entities:
        return _empty_glob(data_dir, ctx.entity)
    return history_glob(data_dir)


def _empty_glob(data_dir: Path, entity: str) -> str:
    """An empty delivery and no history yet: a schema-only file keeps readers working."""
    glob = history_glob(data_dir, entity)
    if not list(Path(data_dir).glob(str(Path(glob).relative_to(data_dir)))):
        path = entity_root(data_dir, entity) / "empty" / PART_FILE
        _write_durable(pl.DataFrame(schema=BOOKING_SCHEMA), path)
    return glob


def stats(data_dir: Path, entity: str) -> dict[str, Any]:
    """Lines and journals per fiscal year in the history (for the manifest and the app)."""
    glob = history_glob(data_dir, entity)
    if not list(entity_root(data_dir, entity).glob("*/*.parquet")):
        return {}
    frame = (pl.scan_parquet(glob).group_by("fiscal_year")
             .agg(pl.len().alias("lines"),
                  pl.struct("journal_id").n_unique().alias("journals"))
             .sort("fiscal_year").collect())
    return {str(r["fiscal_year"]): {"lines": r["lines"], "journals": r["journals"]}
            for r in frame.to_dicts()}
