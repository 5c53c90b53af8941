"""The same generated ledger, exported as AICPA ADS, DATEV EXTF and SAP BKPF/BSEG, ingests
(``detect.ingest.ingest``) to the same journals, the same totals and the expected line counts.

DATEV books each row on Konto against Gegenkonto, so a journal with n lines becomes n-1 rows
and reads back as 2(n-1) lines; an unbalanced journal cannot exist in DATEV (its anchor line is
implied by the others), so only its debit side survives there.
"""

from __future__ import annotations

import importlib.util
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from detect.config import Settings
from detect.ingest import detect_format, ingest
from sample_data.generate import generate

LINES, SEED = 6000, 21
READERS = {"ads": "detect.ingest.ads", "datev": "detect.ingest.datev", "sap": "detect.ingest.sap"}


def _reader(fmt: str) -> pytest.MarkDecorator:
    present = importlib.util.find_spec(READERS[fmt]) is not None
    return pytest.mark.skipif(not present, reason=f"reader {READERS[fmt]} is not there yet")


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("formats")
    generate(LINES, SEED, out, ["parquet", "ads", "datev", "sap"])
    book = pl.read_parquet(out / "bookings.parquet")
    labels = pl.read_csv(out / "labels.csv", schema_overrides={"journal_id": pl.String})
    unbalanced = labels.filter(pl.col("scenario") == "unbalanced_journal")["journal_id"]
    return {"out": out, "book": book, "unbalanced": unbalanced,
            "work": tmp_path_factory.mktemp("work")}


def _read(ledger: dict, fmt: str) -> tuple[pl.DataFrame, object]:
    folder = ledger["out"] / fmt
    assert detect_format(sorted(p for p in folder.iterdir() if p.is_file())) == fmt
    result = ingest([folder], "auto", Settings(), ledger["work"] / fmt)
    df = result.bookings.collect()
    assert df["ingest_issue"].null_count() == df.height, df["ingest_issue"].drop_nulls()[:3]
    return df, result


# journal attributes every format must carry over; SAP's source is the transaction code
PER_JOURNAL = ["document_date", "source", "document_type", "reference", "reversal_of",
               "entered_by", "approved_by", "entered_at"]
TCODE_CLASS = {"F110": "payment_run", "RFBIBL00": "interface"}


def _per_journal(df: pl.DataFrame) -> pl.DataFrame:
    return df.group_by("journal_id").agg(pl.col(c).drop_nulls().first() for c in PER_JOURNAL) \
        .sort("journal_id")


def _assert_same_journal_attributes(df: pl.DataFrame, book: pl.DataFrame) -> None:
    ours, theirs = _per_journal(df), _per_journal(book)
    assert ours["journal_id"].equals(theirs["journal_id"])
    for col in PER_JOURNAL:
        differ = ours.filter(~pl.col(col).eq_missing(theirs[col]))
        assert differ.height == 0, (col, differ.select("journal_id", col).head(3).rows())


def _totals(df: pl.DataFrame) -> tuple[Decimal, Decimal]:
    return (df.filter(pl.col("amount") > 0)["amount"].sum(),
            df.filter(pl.col("amount") < 0)["amount"].sum())


@_reader("ads")
def test_ads_reads_back_exactly(ledger: dict) -> None:
    book = ledger["book"]
    df, result = _read(ledger, "ads")
    assert df.height == book.height
    assert set(df["journal_id"]) == set(book["journal_id"])
    assert _totals(df) == _totals(book)
    key = ["journal_id", "line_no"]
    cols = ["posting_date", "document_date", "entered_at", "entered_by", "approved_by",
            "gl_account", "amount", "cost_center", "vendor_id", "reference", "bank_account",
            "reversal_of", "source", "document_type"]
    mine = book.select(key + cols).sort(key)
    theirs = df.select(key + cols).with_columns(pl.col("line_no").cast(pl.Int32)).sort(key)
    assert theirs.equals(mine)
    assert {"accounts", "vendors", "users", "vendor_changes", "cost_centers"} <= set(result.master)


@_reader("sap")
def test_sap_reads_back_the_same_ledger(ledger: dict) -> None:
    book = ledger["book"]
    df, result = _read(ledger, "sap")
    assert df.height == book.height
    assert set(df["journal_id"]) == set(book["journal_id"])
    assert _totals(df) == _totals(book)
    per = lambda f: f.group_by("journal_id").agg(pl.col("amount").sum())  # noqa: E731
    assert per(df).sort("journal_id").equals(per(book).sort("journal_id"))
    # park and post: PPNAM keyed, USNAM posted = approved (self-approvals included)
    _assert_same_journal_attributes(
        df.with_columns(pl.col("source").replace_strict(TCODE_CLASS, default="manual")), book)
    # payee IBANs come from REGUH on the vendor lines of payments
    pays = book.filter(pl.col("document_type").is_in(["ZP", "KZ"])
                       & (pl.col("gl_account") == "181000"))
    got = df.filter(pl.col("bank_account").is_not_null())
    assert set(got["bank_account"]) == set(pays["bank_account"])
    assert result.master["vendor_changes"].height > 0
    assert result.master["vendors"].height >= book["vendor_id"].n_unique()


@_reader("datev")
def test_datev_reads_back_with_the_two_line_expansion(ledger: dict) -> None:
    book, unbalanced = ledger["book"], ledger["unbalanced"]
    df, result = _read(ledger, "datev")
    journals = book["journal_id"].n_unique()
    assert df.height == 2 * (book.height - journals)
    assert set(df["journal_id"]) == set(book["journal_id"])
    debit, credit = _totals(book)
    d_debit, d_credit = _totals(df)
    assert d_debit == debit
    # per journal: the debit side is what the books say; unbalanced journals come out balanced
    per_debit = lambda f: f.filter(pl.col("amount") > 0).group_by("journal_id") \
        .agg(pl.col("amount").sum()).sort("journal_id")  # noqa: E731
    assert per_debit(df).equals(per_debit(book))
    ok = book.filter(~pl.col("journal_id").is_in(unbalanced.implode()))
    ok_df = df.filter(~pl.col("journal_id").is_in(unbalanced.implode()))
    assert _totals(ok_df) == _totals(ok)
    assert df.group_by("journal_id").agg(pl.col("amount").sum())["amount"].eq(0).all()
    assert d_credit == -d_debit
    imbalance = book.filter(pl.col("journal_id").is_in(unbalanced.implode()))["amount"].sum()
    assert credit - d_credit == imbalance  # the books' credits fall short by the imbalance
    # creditor personal accounts carry the vendor; the used IBAN comes via Geschäftspartnerbank
    assert set(df["vendor_id"].drop_nulls()) == set(
        book.filter(pl.col("gl_account").is_in(["351000", "352000"]))["vendor_id"].drop_nulls())
    paid = book.filter(pl.col("document_type").is_in(["ZP", "KZ"]))["bank_account"].drop_nulls()
    assert set(df["bank_account"].drop_nulls()) == set(paid)
    assert set(result.master) >= {"accounts", "vendors"}
    # the eight Beleginfo pairs and Belegfeld 2 carry the journal attributes
    _assert_same_journal_attributes(df, book)


def test_every_format_was_written(ledger: dict) -> None:
    out: Path = ledger["out"]
    assert (out / "ads" / "GL_Detail_20250101_20251231.csv").exists()
    assert len(list((out / "datev").glob("EXTF_Buchungsstapel_2025*.csv"))) == 12
    head = (out / "datev" / "EXTF_Buchungsstapel_202501.csv").read_bytes().split(b"\r\n")[0]
    fields = head.decode("cp1252").split(";")
    assert len(fields) == 31 and fields[:5] == ['"EXTF"', "700", "21", '"Buchungsstapel"', "13"]
    assert fields[13] == "6" and fields[14:16] == ["20250101", "20250131"]
    for name in ("BKPF", "BSEG", "REGUH", "LFA1", "LFBK", "SKAT", "CDHDR", "CDPOS"):
        raw = (out / "sap" / f"{name}.csv").read_bytes()
        assert raw.startswith(b"\xef\xbb\xbf") and b"\r\n" in raw, name


def test_private_payees_are_flagged_in_every_master(ledger: dict) -> None:
    """Kindertagespflege/foster parents are natural persons: each format says so its own way
    (ADS Supplier_Is_Person, SAP LFA1-STKZN, DATEV Adressattyp 1)."""
    canon = pl.read_parquet(ledger["out"] / "master" / "vendors.parquet")
    persons = set(canon.filter(pl.col("is_person"))["vendor_id"])
    assert 0 < len(persons) < canon.height
    for fmt in READERS:
        if importlib.util.find_spec(READERS[fmt]) is None:
            continue
        result = ingest([ledger["out"] / fmt], fmt, Settings(), ledger["work"] / f"m_{fmt}")
        vendors = result.master["vendors"]
        assert set(vendors.filter(pl.col("is_person"))["vendor_id"]) == persons, fmt
