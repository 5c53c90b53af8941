"""``materialise``'s one pass: the Parquet encoding in its own thread.

The encoding of each batch (pyarrow, GIL released) runs in a writer thread one batch behind the
checks and counting of the next; the order of the row groups, the side file's alignment and the
errors must be those of writing in line.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import detect.ingest.bookings_file as bookings_file
from detect.ingest import ingest
from validate_support import settings

HEADER = "Journal_ID,Journal_ID_Line_Number,Effective_Date,GL_Account_Number,Amount\n"


def _delivery(folder: Path, journals: int = 7) -> Path:
    folder.mkdir(parents=True)
    rows = [f"{j},{n},2024-03-0{1 + j % 9},{5250000 if n == 1 else 1810000},"
            f"{'' if n == 1 else '-'}{j}.50" for j in range(1, journals + 1) for n in (1, 2)]
    (folder / "GL_Detail.csv").write_text(HEADER + "\n".join(rows) + "\n", "utf-8")
    return folder


def _cfg():
    return dataclasses.replace(settings(data_docs=False), entity="default")


def test_batches_are_encoded_in_the_writer_thread_in_delivered_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _delivery(tmp_path / "in")
    whole = ingest(sorted(folder.iterdir()), "ads", _cfg(), tmp_path / "w1")
    seen: list[tuple[str, list[int]]] = []
    write = bookings_file.BookingsWriter.write

    def spy(self, table):  # noqa: ANN001 - pyarrow table
        seen.append((threading.current_thread().name, table.column("source_line").to_pylist()))
        write(self, table)

    monkeypatch.setattr(bookings_file.BookingsWriter, "write", spy)
    monkeypatch.setattr(bookings_file, "ROW_GROUP", 3)
    batched = ingest(sorted(folder.iterdir()), "ads", _cfg(), tmp_path / "w2")
    assert len(seen) > 1
    assert all(name.startswith("ingest-write") for name, _ in seen)
    lines = [line for _, batch in seen for line in batch]
    assert lines == list(range(2, 16))
    assert pq.ParquetFile(batched.bookings_file).metadata.num_row_groups == len(seen)
    assert batched.bookings.collect().equals(whole.bookings.collect())
    assert not any(t.name.startswith("ingest-write") for t in threading.enumerate())


def test_a_failing_write_is_raised_and_ends_the_writer_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _delivery(tmp_path / "in")
    calls: list[int] = []
    write = bookings_file.BookingsWriter.write

    def fail_second(self, table):  # noqa: ANN001 - pyarrow table
        calls.append(table.num_rows)
        if len(calls) == 2:
            raise OSError("disk full")
        write(self, table)

    monkeypatch.setattr(bookings_file.BookingsWriter, "write", fail_second)
    monkeypatch.setattr(bookings_file, "ROW_GROUP", 3)
    with pytest.raises(OSError, match="disk full"):
        ingest(sorted(folder.iterdir()), "ads", _cfg(), tmp_path / "w")
    assert len(calls) == 2   # the writer stops at the failure
    assert not any(t.name.startswith("ingest-write") for t in threading.enumerate())
