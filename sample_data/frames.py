"""The two internal frames of a month under construction, and builders for them.

``headers``: one row per journal (temporary integer key ``jk``, dates, users, source, reference,
scenario label). ``lines``: one row per journal line (account, signed amount in cents, cost
center, vendor, payee IBAN, text, ``anchor``). Amounts stay integer cents until the ledger is
written, so sums are exact and fast.

``anchor`` marks the one line that stands alone on its side of the journal (the single credit
against one or more debits, or vice versa). The DATEV writer books every other line against it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

HEADER_SCHEMA = pl.Schema({
    "jk": pl.Int64, "kind": pl.String, "posting_date": pl.Date, "document_date": pl.Date,
    "entered_at": pl.Datetime("us"), "entered_by": pl.String, "approved_by": pl.String,
    "source": pl.String, "document_type": pl.String, "reference": pl.String,
    "header_description": pl.String, "reversal_of": pl.String, "reversal_of_jk": pl.Int64,
    "scenario": pl.String,
})
LINE_SCHEMA = pl.Schema({
    "jk": pl.Int64, "line_no": pl.Int32, "gl_account": pl.String, "cents": pl.Int64,
    "cost_center": pl.String, "vendor_id": pl.String, "bank_account": pl.String,
    "description": pl.String, "anchor": pl.Boolean,
})


def _col(value: Any, n: int, dtype: pl.DataType) -> pl.Series:
    """A column of length ``n`` from an array, a list or a scalar (None = typed nulls)."""
    if isinstance(value, pl.Series):
        return value.cast(dtype)
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "M":
            return pl.Series(value).cast(dtype)
        if value.dtype.kind == "O":  # np.where(..., "x", None): strings with nulls
            return pl.Series(value.tolist(), dtype=dtype)
        return pl.Series(value).cast(dtype, strict=False)
    if isinstance(value, list):
        return pl.Series(value, dtype=dtype)
    return pl.repeat(value, n, dtype=dtype, eager=True)


def headers(n: int, **cols: Any) -> pl.DataFrame:
    """Build ``n`` journal headers; absent columns are nulls."""
    data = {name: _col(cols.get(name), n, dtype) for name, dtype in HEADER_SCHEMA.items()}
    return pl.DataFrame(data)


def lines(n: int, **cols: Any) -> pl.DataFrame:
    data = {name: _col(cols.get(name), n, dtype) for name, dtype in LINE_SCHEMA.items()}
    return pl.DataFrame(data)


def two_line(jk: np.ndarray, dr_account: Any, cr_account: Any, cents: np.ndarray, *,
             dr_cc: Any = None, cr_cc: Any = None, dr_vendor: Any = None,
             cr_vendor: Any = None, dr_bank: Any = None, cr_bank: Any = None,
             dr_text: Any = None, cr_text: Any = None) -> pl.DataFrame:
    """Debit line 1, credit line 2 (the anchor) for each journal key."""
    n = len(jk)
    debit = lines(n, jk=jk, line_no=1, gl_account=dr_account, cents=cents, cost_center=dr_cc,
                  vendor_id=dr_vendor, bank_account=dr_bank, description=dr_text, anchor=False)
    credit = lines(n, jk=jk, line_no=2, gl_account=cr_account, cents=-cents, cost_center=cr_cc,
                   vendor_id=cr_vendor, bank_account=cr_bank, description=cr_text, anchor=True)
    return pl.concat([debit, credit])


def empty_headers() -> pl.DataFrame:
    return pl.DataFrame(schema=HEADER_SCHEMA)


def empty_lines() -> pl.DataFrame:
    return pl.DataFrame(schema=LINE_SCHEMA)


def at_seconds(days: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    """datetime64[us] from day numbers and seconds after midnight."""
    return (days.astype("datetime64[D]").astype("datetime64[us]")
            + (seconds.astype(np.int64) * 1_000_000).astype("timedelta64[us]"))


def office_seconds(rng: np.random.Generator, n: int) -> np.ndarray:
    """Times people key in: morning and afternoon peaks between 07:00 and 17:30."""
    hour = np.where(rng.random(n) < 0.6, rng.normal(9.8, 1.2, n), rng.normal(14.0, 1.2, n))
    return (np.clip(hour, 7.0, 17.4) * 3600).astype(np.int64) + rng.integers(0, 60, n)


def night_seconds(rng: np.random.Generator, n: int) -> np.ndarray:
    """Batch interfaces run between 00:30 and 04:30."""
    return rng.integers(1800, 16200, n)


def round_cents(rng: np.random.Generator, median: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Lognormal amounts in cents; a tenth rounded to whole euros, a few to 50 euros."""
    euros = np.exp(rng.normal(np.log(median), sigma))
    euros = np.clip(euros, 1.0, 2_000_000.0)
    u = rng.random(len(euros))
    euros = np.where(u < 0.10, np.round(euros), euros)
    euros = np.where(u < 0.03, np.maximum(50.0, np.round(euros / 50.0) * 50.0), euros)
    return np.round(euros * 100).astype(np.int64)
