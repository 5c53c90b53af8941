"""Ingest's canonical file becomes the clean bookings: same content as validation writing it.

With the data dir's pseudonym key, ingest pseudonymises bank accounts while it writes the
canonical columns in the clean file's layout; when nothing is quarantined validation keeps that
file (a link) instead of encoding every column again. Whatever path is taken, the clean file,
quarantine and findings must be those of the path without the key.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import polars as pl
import pytest

from detect import validate
from detect.ingest import IngestResult, ingest
from detect.privacy import IbanPseudonymiser, load_key, pseudonymise_iban
from detect.schema import BOOKING_SCHEMA
from validate_support import context, settings

HEADER = ("Journal_ID,Journal_ID_Line_Number,Business_Unit_Code,Effective_Date,Fiscal_Year,"
          "GL_Account_Number,Amount,Amount_Credit_Debit_Indicator,Amount_Currency,Bank_Account\n")
IBAN = "DE89370400440532013000"


def _delivery(folder: Path, *, unit_missing: bool, bad_currency: bool,
              second_file: bool = False) -> Path:
    folder.mkdir(parents=True)
    lines = [
        "1,1,MUS,2024-03-01,2024,5250000,100.00,D,EUR,de89 3704 0044 0532 0130 00",
        "1,2,MUS,2024-03-01,2024,1810000,100.00,C,EUR,",
        "2,1,MUS,2024-03-02,2024,5250000,50.00,D,EUR,DE02120300000000202051",
        f"2,2,{'' if unit_missing else 'MUS'},2024-03-02,2024,1810000,50.00,C,"
        f"{'EURO' if bad_currency else 'EUR'},DE02120300000000202051",
        f"3,1,ALT,2024-03-03,2024,5250000,7.00,D,EUR,{IBAN}",
        "3,2,ALT,2024-03-03,2024,1810000,7.00,C,EUR,",
    ]
    (folder / "GL_Detail_a.csv").write_text(HEADER + "\n".join(lines) + "\n", "utf-8")
    if second_file:  # a second GL file without business units (entity from the setting)
        (folder / "GL_Detail_b.csv").write_text(
            "Journal_ID,Effective_Date,GL_Account_Number,Amount,Bank_Account\n"
            f"4,2024-03-04,5250000,3.00,{IBAN.lower()}\n4,2024-03-04,1810000,-3.00,\n", "utf-8")
    return folder


def _cfg():
    return dataclasses.replace(settings(data_docs=False), entity="default")


def _ingest(folder: Path, work: Path, key: bytes | None) -> IngestResult:
    files = sorted(folder.iterdir())
    return ingest(files, "ads", _cfg(), work, pseudonym_key=key)


@pytest.mark.parametrize("second_file", [False, True])
@pytest.mark.parametrize("unit_missing", [False, True])
def test_ingest_with_the_key_pseudonymises_and_writes_the_canonical_file(
        tmp_path: Path, unit_missing: bool, second_file: bool) -> None:
    folder = _delivery(tmp_path / "in", unit_missing=unit_missing, bad_currency=False,
                       second_file=second_file)
    key = load_key(tmp_path / "var")
    plain = _ingest(folder, tmp_path / "w1", None).bookings.collect()
    keyed = _ingest(folder, tmp_path / "w2", key)
    got = keyed.bookings.collect()
    # everything as without the key, bank accounts pseudonymised as validation would
    assert got.drop("bank_account").equals(plain.drop("bank_account"))
    assert got["bank_account"].equals(pseudonymise_iban(plain, "bank_account", key)["bank_account"])
    assert IBAN not in got["bank_account"].to_list() and got["bank_account"].null_count() == \
        plain["bank_account"].null_count()
    assert keyed.pseudonym_key == key and keyed.bookings_file is not None
    on_disk = pl.read_parquet(keyed.bookings_file)
    assert on_disk.schema == BOOKING_SCHEMA
    assert on_disk.equals(got.select(list(BOOKING_SCHEMA)))
    # a journal naming its unit on one line only still gets it on every line
    assert plain.filter(pl.col("journal_id") == "2")["entity"].to_list() == ["MUS", "MUS"]


@pytest.mark.parametrize("bad_currency", [False, True])
@pytest.mark.parametrize("unit_missing", [False, True])
def test_clean_file_is_the_same_with_or_without_ingest_pseudonymising(
        tmp_path: Path, unit_missing: bool, bad_currency: bool) -> None:
    folder = _delivery(tmp_path / "in", unit_missing=unit_missing, bad_currency=bad_currency)
    outputs, modes = [], []
    for name, with_key in (("plain", False), ("keyed", True)):
        data = tmp_path / name
        if with_key:  # the same key as the plain run's data dir: the same pseudonyms
            (data / "secrets").mkdir(parents=True)
            shutil.copy(tmp_path / "plain" / "secrets" / "pseudonym.key",
                        data / "secrets" / "pseudonym.key")
        ctx = context(data, _cfg())
        key = load_key(data) if with_key else None
        ingested = _ingest(folder, ctx.run_dir / "tmp", key)
        result = validate.validate(ingested, ctx)
        result.wait_for_gx()
        assert result.rows_quarantined == (1 if bad_currency else 0)
        if with_key and not bad_currency:  # kept: ingest's file, linked
            assert result.clean_path.stat().st_ino == ingested.bookings_file.stat().st_ino
        else:
            assert result.clean_path.stat().st_ino != ingested.bookings_file.stat().st_ino
        modes.append(result.clean_path.stat().st_mode)
        outputs.append([pl.read_parquet(ctx.run_dir / f) for f in (
            "bookings.parquet", "quarantine.parquet", "validation_findings.parquet")])
    assert modes[0] == modes[1]  # a kept file is not left with a temporary file's mode
    for plain, keyed in zip(*outputs, strict=True):
        assert plain.schema == keyed.schema
        assert plain.equals(keyed)
    clean = outputs[1][0]
    assert clean.schema == BOOKING_SCHEMA
    assert clean["bank_account"].drop_nulls().str.contains("#").all()


def test_pseudonymiser_over_batches_equals_pseudonymising_the_whole_column(tmp_path: Path) -> None:
    """Ingest pseudonymises batch by batch, remembering the values seen: the same pseudonyms as
    one pass over the whole column, for values first seen in later batches and repeats."""
    key = load_key(tmp_path)
    values = pl.Series("bank_account", [IBAN, None, "de89 3704 0044 0532 0130 00", "",
                                        "DE02120300000000202051", IBAN.lower(), None,
                                        "DE**3000#abc", "DE02120300000000202051", IBAN])
    whole = pseudonymise_iban(values.to_frame(), "bank_account", key)["bank_account"]
    pseudonymise = IbanPseudonymiser(key)
    batches = [values.slice(0, 3), values.slice(3, 0), values.slice(3, 4), values.slice(7, 3)]
    got = pl.concat([pseudonymise(b) for b in batches])
    assert got.equals(whole) and IBAN not in got.to_list()
    assert pseudonymise.raw.n_unique() == pseudonymise.raw.len()  # each value hashed once


def test_ingest_in_several_batches_writes_the_same_bookings(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Both files of the one pass are written batch by batch (and the side file's rows must line
    up with the canonical file's): batches of 3 rows give the same bookings as one batch."""
    import pyarrow.parquet as pq

    import detect.ingest.bookings_file as bookings_file

    folder = _delivery(tmp_path / "in", unit_missing=True, bad_currency=True, second_file=True)
    (folder / "GL_Detail_c.csv").write_text(  # an ingest issue (a date that does not exist)
        "Journal_ID,Effective_Date,GL_Account_Number,Amount\n"
        "5,2024-03-05,5250000,4.00\n5,2024-02-30,1810000,-4.00\n", "utf-8")
    key = load_key(tmp_path / "var")
    whole = _ingest(folder, tmp_path / "w1", key)
    issues = whole.bookings.collect()["ingest_issue"]
    assert issues.null_count() == issues.len() - 1 and issues[-1] is not None
    monkeypatch.setattr(bookings_file, "ROW_GROUP", 3)
    batched = _ingest(folder, tmp_path / "w2", key)
    assert pq.ParquetFile(batched.bookings_file).metadata.num_row_groups > 1
    assert batched.bookings.collect().equals(whole.bookings.collect())
    assert pl.read_parquet(batched.bookings_file).equals(pl.read_parquet(whole.bookings_file))
