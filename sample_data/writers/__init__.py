"""Writers of one generated ledger: canonical Parquet, AICPA ADS, DATEV EXTF, SAP tables.

Each writer is opened on the output folder, receives the ledger month by month
(``write(frame)``, a finalised month with canonical columns plus ``cents`` and ``anchor``) and
gets the year-end master data on ``close(master)``. Files stream: nothing holds the whole year.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import polars as pl

from detect.schema import MASTER_SCHEMAS


@dataclass
class MasterData:
    accounts: pl.DataFrame
    vendors: pl.DataFrame
    """vendor_id, vendor_name, bank_account (current), created_at, is_person, category,
    iban_initial, iban_changed."""
    vendor_changes: pl.DataFrame
    users: pl.DataFrame
    """user_id, department, level, approval_limit, is_service, title."""
    cost_centers: pl.DataFrame

    def canonical(self) -> dict[str, pl.DataFrame]:
        """Each table in its ``detect.schema.MASTER_SCHEMAS`` shape."""
        out = {}
        for name in MASTER_SCHEMAS:
            frame: pl.DataFrame = getattr(self, name)
            schema = MASTER_SCHEMAS[name]
            out[name] = frame.select([pl.col(c).cast(t) for c, t in schema.items()])
        return out


class Writer(Protocol):
    def write(self, frame: pl.DataFrame) -> None: ...

    def close(self, master: MasterData) -> None: ...


def _registry() -> dict[str, type]:
    from sample_data.writers.ads import AdsWriter
    from sample_data.writers.canonical import ParquetWriter
    from sample_data.writers.datev import DatevWriter
    from sample_data.writers.sap import SapWriter

    return {"parquet": ParquetWriter, "ads": AdsWriter, "datev": DatevWriter, "sap": SapWriter}


class _Lazy(dict):
    def __missing__(self, key: str) -> type:
        self.update(_registry())
        return dict.__getitem__(self, key)


WRITERS: dict[str, type] = _Lazy()
"""Format name -> writer class ``(out_dir, year)``."""


def money(cents: pl.Expr, decimal: str = ".", thousands: str = "") -> pl.Expr:
    """Absolute amount in cents -> text like ``1234.56``, ``1234,56`` or ``1.234,56``."""
    a = cents.abs()
    euros, ct = a // 100, (a % 100).cast(pl.String).str.zfill(2)
    if thousands:
        grp = lambda e: e.cast(pl.String).str.zfill(3)  # noqa: E731
        t = thousands
        whole = (pl.when(euros >= 10**9).then(pl.format(
            "{}{}{}{}{}{}{}", euros // 10**9, pl.lit(t), grp(euros // 10**6 % 1000), pl.lit(t),
            grp(euros // 1000 % 1000), pl.lit(t), grp(euros % 1000)))
            .when(euros >= 10**6).then(pl.format(
                "{}{}{}{}{}", euros // 10**6, pl.lit(t), grp(euros // 1000 % 1000), pl.lit(t),
                grp(euros % 1000)))
            .when(euros >= 1000).then(pl.format("{}{}{}", euros // 1000, pl.lit(t),
                                                grp(euros % 1000)))
            .otherwise(euros.cast(pl.String)))
    else:
        whole = euros.cast(pl.String)
    return pl.format("{}{}{}", whole, pl.lit(decimal), ct)


def write_csv_chunk(frame: pl.DataFrame, path: Path, *, header: bool, sep: str = ",",
                    quote_style: str = "necessary", crlf: bool = False,
                    encoding: str = "utf-8", slice_rows: int = 200_000) -> None:
    """Append ``frame`` to ``path`` as delimited text in the given encoding.

    UTF-8 goes straight from Polars to the file; other encodings are transcoded in slices, so
    no month of a 10M-line ledger is ever one Python string.
    """
    eol = "\r\n" if crlf else "\n"
    with path.open("ab") as fh:
        if encoding.replace("-", "").lower() == "utf8":
            frame.write_csv(fh, separator=sep, include_header=header, quote_style=quote_style,
                            line_terminator=eol)
            return
        for i, part in enumerate(frame.iter_slices(slice_rows)):
            text = part.write_csv(separator=sep, include_header=header and i == 0,
                                  quote_style=quote_style, line_terminator=eol)
            fh.write(text.encode(encoding, errors="replace"))
