"""Ingest: ERP exports -> canonical bookings (``detect.schema.BOOKING_SCHEMA``) with provenance.

One module per source format. Each module exposes

- ``NAME``: the ``--format`` value;
- ``sniff(path, text) -> float``: confidence 0..1 that ``path`` (whose first bytes decode to
  ``text``) is a *primary* file of this format (the booking table; master-data and control files
  are picked up by ``read``);
- ``read(files, settings, workdir) -> IngestResult``: every file of the delivery is passed;
  the module uses what it recognises and lists the rest in ``IngestResult.ignored``.

Formats are recognised by content, never only by file name.
"""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import polars as pl

from detect.config import Settings
from detect.errors import IngestError
from detect.ingest.textio import EncodingChanged, decode_head, read_head, sha256_of
from detect.schema import BOOKING_SCHEMA

FORMAT_MODULES: dict[str, str] = {
    "ads": "detect.ingest.ads",
    "datev": "detect.ingest.datev",
    "sap": "detect.ingest.sap",
    "gdpdu": "detect.ingest.gdpdu",
    "saft": "detect.ingest.saft",
    "csv": "detect.ingest.mapped",
}
"""``--format`` name -> module. ``csv`` (a mapping profile) also covers Parquet and XLSX."""

INGEST_SCHEMA: pl.Schema = pl.Schema({**BOOKING_SCHEMA, "ingest_issue": pl.String()})
"""What ``read`` returns: canonical columns plus ``ingest_issue`` (parse problems, null if none)."""


@dataclass
class InputFile:
    path: str
    sha256: str
    size: int
    role: str = "bookings"
    """bookings | master:<name> | control_totals | description | ignored"""
    rows: int | None = None


@dataclass
class ControlTotals:
    """Totals the delivery claims about itself, to be reconciled by validation.

    ``per_journal`` has columns journal_id (str), debit (decimal), credit (decimal, positive),
    lines (int, may be null). ``overall`` may hold line_count, journal_count, debit, credit.
    """

    source: str
    per_journal: pl.DataFrame | None = None
    overall: dict[str, float | int] = field(default_factory=dict)


@dataclass
class IngestResult:
    format: str
    bookings: pl.LazyFrame
    """Columns exactly ``INGEST_SCHEMA``."""
    inputs: list[InputFile] = field(default_factory=list)
    master: dict[str, pl.DataFrame] = field(default_factory=dict)
    """Master data by name (``detect.schema.MASTER_SCHEMAS``)."""
    control_totals: list[ControlTotals] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    deferred_checks: list[Callable[[], object]] = field(default_factory=list)
    """Full-read checks of the text files behind ``bookings`` (``mapped.DelimitedScan.check``):
    ``materialise`` runs them only when reading fails, so that a malformed file is reported
    with its file and line instead of Polars' message, without a second read of good files."""
    finishers: list[Callable[[Materialised], Materialised]] = field(default_factory=list)
    """Steps that need the whole file (per-journal checks, column statistics), run in order on
    the materialised bookings: a few columns of Parquet instead of another parse of the text.
    ``bookings`` may carry helper columns named ``__ingest_*`` for them; they are dropped. A
    finisher that changes canonical columns returns a newly materialised delivery."""
    trim_later: list[str] = field(default_factory=list)
    """Canonical text columns ``bookings`` delivers untrimmed: ``materialise`` trims them per
    batch (``parsing.finish_text``), only where a value may start or end with whitespace."""
    observers: list[Callable[[pl.DataFrame], None]] = field(default_factory=list)
    """Called with every batch ``materialise`` writes (in delivered order): whole-file facts a
    finisher needs (per-journal checks, counts) gathered from data in memory anyway, instead
    of another scan of the Parquet."""
    bookings_file: Path | None = None
    """Parquet file holding exactly ``bookings``' ``BOOKING_SCHEMA`` columns, in order, in the
    clean file's layout (``bookings_file.py``): validation keeps it as the run's clean file when
    nothing is quarantined."""
    pseudonym_key: bytes | None = None
    """The key ingest pseudonymised ``bank_account`` with (``privacy.iban_pseudonyms``), or
    None: then the bank accounts are as delivered and validation pseudonymises them."""
    master_key: bytes | None = None
    """The key ingest pseudonymised the master data's IBANs with (``privacy.pseudonymise_master``,
    the same as ``pseudonym_key``), or None: validation pseudonymises them."""
    facts: Facts | None = None
    """What the one pass learnt about ``bookings`` on the way (row count, null counts, order),
    so that validation need not scan the file again for them; None when unknown."""

    def facts_of(self, frame: pl.LazyFrame) -> Facts | None:
        """``facts`` when they describe ``frame`` (the very object ``ingest`` returned as
        ``bookings``), else None: a caller that replaced ``bookings`` gets no stale facts."""
        return self.facts if self.facts is not None and self.facts.frame is frame else None


@dataclass
class Facts:
    """Counted on the batches ``materialise`` writes anyway (null counts are Arrow metadata,
    the order check compares two columns per batch): validation's row count, required-column
    null counts and delivered-order check were three more scans (1M lines: ~0.1 CPU s)."""

    rows: int = 0
    nulls: dict[str, int] = field(default_factory=dict)
    """Null count per column of the frame."""
    in_order: bool = True
    """Rows sorted by (source_file, source_line), neither ever null."""
    frame: pl.LazyFrame | None = None
    """The frame these facts describe (see ``IngestResult.facts_of``)."""
    journals: JournalRuns | None = None
    """The journals as runs of consecutive lines (set by ``finish``)."""
    _last: tuple[str, int] | None = None
    _runs: JournalRuns | None = None

    def add(self, batch: pl.DataFrame) -> None:
        if batch.height == 0:
            return
        if self._runs is None and all(c in batch.columns for c in RUN_COLUMNS):
            self._runs = JournalRuns()
        if self._runs is not None:
            self._runs.add(batch)
        self.rows += batch.height
        counts = dict(zip(batch.columns, batch.null_count().row(0), strict=True))
        for name, n in counts.items():
            self.nulls[name] = self.nulls.get(name, 0) + n
        if not self.in_order:
            return
        if "source_file" not in batch.columns or "source_line" not in batch.columns \
                or counts["source_file"] or counts["source_line"]:
            self.in_order = False
            return
        files, lines = batch.get_column("source_file"), batch.get_column("source_line")
        file, line = pl.col("source_file"), pl.col("source_line")
        if batch.select((file == file.first()).all()).item():
            # one file (the usual batch): its lines in order is a sortedness test, no
            # comparison of every file name with the one before (1M lines: 0.017 -> 0.003 s)
            good = lines.is_sorted()
        else:
            ok = (file > file.shift(1)) | ((file == file.shift(1)) & (line >= line.shift(1)))
            good = batch.select(ok.slice(1).all()).item()
        if not good:
            self.in_order = False
            return
        here = (files[0], lines[0])
        if self._last is not None and (here[0] < self._last[0] or
                                       (here[0] == self._last[0] and here[1] < self._last[1])):
            self.in_order = False
        self._last = (files[-1], lines[-1])


RUN_KEY = ["entity", "fiscal_year", "journal_id"]
RUN_COLUMNS = [*RUN_KEY, "line_no", "amount"]


class JournalRuns:
    """The delivery's journals as runs of consecutive lines with the same (entity, fiscal_year,
    journal_id), gathered batch by batch: each run's key and amount sum, whether line_no
    strictly increases inside every run, and (``finish``) whether no two runs share a key.

    Why: exports list a journal's lines together, and then validation's journal-level work
    needs no aggregate over every line: the runs *are* the journals (distinct keys), so a
    line key repeats nowhere when line numbers increase within each run, the unbalanced
    journals are the runs whose sum is not zero, the distinct journal ids are the runs' ids,
    and GX's sample of whole journals can be drawn from the runs. Validation falls back to its
    queries whenever ``distinct`` is false (1M lines: ~0.45 CPU s of queries against ~0.1
    here)."""

    def __init__(self) -> None:
        self.starts: list[pl.DataFrame] = []
        self.sums: list[pl.Series] = []
        self.lines_increase = True
        self.distinct = False
        self.distinct_ids = False
        """No two runs share (fiscal_year, journal_id) either."""
        self.table: pl.DataFrame | None = None
        """entity, fiscal_year, journal_id, amount (the run's sum), in delivered order."""
        self._last: tuple | None = None
        self._pending: pl.Series | None = None

    def add(self, batch: pl.DataFrame) -> None:
        key = [pl.col(c) for c in RUN_KEY]
        line = pl.col("line_no")
        first = pl.int_range(pl.len()) == 0
        same = pl.all_horizontal([c.eq_missing(c.shift(1)) for c in key]) & ~first
        head = batch.select(*RUN_KEY, "line_no").row(0)
        continues = self._last is not None and self._last[:3] == head[:3]
        start = ~same & ~(first & pl.lit(continues))
        up = (line > line.shift(1)).fill_null(False)
        head_up = continues and self._last[3] is not None and head[3] is not None \
            and head[3] > self._last[3]   # type: ignore[index]
        frame = batch.select(
            *RUN_KEY, start.alias("_start"),
            (same & ~up).any().alias("_down"),
            (pl.col("amount").fill_null(0).cum_sum()).alias("_cs"))
        if frame.get_column("_down")[0] or (continues and not head_up):
            self.lines_increase = False
        # each segment's sum: the running sum at its last line minus the one before it
        ends = frame.select(pl.col("_cs").filter(
            pl.col("_start").shift(-1, fill_value=True))).to_series()
        segment = ends - ends.shift(1, fill_value=0)
        if continues:
            assert self._pending is not None
            segment = pl.concat([segment.head(1) + self._pending, segment.slice(1)])
        elif self._pending is not None:
            self.sums.append(self._pending)
        self.sums.append(segment.slice(0, segment.len() - 1))
        self._pending = segment.tail(1)
        self.starts.append(frame.filter("_start").select(RUN_KEY))
        self._last = batch.select(*RUN_KEY, "line_no").row(batch.height - 1)

    def finish(self) -> JournalRuns:
        if self._pending is not None:
            self.sums.append(self._pending)
            self._pending = None
        if not self.starts:
            self.table = pl.DataFrame(schema={"entity": pl.String, "fiscal_year": pl.Int32,
                                              "journal_id": pl.String})
            self.table = self.table.with_columns(pl.lit(0).alias("amount"))
        else:
            self.table = pl.concat(self.starts).with_columns(
                pl.concat(self.sums).alias("amount"))
        self.starts, self.sums = [], []
        n = self.table.height
        # distinct values of any function of the key prove the keys distinct (a collision
        # can only make them look repeated: then validation queries as before); the year
        # wrapped, not cast strictly: a delivered negative year must reach validation
        year = pl.col("fiscal_year").cast(pl.Int64).cast(pl.UInt64, wrap_numerical=True)
        ids = pl.col("journal_id").hash() + year
        self.distinct_ids = n == 0 or self.table.select(ids.n_unique()).item() == n
        self.distinct = self.distinct_ids or \
            self.table.select(pl.struct(RUN_KEY).hash().n_unique()).item() == n
        return self


@dataclass
class Materialised:
    """The delivery parsed once into Parquet (see ``materialise``)."""

    frame: pl.LazyFrame
    """Canonical columns (``bookings_file``) side by side with the rest (``ingest_issue``,
    helper columns) from a second, small file."""
    bookings_file: Path
    facts: Facts | None = None


def format_module(name: str) -> ModuleType:
    if name not in FORMAT_MODULES:
        raise IngestError(f"unknown format {name!r}",
                          hint=f"choose one of: auto, {', '.join(FORMAT_MODULES)}")
    return importlib.import_module(FORMAT_MODULES[name])


def expand_sources(sources: list[Path]) -> list[Path]:
    """Files named directly, plus every regular file in named folders (recursively, sorted)."""
    files: list[Path] = []
    for src in sources:
        if not src.exists():
            raise IngestError("no such file or folder", file=str(src))
        if src.is_dir():
            found = sorted(p for p in src.rglob("*") if p.is_file() and not p.name.startswith("."))
            if not found:
                raise IngestError("folder holds no files", file=str(src))
            files.extend(found)
        else:
            files.append(src)
    return files


def detect_format(files: list[Path]) -> str:
    """The format whose sniffer is most confident about any of ``files``."""
    best, best_score = "", 0.0
    for path in files:
        if path.stat().st_size == 0:
            continue
        text = decode_head(read_head(path))
        for name in FORMAT_MODULES:
            try:
                score = format_module(name).sniff(path, text)
            except ModuleNotFoundError:
                continue
            if score > best_score:
                best, best_score = name, score
    if best_score < 0.5:
        names = ", ".join(p.name for p in files[:5])
        raise IngestError(f"cannot recognise the format of {names}",
                          hint="pass --format (datev, sap, ads, gdpdu, saft) or --format csv "
                               "with a mapping profile")
    return best


def materialise(bookings: pl.LazyFrame, workdir: Path,
                checks: list[Callable[[], object]] | None = None,
                pseudonym_key: bytes | None = None,
                observers: list[Callable[[pl.DataFrame], None]] | None = None,
                trim: list[str] | None = None,
                pseudonymiser: Any = None) -> Materialised:
    """Parse the delivery once, streaming, into Parquet under ``workdir``; later stages scan
    that instead of re-running the text parsers (and ingest pays for its own parsing).

    One pass, two files: the canonical columns in the clean file's layout
    (``bookings_file.BookingsWriter``; validation keeps this file as the clean bookings when
    nothing is quarantined, instead of encoding every column a second time) and the other
    columns (``ingest_issue``, ``__ingest_*`` helpers; mostly null, lz4). Both are written from
    the same batches, so their rows line up by construction. With ``pseudonym_key``, bank
    accounts are pseudonymised on the way (``privacy.IbanPseudonymiser``): the clear IBANs are
    never written, not even to the temporary folder.

    When the read fails, ``checks`` (see ``IngestResult.deferred_checks``) name the culprit."""
    import pyarrow as pa  # here: a cold start that only sniffs never needs pyarrow
    import pyarrow.parquet as pq

    from detect.ingest.bookings_file import ROW_GROUP, BookingsWriter, to_table
    from detect.ingest.parsing import finish_text

    workdir.mkdir(parents=True, exist_ok=True)
    # fresh names per call: a LazyFrame handed out earlier may still read its own files
    main, side = (_fresh(workdir, f"ingested-{part}-") for part in ("bookings", "extra"))
    names = bookings.collect_schema().names()
    others = [c for c in names if c not in BOOKING_SCHEMA]
    pseudonymise = pseudonymiser
    if pseudonymise is None and pseudonym_key is not None:
        from detect.privacy import IbanPseudonymiser

        pseudonymise = IbanPseudonymiser(pseudonym_key)
    writer = BookingsWriter(main)
    extra: list[pq.ParquetWriter] = []   # created with the first batch's side columns
    facts = Facts()

    def write(table: pa.Table, rest: pa.Table | None) -> None:
        writer.write(table)
        if rest is None:
            return
        if not extra:
            extra.append(pq.ParquetWriter(side, rest.schema, compression="lz4",
                                          store_schema=False))
        extra[0].write_table(rest)

    # The Parquet encoding (pyarrow, GIL released, ~0.45 CPU s per 1M lines) runs in its own
    # thread, one batch behind the checks and counting of the next batch on this one: at the
    # end of the read this thread no longer encodes the last batches alone on one core.
    # One batch in flight at most (bounded memory); the writer thread keeps the order.
    pool = ThreadPoolExecutor(1, thread_name_prefix="ingest-write")
    pending: Future[None] | None = None
    try:
        try:
            for batch in bookings.collect_batches(chunk_size=ROW_GROUP, maintain_order=True):
                if trim:
                    batch = finish_text(batch, trim)
                facts.add(batch)
                for observe in observers or []:
                    observe(batch)
                table = to_table(batch)
                if pseudonymise is not None:  # swapped in Arrow: with_columns on a batch of
                    # many chunks rechunked every column (0.2 CPU s per 1M lines)
                    table = table.set_column(
                        table.schema.get_field_index("bank_account"), "bank_account",
                        pseudonymise(batch.get_column("bank_account"))
                        .to_arrow(compat_level=pl.CompatLevel.newest()))
                rest = batch.select(others).to_arrow(compat_level=pl.CompatLevel.newest()) \
                    if others else None
                if pending is not None:
                    pending.result()
                pending = pool.submit(write, table, rest)
            if pending is not None:
                pending, done = None, pending
                done.result()
        except pl.exceptions.ComputeError:
            for check in checks or []:
                check()   # raises IngestError (file, line) for a malformed file
            raise
    except BaseException:
        if pending is not None:
            pending.cancel()
            wait([pending])
        pool.shutdown()
        writer.abort()
        if extra:
            extra[0].close()
        raise
    pool.shutdown()
    writer.close()
    if facts._runs is not None:   # one reference only: validation drops it once used
        facts.journals, facts._runs = facts._runs.finish(), None
    if extra:
        extra[0].close()
    elif others:  # no rows
        pl.DataFrame(schema=bookings.collect_schema()).select(others).write_parquet(side)
    frame = pl.scan_parquet(main)
    if others:
        frame = pl.concat([frame, pl.scan_parquet(side)], how="horizontal").select(names)
    return Materialised(frame, main, facts)


def _fresh(workdir: Path, prefix: str) -> Path:
    """A new file name; the file is created by its writer, with the usual mode (not mkstemp's
    0600): validation may link the bookings file as the run's ``bookings.parquet``."""
    return workdir / f"{prefix}{uuid.uuid4().hex}.parquet"


def helper_columns(frame: pl.LazyFrame) -> list[str]:
    """The ``__ingest_*`` columns a reader added for its finishers (dropped after them)."""
    return [c for c in frame.collect_schema().names() if c.startswith("__ingest_")]


def ingest(sources: list[Path], fmt: str, settings: Settings, workdir: Path, *,
           pseudonym_key: bytes | None = None) -> IngestResult:
    """Read a delivery (files and/or folders) into canonical bookings.

    ``pseudonym_key`` (``privacy.load_key(data_dir)``): pseudonymise bank accounts while
    writing, so that the canonical file can become the run's clean bookings unchanged (see
    ``materialise``); without it validation pseudonymises and writes the clean file itself."""
    files = expand_sources(sources)
    empty = [f for f in files if f.stat().st_size == 0]
    if empty and len(empty) == len(files):
        raise IngestError("file is empty", file=str(empty[0]))
    try:
        name = detect_format(files) if fmt == "auto" else fmt
    except IngestError:
        if not settings.mapping:  # a configured mapping profile makes unknown tables "csv"
            raise
        name = "csv"
    ibans = None
    if pseudonym_key is not None:
        from detect.privacy import IbanPseudonymiser

        ibans = IbanPseudonymiser(pseudonym_key)   # bookings, then master data: hashed once
    result = format_module(name).read(files, settings, workdir)
    try:
        done = materialise(result.bookings, workdir, result.deferred_checks, pseudonym_key,
                           result.observers, result.trim_later, ibans)
    except EncodingChanged:
        # a file's first MiB was UTF-8, the rest is not (a cp1252 export): read again, now
        # with the encoding found by the full check (remembered by textio)
        result = format_module(name).read(files, settings, workdir)
        done = materialise(result.bookings, workdir, result.deferred_checks, pseudonym_key,
                           result.observers, result.trim_later, ibans)
    if pseudonym_key is not None:
        # the master data's IBANs too (most are the bookings' already): validation need not
        # rewrite the master files (1M: 0.05 CPU s)
        from detect.privacy import pseudonymise_master

        pseudonymise_master(result.master, pseudonym_key, ibans)
        result.master_key = pseudonym_key
    result.format = name
    for finish in result.finishers:
        done = finish(done)
    result.bookings = done.frame.drop(helper_columns(done.frame))
    result.bookings_file = done.bookings_file
    if done.facts is not None:
        done.facts.frame = result.bookings
        result.facts = done.facts
    result.pseudonym_key = pseudonym_key
    hashed = {i.path for i in result.inputs}
    for f in files:
        if str(f) not in hashed:
            result.inputs.append(InputFile(str(f), sha256_of(f), f.stat().st_size, role="ignored"))
    return result
