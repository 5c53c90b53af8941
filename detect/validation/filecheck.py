"""Checks that reject the whole delivery (``DeliveryRejected``): no rows, required columns empty,
a truncated file. Cheap and done before anything expensive: each is one aggregate or filtered
query over the (lazy) delivery that returns a handful of rows."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from detect.errors import DeliveryRejected
from detect.ingest import IngestResult
from detect.ingest.textio import ends_with_newline
from detect.schema import REQUIRED_BOOKING_COLUMNS
from detect.validation.gxrun import ROW

TEXT_SUFFIXES = {".csv", ".txt", ".tsv", ".dat", ".tab", ""}


def _first_booking_file(ingested: IngestResult) -> str | None:
    files = [i.path for i in ingested.inputs if i.role == "bookings"]
    return files[0] if files else None


def _height(frame: pl.DataFrame | pl.LazyFrame) -> int:
    return frame.height if isinstance(frame, pl.DataFrame) else \
        int(frame.select(pl.len()).collect().item())


def check_not_empty(frame: pl.DataFrame | pl.LazyFrame, ingested: IngestResult,
                    height: int | None = None) -> None:
    if (_height(frame) if height is None else height) == 0:
        raise DeliveryRejected(
            "the delivery holds no booking lines (only a header, or every line was filtered)",
            file=_first_booking_file(ingested),
            hint="check that the export covers the intended period")


def check_required(frame: pl.DataFrame | pl.LazyFrame, ingested: IngestResult,
                   height: int | None = None, known: dict[str, int] | None = None
                   ) -> dict[str, int]:
    """A required column that is null in every row means the mapping found nothing to map.
    Returns the null counts of the required columns and of ``ingest_issue`` (one aggregate,
    or ``known``: the ingest's counts of the same frame), which tell ``check_truncated``
    whether any row can be a cut-off line at all."""
    height = _height(frame) if height is None else height
    columns = [*REQUIRED_BOOKING_COLUMNS, "ingest_issue"]
    if known is not None and all(c in known for c in columns):
        nulls = {c: known[c] for c in columns}
    else:
        nulls = dict(zip(columns, frame.lazy().select(pl.col(c).null_count() for c in columns)
                         .collect().row(0)))
    empty = [c for c in REQUIRED_BOOKING_COLUMNS if nulls[c] == height]
    if not empty:
        return nulls
    example, first = frame.lazy().select(
        pl.col("ingest_issue").drop_nulls().first(),
        pl.col("source_file").drop_nulls().first()).collect().row(0)
    hint = ("map a source column to it (mapping profile) or check the export's columns"
            + (f"; first problem the ingest saw: {example}" if example else ""))
    raise DeliveryRejected(
        f"required column(s) {', '.join(empty)} empty in all {height:,} lines",
        file=first or _first_booking_file(ingested), column=empty[0], hint=hint)


def _resolve(name: str, ingested: IngestResult) -> Path | None:
    path = Path(name)
    if path.exists():
        return path
    for i in ingested.inputs:
        if Path(i.path).name == path.name and Path(i.path).exists():
            return Path(i.path)
    return None


def check_truncated(frame: pl.DataFrame | pl.LazyFrame, ingested: IngestResult,
                    nulls: dict[str, int] | None = None, height: int | None = None) -> None:
    """A text file whose last line is cut off (no line end, and that line did not parse), or a
    row the ingest itself marked as truncated. With the null counts of ``check_required``
    (``nulls``, over ``height`` rows), a delivery without any parse problem or missing required
    value (the usual case) needs no query at all."""
    lazy = frame.lazy()
    if nulls is not None and height is not None and nulls["ingest_issue"] == height \
            and not any(nulls[c] for c in REQUIRED_BOOKING_COLUMNS):
        return
    order = [ROW] if ROW in lazy.collect_schema().names() else ["source_file", "source_line"]
    marked = lazy.filter(pl.col("ingest_issue").str.contains("(?i)truncat")).sort(order)
    marked = marked.head(1).collect()
    if marked.height:
        row = marked.row(0, named=True)
        issue = str(row["ingest_issue"])
        issue = issue.split(":", 1)[1].strip() if issue.lower().startswith("truncated:") else issue
        raise DeliveryRejected(f"file is truncated: {issue}",
                               file=row["source_file"], line=row["source_line"],
                               hint="ask for the export to be transferred again")
    incomplete = pl.any_horizontal(pl.col(c).is_null() for c in REQUIRED_BOOKING_COLUMNS)
    # each file's last line: a small per-file aggregate joined back (no window over all rows)
    ends = lazy.group_by("source_file").agg(pl.col("source_line").max())
    # the few incomplete rows first, then which of them are a file's last line
    last = (lazy.filter(pl.col("ingest_issue").is_not_null() | incomplete)
            .join(ends, on=["source_file", "source_line"], how="semi", nulls_equal=True)
            .sort(order).unique(subset=["source_file"], keep="first", maintain_order=True)
            .collect())
    for row in last.iter_rows(named=True):  # one row per file
        path = _resolve(row["source_file"], ingested)
        if path is None or path.suffix.lower() not in TEXT_SUFFIXES:
            continue
        if not ends_with_newline(path):
            empty = [c for c in REQUIRED_BOOKING_COLUMNS if row[c] is None]
            what = row["ingest_issue"] or f"no {', '.join(empty)}"
            raise DeliveryRejected(
                f"file looks truncated: its last line has no line end and is incomplete "
                f"({what})", file=row["source_file"], line=row["source_line"],
                hint="ask for the export to be transferred again")
