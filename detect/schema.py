"""The canonical booking schema and the master-data schemas.

Every ingest module produces exactly ``BOOKING_SCHEMA`` (absent columns are null), so that
validation, rules, models and the app are written once against one shape. Column names follow
the AICPA Audit Data Standard (GL_Detail) in snake_case.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

AMOUNT = pl.Decimal(18, 2)
"""Exact money type: amounts are never floats (sums must reconcile to the cent)."""


@dataclass(frozen=True)
class Column:
    name: str
    dtype: pl.DataType
    required: bool
    doc: str


def _schema(columns: list[Column]) -> pl.Schema:
    return pl.Schema({c.name: c.dtype for c in columns})


BOOKING_COLUMNS: list[Column] = [
    Column("entity", pl.String(), True, "legal entity / municipality"),
    Column("fiscal_year", pl.Int32(), True, "fiscal year the line belongs to"),
    Column("period", pl.Int32(), False, "posting period (1-12, 13+ for closing periods)"),
    Column("journal_id", pl.String(), True, "document / journal number"),
    Column("line_no", pl.Int32(), True, "line within the journal"),
    Column("posting_date", pl.Date(), True, "effective / posting date"),
    Column("document_date", pl.Date(), False, "date on the voucher"),
    Column("entered_at", pl.Datetime("us"), False, "when the line was keyed in"),
    Column("entered_by", pl.String(), False, "user who entered the line"),
    Column("approved_by", pl.String(), False, "user who approved the journal"),
    Column("gl_account", pl.String(), True, "general-ledger account"),
    Column("amount", AMOUNT, True, "signed amount: debit > 0, credit < 0"),
    Column("currency", pl.String(), False, "ISO 4217 currency code"),
    Column("description", pl.String(), False, "line text"),
    Column("header_description", pl.String(), False, "journal header text"),
    Column("document_type", pl.String(), False, "document type (SAP BLART, ...)"),
    Column("source", pl.String(), False, "manual / interface / payment run ..."),
    Column("cost_center", pl.String(), False, "cost center"),
    Column("vendor_id", pl.String(), False, "creditor"),
    Column("reference", pl.String(), False, "invoice / external reference"),
    Column("bank_account", pl.String(), False, "payee IBAN (pseudonymised when stored)"),
    Column("reversal_of", pl.String(), False, "journal this one reverses"),
    Column("source_file", pl.String(), True, "file the row came from"),
    Column("source_line", pl.Int64(), True, "1-based physical line (or record) in source_file"),
]

BOOKING_SCHEMA: pl.Schema = _schema(BOOKING_COLUMNS)
REQUIRED_BOOKING_COLUMNS: tuple[str, ...] = tuple(c.name for c in BOOKING_COLUMNS if c.required)
BOOKING_KEY: tuple[str, ...] = ("entity", "fiscal_year", "journal_id", "line_no")
"""A booking line is identified by this key; re-exports replace lines with the same key."""
JOURNAL_KEY: tuple[str, ...] = ("entity", "fiscal_year", "journal_id")


def key_hash(columns: tuple[str, ...] | list[str] = BOOKING_KEY) -> pl.Expr:
    """64-bit hash of a row's line (``BOOKING_KEY``) or journal (``JOURNAL_KEY``) key, the same
    on every frame whatever its key dtypes. Why: narrowing a join on two string key columns by
    a hash first is ~10x cheaper; callers still check exactly (hashes can collide)."""
    return pl.struct([pl.col(c).cast(pl.Int32 if c in ("fiscal_year", "line_no") else pl.String)
                      for c in columns]).hash(seed=7)

ACCOUNT_COLUMNS: list[Column] = [
    Column("gl_account", pl.String(), True, "account number"),
    Column("account_name", pl.String(), False, "account name"),
    Column("account_type", pl.String(), False,
           "asset | liability | equity | revenue | expense | bank | cash"),
]
VENDOR_COLUMNS: list[Column] = [
    Column("vendor_id", pl.String(), True, "creditor id"),
    Column("vendor_name", pl.String(), False, "name (pseudonymised for natural persons)"),
    Column("bank_account", pl.String(), False, "IBAN on file (pseudonymised when stored)"),
    Column("created_at", pl.Date(), False, "date the vendor was created"),
    Column("is_person", pl.Boolean(), False, "natural person (private payee)"),
]
VENDOR_CHANGE_COLUMNS: list[Column] = [
    Column("vendor_id", pl.String(), True, "creditor id"),
    Column("changed_at", pl.Datetime("us"), True, "when the change was made"),
    Column("field", pl.String(), True, "changed field, e.g. bank_account"),
    Column("old_value", pl.String(), False, "value before"),
    Column("new_value", pl.String(), False, "value after"),
    Column("changed_by", pl.String(), False, "user who changed it"),
]
USER_COLUMNS: list[Column] = [
    Column("user_id", pl.String(), True, "user name as it appears in entered_by"),
    Column("department", pl.String(), False, "department / Amt"),
    Column("approval_limit", AMOUNT, False, "largest amount the user may post or approve"),
    Column("is_service", pl.Boolean(), False, "technical / interface account"),
]
COST_CENTER_COLUMNS: list[Column] = [
    Column("cost_center", pl.String(), True, "cost center"),
    Column("cost_center_name", pl.String(), False, "name"),
    Column("department", pl.String(), False, "department that owns it"),
]

MASTER_COLUMNS: dict[str, list[Column]] = {
    "accounts": ACCOUNT_COLUMNS,
    "vendors": VENDOR_COLUMNS,
    "vendor_changes": VENDOR_CHANGE_COLUMNS,
    "users": USER_COLUMNS,
    "cost_centers": COST_CENTER_COLUMNS,
}
MASTER_SCHEMAS: dict[str, pl.Schema] = {k: _schema(v) for k, v in MASTER_COLUMNS.items()}


def conform(frame: pl.LazyFrame, schema: pl.Schema = BOOKING_SCHEMA) -> pl.LazyFrame:
    """Select exactly ``schema``'s columns in order, adding absent ones as typed nulls.

    Ingest modules build what they can and call this last, so every format ends in the same shape.
    """
    present = frame.collect_schema().names()
    exprs = [
        (pl.col(name).cast(dtype) if name in present else pl.lit(None, dtype=dtype)).alias(name)
        for name, dtype in schema.items()
    ]
    return frame.select(exprs)


def empty_bookings() -> pl.DataFrame:
    return pl.DataFrame(schema=BOOKING_SCHEMA)


def empty_master(name: str) -> pl.DataFrame:
    return pl.DataFrame(schema=MASTER_SCHEMAS[name])
