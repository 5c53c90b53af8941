"""The same generated ledger written as DATEV EXTF and as SAP BKPF/BSEG reads back to the same
journals, sums and journal attributes (DATEV's two-line expansion given its due)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from detect.config import Settings
from detect.ingest import ingest

generate = pytest.importorskip("sample_data.generate", reason="sample_data generator absent")

pytestmark = pytest.mark.slow  # generates a ledger and reads 14 DATEV + 8 SAP files

PER_JOURNAL = ["posting_date", "document_date", "entered_at", "entered_by", "approved_by",
               "document_type", "reversal_of", "reference", "source"]
# SAP's source is the transaction code; the generator writes these for its source classes
TCODE_CLASS = {"F110": "payment_run", "RFBIBL00": "interface"}


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ledger")
    generate.generate(lines=1500, seed=11, out=out, formats=["parquet", "datev", "sap"])
    return out


def _journals(df: pl.DataFrame) -> pl.DataFrame:
    return df.group_by("journal_id").agg(
        [pl.col(c).drop_nulls().first() for c in PER_JOURNAL]
        + [pl.col("amount").filter(pl.col("amount") > 0).sum().alias("debit")]).sort("journal_id")


@pytest.mark.parametrize("fmt", ["datev", "sap"])
def test_formats_agree_with_the_canonical_ledger(ledger: Path, tmp_path: Path, fmt: str) -> None:
    canon = pl.read_parquet(ledger / "bookings.parquet")
    result = ingest([ledger / fmt], "auto", Settings(entity="Musterstadt"), tmp_path)
    assert result.format == fmt
    df = result.bookings.collect()
    assert df["ingest_issue"].null_count() == df.height
    assert set(df["journal_id"]) == set(canon["journal_id"])
    if fmt == "sap":
        assert df.height == canon.height
    else:  # each DATEV row = one non-anchor line booked against its journal's anchor line
        assert df.height == 2 * (canon.height - canon["journal_id"].n_unique())
    ours, theirs = _journals(df), _journals(canon)
    if fmt == "sap":
        ours = ours.with_columns(pl.col("source").replace_strict(TCODE_CLASS, default="manual"))
    assert ours["debit"].sum() == theirs["debit"].sum()
    for col in PER_JOURNAL:
        assert ours[col].to_list() == theirs[col].to_list(), col
    assert {"vendors", "accounts"} <= set(result.master)
