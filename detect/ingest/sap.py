"""SAP FI ingest: BKPF (document headers) joined with BSEG (line items), or an ACDOCA-style single
table, plus the related tables users deliver alongside (REGUH, LFA1, LFBK, SKAT, CDHDR/CDPOS).

Tables are recognised by their header columns (``sap_tables.classify``), so ``belegwacht run
export/`` works on a folder of ``BKPF.csv``, ``BSEG.csv``, ``LFA1.csv`` ... whatever the files are
called. The locale (decimal mark, date order) is read from the values of each file.

Mapping (see docs/ingest_datev_sap.md): BUKRS -> entity (unless ``settings.entity`` is set),
GJAHR, MONAT, BELNR -> journal_id (leading zeros removed), BUZEI -> line_no, BUDAT, BLDAT,
CPUDT+CPUTM -> entered_at, USNAM (PPNAM when the document was parked) -> entered_by, the
posting USNAM of a parked document -> approved_by (also when it is the parker: that is the
self-approval the audit rules look for), HKONT,
DMBTR signed by SHKZG (S = debit +, H = credit -), HWAER/WAERS, SGTXT, BKTXT, BLART, TCODE,
KOSTL, LIFNR, XBLNR (else ZUONR) -> reference, STBLG -> reversal_of (on the reversing document).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from detect.config import Settings
from detect.errors import IngestError
from detect.ingest import INGEST_SCHEMA, InputFile, IngestResult
from detect.ingest.delimited import LINE, check_last_line, overflow_issue
from detect.ingest.parsing import (
    gather_issues,
    parse_date,
    parse_decimal,
    parse_int,
    strip_or_null,
)
from detect.ingest.sap_tables import SapTable, classify, detect_locale, header_tokens, open_table, \
    require, scan
from detect.ingest.textio import count_lines, ends_with_newline, sha256_of
from detect.schema import MASTER_SCHEMAS, conform

NAME = "sap"
KEYS = ("_bukrs", "_belnr", "_gjahr")
ACCOUNT_COLUMNS = ("HKONT", "SAKNR", "RACCT")
DATE_PLACEHOLDERS = ("", "00.00.0000", "00000000", "0000-00-00", "00/00/0000", "0")
ROLES = {"BSEG": "bookings", "ACDOCA": "bookings", "BKPF": "bookings", "REGUH": "bookings",
         "LFA1": "master:vendors", "LFBK": "master:vendors", "SKAT": "master:accounts",
         "CDHDR": "master:vendor_changes", "CDPOS": "master:vendor_changes"}


def sniff(path: Path, text: str) -> float:
    found = header_tokens(text)
    if found is None:
        return 0.0
    cols = set(found[1])
    if "BELNR" in cols and cols & {"BUKRS", "GJAHR", "RBUKRS"}:
        if (path.parent / "index.xml").exists():
            return 0.5  # a table of a GoBD export: its index.xml describes it (format gdpdu)
        return 0.95 if classify(cols) in ("BSEG", "BKPF", "ACDOCA") else 0.6
    return 0.0


# --- field helpers -------------------------------------------------------------------------------

class Fields:
    """Typed expressions over one table's string columns, collecting parse issues as it goes."""

    def __init__(self, table: SapTable) -> None:
        self.table = table
        self.issues: list[pl.Expr] = [overflow_issue("SAP")]

    def text(self, *names: str) -> pl.Expr:
        present = [strip_or_null(pl.col(n)) for n in names if n in self.table.columns]
        return pl.coalesce(present) if present else pl.lit(None, pl.String)

    def key(self, *names: str) -> pl.Expr:
        """Identifier with SAP's leading zeros removed (ALPHA conversion), so that exports with
        and without padding join and stay stable across deliveries."""
        raw = self.text(*names)
        stripped = raw.str.strip_chars_start("0")
        return pl.when(raw.str.contains(r"^\d+$")).then(
            pl.when(stripped == "").then(pl.lit("0")).otherwise(stripped)).otherwise(raw)

    def date(self, *names: str) -> pl.Expr:
        values = []
        for n in names:
            if n in self.table.columns:
                value, issue = parse_date(pl.col(n), n, self.table.locale.date_formats,
                                          DATE_PLACEHOLDERS)
                values.append(value)
                self.issues.append(issue)
        return pl.coalesce(values) if values else pl.lit(None, pl.Date)

    def amount(self, name: str) -> pl.Expr:
        loc = self.table.locale
        value, issue = parse_decimal(pl.col(name), name, decimal=loc.decimal,
                                     thousands=loc.thousands, allow_trailing_minus=True)
        self.issues.append(issue)
        return value

    def integer(self, *names: str) -> pl.Expr:
        for n in names:
            if n in self.table.columns:
                value, issue = parse_int(pl.col(n), n)
                self.issues.append(issue)
                return value
        return pl.lit(None, pl.Int64)

    def timestamp(self, date_col: str, time_col: str) -> pl.Expr:
        if date_col not in self.table.columns:
            return pl.lit(None, pl.Datetime("us"))
        day = self.date(date_col)
        if time_col not in self.table.columns:
            return day.cast(pl.Datetime("us"))
        raw = pl.col(time_col).str.strip_chars()
        digits = raw.str.replace_all(r"\D", "")
        ok = digits.str.contains(r"^\d{4}(\d{2})?$") | raw.is_null() | (raw == "")
        digits = pl.when(digits.str.len_chars() == 4).then(digits + "00").otherwise(digits)
        hours = digits.str.slice(0, 2).cast(pl.Int64, strict=False)
        pm = raw.str.to_uppercase().str.contains("PM")
        am = raw.str.to_uppercase().str.contains("AM")
        hours = pl.when(pm & (hours < 12)).then(hours + 12).when(am & (hours == 12)).then(0) \
            .otherwise(hours)
        seconds = (hours * 3600 + digits.str.slice(2, 2).cast(pl.Int64, strict=False) * 60
                   + digits.str.slice(4, 2).cast(pl.Int64, strict=False))
        self.issues.append(pl.when(~ok).then(pl.format("{}: '{}' is not a time (HH:MM:SS)",
                                                       pl.lit(time_col), raw.str.slice(0, 20))))
        return day.cast(pl.Datetime("us")) + pl.duration(seconds=seconds.fill_null(0))


def _prefix_issue(table: SapTable, issue: pl.Expr) -> pl.Expr:
    """Header issues travel to the lines: say which header file and line they come from."""
    return pl.when(issue.is_not_null()).then(
        pl.format("{} line {}: {}", pl.lit(table.path.name), pl.col(LINE), issue))


def _sample_locale(table: SapTable, workdir: Path) -> None:
    sample = scan(table, workdir).head(2000).collect()
    table.locale = detect_locale(table, sample)


# --- the tables ----------------------------------------------------------------------------------

def _lines(table: SapTable, workdir: Path, warnings: list[str]) -> pl.LazyFrame:
    """BSEG or ACDOCA rows -> per-line fields (header fields too, when the table carries them)."""
    check_last_line(table.path, table.encoding, table.sep, len(table.columns))
    require(table, "BELNR", what="document number")
    f = Fields(table)
    lf = scan(table, workdir)
    if "RLDNR" in table.columns:  # ACDOCA holds every ledger: keep the leading one
        ledgers = lf.select(pl.col("RLDNR").str.strip_chars().unique()).collect()["RLDNR"]
        if "0L" in ledgers.to_list() and ledgers.len() > 1:
            lf = lf.filter(pl.col("RLDNR").str.strip_chars() == "0L")
            warnings.append(f"{table.path}: only the leading ledger 0L is read (RLDNR)")
    if "DMBTR" in table.columns or "HSL" not in table.columns:
        amt_col = require(table, "DMBTR", what="amount in local currency")
        sh_col = require(table, "SHKZG", what="debit/credit indicator S/H")
        raw = f.amount(amt_col).abs()
        sh = pl.col(sh_col).str.strip_chars().str.to_uppercase()
        f.issues.append(pl.when(~sh.is_in(["S", "H"]) | sh.is_null()).then(
            pl.format("{}: '{}' is not S or H", pl.lit(sh_col), sh.fill_null(""))))
        amount = pl.when(sh == "H").then(-raw).when(sh == "S").then(raw)
    else:  # ACDOCA: HSL is signed already
        amount = f.amount("HSL")
    account = next((c for c in ACCOUNT_COLUMNS if c in table.columns), None)
    if account is not None:
        gl = f.key(account)
    elif "KOART" in table.columns:
        gl = pl.format("KOART:{}", f.text("KOART"))
        warnings.append(f"{table.path}: no G/L account column (HKONT/SAKNR/RACCT); gl_account is "
                        "the account type KOART (e.g. 'KOART:K' = vendor, 'KOART:S' = G/L) – "
                        "account-based rules will be coarse")
    else:
        require(table, *ACCOUNT_COLUMNS, what="G/L account")
        raise AssertionError  # require raised
    if not table.any("BUZEI", "DOCLN"):
        warnings.append(f"{table.path}: no BUZEI/DOCLN column; lines are numbered in file order")
    gl_issue = pl.when(gl.is_null()).then(pl.lit(f"{account or 'KOART'}: is empty"))
    f.issues.append(gl_issue)
    out = lf.select(
        f.text("BUKRS", "RBUKRS").alias("_bukrs"),
        f.key("BELNR").alias("_belnr"),
        f.text("GJAHR", "RYEAR").alias("_gjahr"),
        f.integer("BUZEI", "DOCLN").cast(pl.Int32).alias("line_no"),
        gl.alias("gl_account"),
        amount.alias("amount"),
        f.text("SGTXT").alias("description"),
        f.key("KOSTL", "RCNTR").alias("cost_center"),
        f.key("LIFNR").alias("vendor_id"),
        f.text("ZUONR").alias("_zuonr"),
        f.text("XBLNR").alias("_xblnr_l"),
        # header fields that BSEG (H_*) or ACDOCA carry themselves
        f.date("BUDAT", "H_BUDAT").alias("_budat_l"),
        f.date("BLDAT", "H_BLDAT").alias("_bldat_l"),
        f.integer("MONAT", "H_MONAT", "POPER").cast(pl.Int32).alias("_monat_l"),
        f.text("BLART", "H_BLART").alias("_blart_l"),
        f.text("USNAM").alias("_usnam_l"),
        f.text("RHCUR", "HWAER", "WAERS", "H_WAERS").alias("_waers_l"),
        f.text("TCODE").alias("_tcode_l"),
        f.timestamp("CPUDT", "CPUTM").alias("_cpu_l"),
        pl.lit(str(table.path)).alias("source_file"),
        pl.col(LINE).alias("source_line"),
        gather_issues(f.issues).alias("_issue_l"),
    )
    return out


def _headers(table: SapTable, workdir: Path) -> pl.LazyFrame:
    check_last_line(table.path, table.encoding, table.sep, len(table.columns))
    require(table, "BELNR", what="document number")
    f = Fields(table)
    lf = scan(table, workdir)
    belnr = f.key("BELNR")
    stblg = f.key("STBLG")
    stjah = f.text("STJAH")
    stjah = pl.when(stjah.is_null() | (stjah == "0000")).then(f.text("GJAHR")).otherwise(stjah)
    ppnam = f.text("PPNAM")
    usnam = f.text("USNAM")
    out = lf.select(
        f.text("BUKRS").alias("_bukrs"),
        belnr.alias("_belnr"),
        f.text("GJAHR").alias("_gjahr"),
        f.date("BUDAT").alias("_budat_h"),
        f.date("BLDAT").alias("_bldat_h"),
        f.integer("MONAT").cast(pl.Int32).alias("_monat_h"),
        f.timestamp("CPUDT", "CPUTM").alias("_cpu_h"),
        pl.coalesce(ppnam, usnam).alias("_usnam_h"),
        # parked (PPNAM set): the poster approved it, even when it is the parker himself
        pl.when(ppnam.is_not_null()).then(usnam).alias("_approved_h"),
        f.text("HWAER", "WAERS").alias("_waers_h"),
        f.text("BKTXT").alias("header_description"),
        f.text("BLART").alias("_blart_h"),
        f.text("TCODE", "AWTYP").alias("_tcode_h"),
        f.text("XBLNR").alias("_xblnr_h"),
        pl.when(stblg.is_not_null()).then(stblg).alias("_stblg"),
        stjah.alias("_stjah"),
        f.text("XREVERSAL").alias("_xrev"),
        pl.lit(True).alias("_has_header"),
        pl.col(LINE),
        gather_issues(f.issues).alias("_issue_raw"),  # last: after every parser added its issue
    )
    return out.with_columns(_prefix_issue(table, pl.col("_issue_raw")).alias("_issue_h")) \
        .drop("_issue_raw", LINE)


def _reversals(head: pl.LazyFrame) -> pl.LazyFrame:
    """``reversal_of`` per header: SAP writes STBLG on the reversed *and* on the reversing
    document. XREVERSAL (2 = reversal) decides when present; else, when the partner is in the
    delivery, the one entered later is the reversal (or the only one that names the other);
    when it is not, the one whose partner has the lower (year, number) is taken as the reversal."""
    partner = head.select(
        "_bukrs", pl.col("_belnr").alias("_stblg"), pl.col("_gjahr").alias("_stjah"),
        pl.col("_stblg").alias("_p_stblg"), pl.col("_cpu_h").alias("_p_cpu"),
        pl.lit(True).alias("_p_present")).unique(["_bukrs", "_stblg", "_stjah"])
    joined = head.join(partner, on=["_bukrs", "_stblg", "_stjah"], how="left", nulls_equal=False)
    num = lambda c: pl.col(c).str.zfill(12)  # noqa: E731
    later_entered = (pl.col("_cpu_h") > pl.col("_p_cpu")) | (
        (pl.col("_cpu_h") == pl.col("_p_cpu")) & (num("_belnr") > num("_stblg")))
    higher = (pl.col("_stjah") < pl.col("_gjahr")) | (
        (pl.col("_stjah") == pl.col("_gjahr")) & (num("_stblg") < num("_belnr")))
    is_reversal = (
        pl.when(pl.col("_stblg").is_null()).then(False)
        .when(pl.col("_xrev").is_not_null()).then(pl.col("_xrev") == "2")
        .when(pl.col("_p_present") & (pl.col("_p_stblg") == pl.col("_belnr")))
        .then(later_entered.fill_null(False))
        .when(pl.col("_p_present")).then(True)
        .otherwise(higher.fill_null(False)))
    return joined.with_columns(pl.when(is_reversal).then(pl.col("_stblg")).alias("reversal_of")) \
        .drop("_p_stblg", "_p_cpu", "_p_present", "_stblg", "_stjah", "_xrev")


def _payments(tables: list[SapTable], workdir: Path) -> pl.DataFrame | None:
    """REGUH: payee bank account per payment document (proposal runs excluded)."""
    frames = []
    for t in tables:
        _sample_locale(t, workdir)
        f = Fields(t)
        lf = scan(t, workdir)
        if "XVORL" in t.columns:
            lf = lf.filter(f.text("XVORL").is_null())
        iban = f.text("ZIBAN", "IBAN")
        local = pl.concat_str([f.text("ZBNKS"), f.text("ZBNKL", "ZBNKY"), f.text("ZBNKN")],
                              separator="/", ignore_nulls=True)
        frames.append(lf.select(
            f.text("ZBUKR", "BUKRS").alias("_bukrs"), f.key("VBLNR").alias("_belnr"),
            f.key("LIFNR").alias("_payee"),
            pl.coalesce(iban, pl.when(local != "").then(local)).str.replace_all(" ", "")
            .alias("_bank"),
            f.date("LAUFD").alias("_laufd")).collect())
    if not frames:
        return None
    df = pl.concat(frames, how="diagonal").filter(pl.col("_bank").is_not_null())
    return df.sort("_laufd", nulls_last=False).unique(["_bukrs", "_belnr"], keep="last")


def _vendors(lfa1: list[SapTable], lfbk: list[SapTable], workdir: Path) -> pl.DataFrame | None:
    if not lfa1 and not lfbk:
        return None
    banks = None
    if lfbk:
        parts = []
        for t in lfbk:
            f = Fields(t)
            local = pl.concat_str([f.text("BANKS"), f.text("BANKL"), f.text("BANKN")],
                                  separator="/", ignore_nulls=True)
            parts.append(scan(t, workdir).select(
                f.key("LIFNR").alias("vendor_id"),
                pl.coalesce(f.text("IBAN"), pl.when(local != "").then(local))
                .str.replace_all(" ", "").alias("bank_account")).collect())
        banks = pl.concat(parts).drop_nulls("vendor_id").unique("vendor_id", keep="first",
                                                                 maintain_order=True)
    base = None
    if lfa1:
        parts = []
        for t in lfa1:
            f = Fields(t)
            _sample_locale(t, workdir)
            name = pl.concat_str([f.text("NAME1"), f.text("NAME2")], separator=" ",
                                 ignore_nulls=True)
            parts.append(scan(t, workdir).select(
                f.key("LIFNR").alias("vendor_id"),
                pl.when(name != "").then(name).alias("vendor_name"),
                f.date("ERDAT").alias("created_at"),
                pl.when(f.text("STKZN").is_not_null()).then(f.text("STKZN") == "X")
                .otherwise(pl.lit(False) if "STKZN" in t.columns else pl.lit(None, pl.Boolean))
                .alias("is_person")).collect())
        base = pl.concat(parts).drop_nulls("vendor_id").unique("vendor_id", keep="first",
                                                               maintain_order=True)
    if base is None:
        out = banks
    elif banks is None:
        out = base
    else:
        out = base.join(banks, on="vendor_id", how="full", coalesce=True)
    return conform(out.lazy(), MASTER_SCHEMAS["vendors"]).collect()


def _accounts(skat: list[SapTable], settings: Settings, workdir: Path) -> pl.DataFrame | None:
    if not skat:
        return None
    lang = {"de": ["D", "DE"], "en": ["E", "EN"]}.get(settings.language, [])
    parts = []
    for t in skat:
        f = Fields(t)
        parts.append(scan(t, workdir).select(
            f.key("SAKNR").alias("gl_account"),
            pl.coalesce(f.text("TXT50"), f.text("TXT20")).alias("account_name"),
            (~f.text("SPRAS").str.to_uppercase().is_in(lang)).fill_null(True).alias("_rank"))
            .collect())
    df = pl.concat(parts).drop_nulls("gl_account").sort("_rank", maintain_order=True)
    df = df.unique("gl_account", keep="first", maintain_order=True)
    return conform(df.lazy(), MASTER_SCHEMAS["accounts"]).collect()


BANK_FIELDS = {"BANKN", "BANKL", "BANKS", "IBAN", "KOINH", "BKONT", "BVTYP", "SWIFT", "KEY"}


def _vendor_changes(cdhdr: list[SapTable], cdpos: list[SapTable],
                    workdir: Path) -> pl.DataFrame | None:
    """CDHDR + CDPOS of object class KRED (vendor) -> vendor_changes; bank fields become
    ``bank_account``."""
    if not cdhdr or not cdpos:
        return None
    heads = []
    for t in cdhdr:
        _sample_locale(t, workdir)
        f = Fields(t)
        heads.append(scan(t, workdir).select(
            f.text("OBJECTCLAS").alias("_cls"), f.text("OBJECTID").alias("_obj"),
            f.text("CHANGENR").alias("_nr"), f.text("USERNAME").alias("changed_by"),
            f.timestamp("UDATE", "UTIME").alias("changed_at")).collect())
    items = []
    for t in cdpos:
        f = Fields(t)
        items.append(scan(t, workdir).select(
            f.text("OBJECTCLAS").alias("_cls"), f.text("OBJECTID").alias("_obj"),
            f.text("CHANGENR").alias("_nr"), f.text("TABNAME").alias("_tab"),
            f.text("TABKEY").alias("_tabkey"), f.text("FNAME").alias("_fname"),
            f.text("CHNGIND").alias("_ind"), f.text("VALUE_OLD").alias("old_value"),
            f.text("VALUE_NEW").alias("new_value")).collect())
    head = pl.concat(heads, how="diagonal")
    pos = pl.concat(items, how="diagonal")
    df = pos.join(head.drop("_cls"), on=["_obj", "_nr"], how="left")
    df = df.filter(pl.col("_cls").is_null() | pl.col("_cls").str.starts_with("KRED"))
    bank = pl.col("_tab").is_in(["LFBK", "TIBAN"]) | pl.col("_fname").is_in(list(BANK_FIELDS))
    # inserting/deleting a bank line is logged as FNAME KEY with the bank in TABKEY
    key_value = pl.col("_tabkey").str.slice(13).str.strip_chars().str.replace_all(r"\s+", "/")
    df = df.select(
        pl.col("_obj").str.strip_chars_start("0").alias("vendor_id"),
        pl.col("changed_at"),
        pl.when(bank).then(pl.lit("bank_account"))
        .when(pl.col("_fname") == "NAME1").then(pl.lit("vendor_name"))
        .otherwise(pl.format("{}-{}", pl.col("_tab"), pl.col("_fname"))).alias("field"),
        pl.when((pl.col("_fname") == "KEY") & (pl.col("_ind") == "D")).then(key_value)
        .otherwise(pl.col("old_value")).alias("old_value"),
        pl.when((pl.col("_fname") == "KEY") & (pl.col("_ind") == "I")).then(key_value)
        .otherwise(pl.col("new_value")).alias("new_value"),
        pl.col("changed_by"),
    ).filter(pl.col("changed_at").is_not_null())
    return conform(df.lazy(), MASTER_SCHEMAS["vendor_changes"]).collect()


# --- read ----------------------------------------------------------------------------------------

def read(files: list[Path], settings: Settings, workdir: Path) -> IngestResult:
    warnings: list[str] = []
    ignored: list[str] = []
    inputs: list[InputFile] = []
    by_kind: dict[str, list[SapTable]] = {}
    empty: list[Path] = []
    for path in map(Path, files):
        if path.stat().st_size == 0:
            empty.append(path)
            continue
        table = open_table(path)
        if table is None or table.kind is None:
            ignored.append(str(path))
            continue
        by_kind.setdefault(table.kind, []).append(table)
        rows = count_lines(path) + (0 if ends_with_newline(path) else 1) - table.header_line
        inputs.append(InputFile(str(path), sha256_of(path), path.stat().st_size,
                                role=ROLES[table.kind], rows=max(rows, 0)))
        if rows <= 0:
            warnings.append(f"{path}: the {table.kind} table holds no rows")
    line_tables = by_kind.get("BSEG", []) + by_kind.get("ACDOCA", [])
    headers = by_kind.get("BKPF", [])
    if not line_tables:
        if headers:
            raise IngestError("only document headers (BKPF) were delivered; the line items "
                              "(BSEG or ACDOCA) are missing", file=str(headers[0].path),
                              hint="export table BSEG for the same documents")
        if empty:
            raise IngestError("file is empty", file=str(empty[0]))
        raise IngestError("no SAP line-item table (BSEG or ACDOCA) in the delivery",
                          file=str(files[0]) if len(files) == 1 else None,
                          hint="SAP tables are recognised by technical column names "
                               "(BELNR, BUZEI, HKONT, DMBTR, SHKZG ...)")
    for path in empty:
        warnings.append(f"{path}: file is empty; skipped")
        ignored.append(str(path))
    for t in line_tables + headers:
        _sample_locale(t, workdir)

    lines = pl.concat([_lines(t, workdir, warnings) for t in line_tables], how="vertical")
    if headers:
        head = pl.concat([_headers(t, workdir) for t in headers], how="vertical")
        head = _reversals(head.unique(list(KEYS), keep="first", maintain_order=True))
        lines = lines.join(head, on=list(KEYS), how="left", nulls_equal=True)
        missing_head = pl.when(pl.col("_has_header").is_null()).then(pl.format(
            "no BKPF header for document {}/{}/{}", pl.col("_bukrs").fill_null(""),
            pl.col("_belnr"), pl.col("_gjahr").fill_null("")))
    else:
        missing_head = pl.lit(None, pl.String)
        for name, dtype in (("_budat_h", pl.Date), ("_bldat_h", pl.Date), ("_monat_h", pl.Int32),
                            ("_cpu_h", pl.Datetime("us")), ("_usnam_h", pl.String),
                            ("_approved_h", pl.String), ("_waers_h", pl.String),
                            ("header_description", pl.String), ("_blart_h", pl.String),
                            ("_tcode_h", pl.String), ("_xblnr_h", pl.String),
                            ("reversal_of", pl.String), ("_issue_h", pl.String)):
            lines = lines.with_columns(pl.lit(None, dtype).alias(name))
        if not any(t.any("BUDAT", "H_BUDAT") for t in line_tables):
            raise IngestError("the line items carry no posting date and no BKPF (document "
                              "header) table was delivered", file=str(line_tables[0].path),
                              column="BUDAT", hint="export BKPF for the same documents")
    entity = pl.lit(settings.entity) if settings.entity and settings.entity != "default" \
        else pl.coalesce(pl.col("_bukrs"), pl.lit(settings.entity))
    posting = pl.coalesce("_budat_h", "_budat_l")
    fiscal_year = pl.coalesce(pl.col("_gjahr").cast(pl.Int32, strict=False),
                              posting.dt.year().cast(pl.Int32))
    journal = ["entity", "fiscal_year", "journal_id"]
    lines = lines.with_columns(
        entity.alias("entity"),
        fiscal_year.alias("fiscal_year"),
        pl.coalesce("_monat_h", "_monat_l").alias("period"),
        pl.col("_belnr").alias("journal_id"),
        posting.alias("posting_date"),
        pl.coalesce("_bldat_h", "_bldat_l").alias("document_date"),
        pl.coalesce("_cpu_h", "_cpu_l").alias("entered_at"),
        pl.coalesce("_usnam_h", "_usnam_l").alias("entered_by"),
        pl.col("_approved_h").alias("approved_by"),
        pl.coalesce("_waers_h", "_waers_l", pl.lit(settings.currency)).alias("currency"),
        pl.coalesce("_blart_h", "_blart_l").alias("document_type"),
        pl.coalesce("_tcode_h", "_tcode_l").alias("source"),
        pl.coalesce("_xblnr_h", "_xblnr_l", "_zuonr").alias("reference"),
        pl.concat_str([pl.col("_issue_l"), pl.col("_issue_h"), missing_head,
                       pl.when(posting.is_null() & pl.col("_issue_h").is_null()
                               & pl.col("_issue_l").is_null() & missing_head.is_null())
                       .then(pl.lit("BUDAT: posting date is empty"))],
                      separator="; ", ignore_nulls=True).alias("ingest_issue"),
    ).with_columns(pl.when(pl.col("ingest_issue") == "").then(None)
                   .otherwise(pl.col("ingest_issue")).alias("ingest_issue"))
    lines = lines.with_columns(pl.coalesce(
        pl.col("line_no"),
        pl.col("source_line").rank("ordinal").over(journal).cast(pl.Int32)).alias("line_no"))
    payments = _payments(by_kind.get("REGUH", []), workdir)
    if payments is not None:
        lines = lines.join(payments.lazy(), on=["_bukrs", "_belnr"], how="left")
        lines = lines.with_columns(pl.when(
            pl.col("_payee").is_null() | (pl.col("vendor_id") == pl.col("_payee")))
            .then(pl.col("_bank")).alias("bank_account"))
    lines = lines.sort(["source_file", "source_line"])
    bookings = conform(lines, INGEST_SCHEMA)

    master: dict[str, pl.DataFrame] = {}
    for name, frame in (
            ("vendors", _vendors(by_kind.get("LFA1", []), by_kind.get("LFBK", []), workdir)),
            ("accounts", _accounts(by_kind.get("SKAT", []), settings, workdir)),
            ("vendor_changes", _vendor_changes(by_kind.get("CDHDR", []),
                                               by_kind.get("CDPOS", []), workdir))):
        if frame is not None:
            master[name] = frame
    if bool(by_kind.get("CDHDR")) != bool(by_kind.get("CDPOS")):
        warnings.append("change documents need both CDHDR and CDPOS; vendor changes not read")
    return IngestResult(format=NAME, bookings=bookings, inputs=inputs, master=master,
                        control_totals=[], warnings=warnings, ignored=ignored)
