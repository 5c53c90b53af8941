"""Canonical bookings (``detect.schema.BOOKING_SCHEMA``) as one Parquet file, row group per month.

Bank accounts are in clear here (this is generated test data, the ground truth); the pipeline
pseudonymises them when it stores a delivery.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from detect.schema import BOOKING_SCHEMA
from sample_data.writers import MasterData


class ParquetWriter:
    def __init__(self, out: Path, year: int) -> None:
        self.path = out / "bookings.parquet"
        self.path.unlink(missing_ok=True)
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None

    def write(self, frame: pl.DataFrame) -> None:
        n = frame.height
        out = frame.with_columns(
            source_file=pl.lit(self.path.name),
            source_line=pl.int_range(self.rows + 1, self.rows + n + 1, dtype=pl.Int64))
        out = out.select([pl.col(c).cast(t) for c, t in BOOKING_SCHEMA.items()])
        table = out.to_arrow()
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, table.schema, compression="zstd")
        self._writer.write_table(table)
        self.rows += n

    def close(self, master: MasterData) -> None:
        if self._writer is not None:
            self._writer.close()
