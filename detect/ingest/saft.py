"""SAF-T Financial (OECD Standard Audit File - Tax): Norwegian 1.x and Portuguese 1.04 flavours.

The XML is read as a stream with expat (``pyexpat``) so memory stays bounded by the booking
lines kept, never by the document tree, and so every line knows its physical XML line for
``source_line``. Tags are matched by local name (namespace-agnostic): the Norwegian file has
``Transaction/Line/DebitAmount/Amount``, the Portuguese one ``Transaction/Lines/DebitLine/
DebitAmount`` - both are understood.

Mapped: ``GeneralLedgerEntries/Journal/Transaction/Line`` -> bookings; MasterFiles
``GeneralLedgerAccounts`` -> accounts, ``Suppliers`` -> vendors (first IBAN, else bank account
number), ``Customers`` -> a ``customers`` master frame (counted; no canonical use yet);
``NumberOfEntries/TotalDebit/TotalCredit`` -> overall control totals.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from xml.parsers import expat

import polars as pl

from detect.config import Settings
from detect.errors import IngestError
from detect.ingest import INGEST_SCHEMA, ControlTotals, IngestResult, InputFile
from detect.ingest.mapped import derive_fiscal_year, derive_period
from detect.ingest.parsing import gather_issues, parse_date, parse_datetime, parse_int, \
    strip_or_null
from detect.ingest.textio import decode_head, read_head, sha256_of
from detect.schema import AMOUNT, MASTER_SCHEMAS, conform

NAME = "saft"

LINE_FIELDS = ["journal", "journal_desc", "transaction", "tx_desc", "tx_date", "gl_date",
               "tx_entry", "source_id", "tx_supplier", "tx_customer", "period", "period_year",
               "tx_type", "archival", "record", "account", "description", "debit", "credit",
               "supplier", "customer", "reference", "source_document", "entry", "xml_line"]
TX_TAGS = {"TransactionID": "transaction", "Period": "period", "PeriodYear": "period_year",
           "TransactionDate": "tx_date", "GLPostingDate": "gl_date", "SystemEntryDate":
           "tx_entry", "SourceID": "source_id", "Description": "tx_desc", "SupplierID":
           "tx_supplier", "CustomerID": "tx_customer", "TransactionType": "tx_type",
           "DocArchivalNumber": "archival"}
LINE_TAGS = {"RecordID": "record", "AccountID": "account", "Description": "description",
             "SupplierID": "supplier", "CustomerID": "customer", "ReferenceNumber": "reference",
             "SourceDocumentID": "source_document", "SystemEntryDate": "entry"}
LINE_ELEMENTS = {"Line", "DebitLine", "CreditLine"}
RAW_SCHEMA = pl.Schema({f: pl.String() for f in LINE_FIELDS})
BATCH = 50_000
DATE_FORMATS = ["%Y-%m-%d"]
DATETIME_FORMATS = ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S"]


def sniff(path: Path, text: str) -> float:
    head = text[:4000]
    if re.search(r"<(\w+:)?AuditFile\b", head) and re.search(
            r"StandardAuditFile|SAF-?T", head, re.IGNORECASE):
        return 1.0
    return 0.0


@dataclass
class _State:
    """What the stream handler has seen so far."""

    stack: list[str] = field(default_factory=list)
    text: str = ""
    header: dict[str, str] = field(default_factory=dict)
    totals: dict[str, str] = field(default_factory=dict)
    journal: dict[str, str] = field(default_factory=dict)
    tx: dict[str, str] = field(default_factory=dict)
    line: dict[str, str] | None = None
    lines: list[tuple] = field(default_factory=list)
    """Lines not yet moved into ``batches`` (Python strings cost ~10x a Polars column)."""
    batches: list[pl.DataFrame] = field(default_factory=list)
    n_lines: int = 0

    def flush(self) -> None:
        if self.lines:
            self.batches.append(pl.DataFrame(self.lines, schema=RAW_SCHEMA, orient="row"))
            self.lines = []
    record: dict[str, str] = field(default_factory=dict)
    accounts: list[dict[str, str]] = field(default_factory=list)
    suppliers: list[dict[str, str]] = field(default_factory=list)
    customers: list[dict[str, str]] = field(default_factory=list)


def _parse(path: Path) -> _State:
    st = _State()
    parser = expat.ParserCreate(namespace_separator="}")
    parser.buffer_text = True

    sections = {"GeneralLedgerEntries": "gl", "MasterFiles": "master", "Header": "header"}
    section = [""]          # which top-level part we are in (cheaper than searching the stack)

    def start(name: str, _attrs: dict) -> None:
        local = name[name.rfind("}") + 1:]
        stack = st.stack
        stack.append(local)
        st.text = ""
        if local in sections and len(stack) == 2:
            section[0] = sections[local]
        elif section[0] == "gl":
            if local in LINE_ELEMENTS and stack[-2] in ("Transaction", "Lines"):
                st.line = {"xml_line": str(parser.CurrentLineNumber)}
            elif local == "Transaction":
                st.tx = {}
            elif local == "Journal":
                st.journal = {}
        elif section[0] == "master" and local in ("Account", "Supplier", "Customer"):
            st.record = {}

    def end(name: str) -> None:
        stack = st.stack
        local = stack.pop()
        value = st.text.strip()
        st.text = ""
        parent = stack[-1] if stack else ""
        where = section[0]
        if where == "gl":
            _gl_end(st, local, parent, stack[-2] if len(stack) > 1 else "", value)
        elif where == "master":
            _master_end(st, local, parent, stack[-2] if len(stack) > 1 else "", value)
        elif where == "header" and value:
            st.header.setdefault(local, value)
        if len(stack) == 1:
            section[0] = ""

    def chars(data: str) -> None:
        st.text += data

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    try:
        with open(path, "rb") as fh:
            parser.ParseFile(fh)
    except expat.ExpatError as exc:
        raise IngestError(f"not well-formed XML: {expat.ErrorString(exc.code)}",
                          file=str(path), line=exc.lineno,
                          hint="the file may be truncated or not SAF-T") from exc
    except LookupError as exc:
        raise IngestError(f"unknown XML encoding: {exc}", file=str(path)) from exc
    return st


def _gl_end(st: _State, local: str, parent: str, grand: str, value: str) -> None:
    if st.line is not None:
        if local in LINE_ELEMENTS:
            tx, j = st.tx, st.journal
            row = {"journal": j.get("JournalID"), "journal_desc": j.get("Description"),
                   **{v: tx.get(v) for v in TX_TAGS.values()}, **st.line}
            st.lines.append(tuple(row.get(f) for f in LINE_FIELDS))
            st.n_lines += 1
            if len(st.lines) >= BATCH:
                st.flush()
            st.line = None
        elif local in ("DebitAmount", "CreditAmount") and value:
            st.line[local[:-6].lower()] = value          # PT: amount text directly
        elif local == "Amount" and parent in ("DebitAmount", "CreditAmount"):
            st.line[parent[:-6].lower()] = value         # NO: DebitAmount/Amount
        elif local in LINE_TAGS and parent in LINE_ELEMENTS:
            st.line[LINE_TAGS[local]] = value
        return
    if parent == "Transaction" and local in TX_TAGS:
        st.tx[TX_TAGS[local]] = value
    elif parent == "Journal" and local in ("JournalID", "Description", "Type"):
        st.journal[local] = value
    elif parent == "GeneralLedgerEntries" and local in ("NumberOfEntries", "TotalDebit",
                                                         "TotalCredit"):
        st.totals[local] = value


def _master_end(st: _State, local: str, parent: str, grand: str, value: str) -> None:
    if local == "Account" and parent == "GeneralLedgerAccounts":
        st.accounts.append(st.record)
    elif local == "Supplier" and parent in ("Suppliers", "MasterFiles"):
        st.suppliers.append(st.record)
    elif local == "Customer" and parent in ("Customers", "MasterFiles"):
        st.customers.append(st.record)
    elif parent in ("Account", "Supplier", "Customer") and value:
        st.record.setdefault(local, value)
    elif parent == "BankAccount" and grand == "Supplier" and value:
        st.record.setdefault(f"Bank{local}", value)


def _amount(raw: pl.Expr, column: str) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """SAF-T amounts are plain xs:decimal, sometimes with 3-4 places (PT): round to cents."""
    text = strip_or_null(raw)
    exact = text.cast(pl.Decimal(38, 6), strict=False)
    bad = text.is_not_null() & exact.is_null()
    issue = pl.when(bad).then(pl.format("{}: '{}' is not a valid amount", pl.lit(column), text))
    rounded = exact.round(2)
    return rounded.cast(AMOUNT), issue, (exact != rounded).fill_null(False)


@dataclass
class _Facts:
    """What reading the lines found out, for warnings and control totals."""

    rounded: int
    exact: dict[str, Decimal]
    renumbered: list[str]


def _bookings(st: _State, path: Path, settings: Settings) -> tuple[pl.LazyFrame, _Facts]:
    st.flush()
    raw = pl.concat(st.batches).lazy() if st.batches else pl.LazyFrame(schema=RAW_SCHEMA)
    gl_date, i1 = parse_date(pl.coalesce(pl.col("gl_date"), pl.col("tx_date")), "GLPostingDate",
                             DATE_FORMATS)
    doc_date, i2 = parse_date(pl.col("tx_date"), "TransactionDate", DATE_FORMATS)
    entry, i3 = parse_datetime(pl.coalesce(pl.col("entry"), pl.col("tx_entry")),
                               "SystemEntryDate", DATETIME_FORMATS + DATE_FORMATS)
    debit, i4, r1 = _amount(pl.col("debit"), "DebitAmount")
    credit, i5, r2 = _amount(pl.col("credit"), "CreditAmount")
    record, i6 = parse_int(pl.col("record"), "RecordID")
    period, i7 = parse_int(pl.col("period"), "Period")
    year, i8 = parse_int(pl.col("period_year"), "PeriodYear")
    both = pl.col("debit").is_not_null() & pl.col("credit").is_not_null()
    neither = pl.col("debit").is_null() & pl.col("credit").is_null()
    i9 = pl.when(both).then(pl.lit("Line has both DebitAmount and CreditAmount")) \
        .when(neither).then(pl.lit("Line has neither DebitAmount nor CreditAmount"))
    fy_header = st.header.get("FiscalYear") or st.header.get("PeriodStartYear")
    start = settings.fiscal_year_start_month
    header_start = st.header.get("StartDate")
    if header_start and re.match(r"\d{4}-\d{2}", header_start):
        start = int(header_start[5:7])
    fiscal = pl.coalesce(year.cast(pl.Int32),
                         pl.lit(int(fy_header) if fy_header and fy_header.isdigit() else None,
                                dtype=pl.Int32),
                         derive_fiscal_year(gl_date, start))
    entity = settings.entity if settings.entity != "default" else (
        st.header.get("Name") or st.header.get("CompanyName") or settings.entity)
    journal_id = pl.coalesce(pl.col("transaction"), pl.col("archival"))
    frame = raw.with_columns(
        pl.lit(entity).alias("entity"),
        fiscal.alias("fiscal_year"),
        pl.coalesce(period.cast(pl.Int32), derive_period(gl_date, start)).alias("period"),
        journal_id.alias("journal_id"),
        record.cast(pl.Int32).alias("line_no"),
        pl.col("record").alias("__record_id"),
        gl_date.alias("posting_date"),
        doc_date.alias("document_date"),
        entry.alias("entered_at"),
        strip_or_null(pl.col("source_id")).alias("entered_by"),
        pl.col("account").alias("gl_account"),
        pl.coalesce(debit, -credit).alias("amount"),
        pl.lit(st.header.get("DefaultCurrencyCode") or st.header.get("CurrencyCode")
               or settings.currency).alias("currency"),
        pl.coalesce(pl.col("description"), pl.col("tx_desc")).alias("description"),
        pl.col("tx_desc").alias("header_description"),
        pl.col("journal").alias("document_type"),
        pl.col("tx_type").alias("source"),
        pl.coalesce(pl.col("supplier"), pl.col("tx_supplier")).alias("vendor_id"),
        pl.coalesce(pl.col("reference"), pl.col("source_document")).alias("reference"),
        pl.lit(str(path)).alias("source_file"),
        pl.col("xml_line").cast(pl.Int64).alias("source_line"),
        gather_issues([i1, i2, i3, i4, i5, i6, i7, i8, i9]),
        (r1 | r2).alias("__rounded"),
        strip_or_null(pl.col("debit")).cast(pl.Decimal(38, 6), strict=False).alias("__d"),
        strip_or_null(pl.col("credit")).cast(pl.Decimal(38, 6), strict=False).alias("__c"),
    )
    # TransactionIDs are unique per file in practice; if not, qualify them by journal.
    dup = frame.select(pl.col("journal_id").n_unique().alias("a"),
                       pl.struct("journal", "journal_id").n_unique().alias("b")).collect()
    if dup["a"][0] != dup["b"][0]:
        frame = frame.with_columns(pl.concat_str(pl.col("journal"), pl.lit("/"),
                                                 pl.col("journal_id")).alias("journal_id"))
    # RecordID is the line number; where it is missing or repeats inside a transaction (the
    # PT demo has two such), the line's position in the transaction is used instead.
    position = pl.col("source_line").rank("ordinal").over("journal_id").cast(pl.Int32)
    repeated = (pl.col("line_no").is_null() | pl.col("line_no").is_duplicated()) \
        .any().over("journal_id")
    frame = frame.with_columns(repeated.alias("__renumbered")).with_columns(
        pl.when(pl.col("__renumbered")).then(position).otherwise(pl.col("line_no"))
        .alias("line_no"))
    renumbered = frame.filter(pl.col("__renumbered") & pl.col("__record_id").is_not_null()) \
        .select(pl.col("journal_id").unique(maintain_order=True)).collect()["journal_id"]
    stats = frame.select(pl.col("__rounded").sum(), pl.col("__d").sum(), pl.col("__c").sum(),
                         pl.col("amount").filter(pl.col("amount") > 0).sum().alias("__dc"),
                         (-pl.col("amount").filter(pl.col("amount") < 0).sum()).alias("__cc")
                         ).collect().row(0)
    exact = {"debit": Decimal(stats[1] or 0), "credit": Decimal(stats[2] or 0),
             "debit_cents": Decimal(stats[3] or 0), "credit_cents": Decimal(stats[4] or 0)}
    return conform(frame, INGEST_SCHEMA), _Facts(int(stats[0]), exact, renumbered.to_list())


def _master(st: _State) -> dict[str, pl.DataFrame]:
    accounts = pl.DataFrame({
        "gl_account": [a.get("AccountID") for a in st.accounts],
        "account_name": [a.get("AccountDescription") for a in st.accounts],
    }, schema={"gl_account": pl.String, "account_name": pl.String})
    vendors = pl.DataFrame({
        "vendor_id": [s.get("SupplierID") for s in st.suppliers],
        "vendor_name": [s.get("Name") or s.get("CompanyName") for s in st.suppliers],
        "bank_account": [_bank(s) for s in st.suppliers],
    }, schema={"vendor_id": pl.String, "vendor_name": pl.String, "bank_account": pl.String})
    customers = pl.DataFrame({
        "customer_id": [c.get("CustomerID") for c in st.customers],
        "customer_name": [c.get("Name") or c.get("CompanyName") for c in st.customers],
        "gl_account": [c.get("AccountID") for c in st.customers],
    }, schema={"customer_id": pl.String, "customer_name": pl.String, "gl_account": pl.String})
    return {"accounts": conform(accounts.lazy(), MASTER_SCHEMAS["accounts"]).collect(),
            "vendors": conform(vendors.lazy(), MASTER_SCHEMAS["vendors"]).collect(),
            "customers": customers}


def _bank(supplier: dict[str, str]) -> str | None:
    iban = supplier.get("BankIBANNumber")
    if iban and re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{8,30}", iban.replace(" ", "")):
        return iban.replace(" ", "")
    return supplier.get("BankBankAccountNumber") or None


def _decimal(value: str | None) -> Decimal | None:
    try:
        return Decimal(value) if value else None
    except InvalidOperation:
        return None


def read(files: list[Path], settings: Settings, workdir: Path) -> IngestResult:
    result = IngestResult(NAME, pl.LazyFrame())
    frames: list[pl.LazyFrame] = []
    masters: dict[str, list[pl.DataFrame]] = {}
    for path in files:
        if path.stat().st_size == 0:
            raise IngestError("file is empty", file=str(path))
        if sniff(path, decode_head(read_head(path))) < 0.5:
            result.ignored.append(str(path))
            continue
        st = _parse(path)
        if not st.n_lines:
            raise IngestError("SAF-T file has no GeneralLedgerEntries lines", file=str(path))
        frame, facts = _bookings(st, path, settings)
        exact = facts.exact
        frames.append(frame)
        for name, df in _master(st).items():
            masters.setdefault(name, []).append(df)
        overall: dict[str, int | Decimal] = {}
        if st.totals.get("NumberOfEntries", "").isdigit():
            overall["journal_count"] = int(st.totals["NumberOfEntries"])
        for key, tag in (("debit", "TotalDebit"), ("credit", "TotalCredit")):
            if (v := _decimal(st.totals.get(tag))) is None:
                continue
            if -v.as_tuple().exponent > 2 and v == exact[key]:   # type: ignore[operator]
                # stated with more than cents (PT): checked here against the unrounded lines,
                # since the cent-rounded lines cannot match it exactly
                result.warnings.append(
                    f"{path.name}: {tag} {v} reconciles exactly with the unrounded lines; "
                    f"rounded to cents they sum to {exact[key + '_cents']}, so this total is "
                    "checked here and not passed on for the cent-exact reconciliation")
                continue
            overall[key] = v
        if overall:
            result.control_totals.append(ControlTotals(str(path), None, overall))  # type: ignore[arg-type]
        result.inputs.append(InputFile(str(path), sha256_of(path), path.stat().st_size,
                                       rows=st.n_lines))
        result.warnings.append(
            f"{path.name}: SAF-T {st.header.get('AuditFileVersion', '?')} "
            f"({st.header.get('AuditFileCountry') or st.header.get('Country', '?')}): "
            f"{st.n_lines} lines, {len(st.accounts)} accounts, {len(st.suppliers)} "
            f"suppliers, {len(st.customers)} customers")
        if facts.renumbered:
            ids = facts.renumbered
            result.warnings.append(
                f"{path.name}: RecordID repeats inside {len(ids)} transaction(s) "
                f"({', '.join(ids[:5])}); their lines are numbered by position instead")
        if facts.rounded:
            result.warnings.append(f"{path.name}: {facts.rounded} amounts had more than two decimal "
                                   "places and were rounded to cents (half to even)")
    if not frames:
        raise IngestError("no SAF-T AuditFile in the delivery",
                          file=", ".join(str(f) for f in files[:3]))
    result.bookings = pl.concat(frames, how="vertical")
    result.master = {k: pl.concat(v, how="vertical") for k, v in masters.items()}
    return result
