"""DATEV EXTF ingest: Buchungsstapel (category 21) -> canonical bookings, plus master files.

A Buchungsstapel row books ``Umsatz`` (always positive) on ``Konto`` against ``Gegenkonto``;
``Soll/Haben-Kennzeichen`` S debits Konto, H credits it. Each row therefore becomes two canonical
lines that balance. Master files in the same delivery are read too: Kontenbeschriftungen
(category 20) -> ``accounts``, Debitoren/Kreditoren (category 16) -> ``vendors`` (creditors only).

Journal and line mapping (stable, documented in docs/ingest_datev_sap.md):

- ``journal_id`` = ``Belegfeld 1`` when filled, else ``<erzeugt am>-<row>`` (the header's creation
  stamp and the 1-based data row), so rows without a voucher number stay separate journals;
- ``reference`` = Beleginfo "Referenz", else ``Belegfeld 2`` - never Belegfeld 1, which is the
  journal id already;
- ``line_no`` = ``MMDD`` of the Belegdatum * 100000 + position: the k-th row of a journal on
  that day (file order, then row) gives positions ``2k-1`` (Konto side) and ``2k`` (Gegenkonto
  side), e.g. 11500001/11500002 for the first row on 15 January. An invoice number reused by
  the payment on another day (often in a later delivery) thus never takes over the invoice's
  keys in the history.

Large files stream: the file is transcoded in chunks when it is not UTF-8 and scanned by Polars
as strings; no Python string ever holds the whole file.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import TypeVar

import polars as pl

from detect.config import Settings
from detect.errors import IngestError
from detect.ingest import INGEST_SCHEMA, InputFile, IngestResult
from detect.ingest.datev_header import (
    CATEGORIES,
    KNOWN_FORMAT_VERSIONS,
    ExtfHeader,
    Field,
    match_columns,
    read_extf_header,
    sniff_category,
)
from detect.ingest.delimited import (
    LINE,
    OVERFLOW,
    check_last_line,
    overflow_issue,
    scan_strings,
    utf8_source,
)
from detect.ingest.parsing import (
    gather_issues,
    parse_date,
    parse_datetime,
    strip_or_null,
)
from detect.ingest.textio import count_lines, decode_head, ends_with_newline, read_head, sha256_of
from detect.schema import AMOUNT, MASTER_SCHEMAS, conform

F = TypeVar("F", pl.DataFrame, pl.LazyFrame)
NAME = "datev"
SEP = ";"
LINE_DAY = 100_000
"""line_no = MMDD * LINE_DAY + position (up to 49,999 rows per voucher number and day)."""
BELEGINFO_PAIRS = 8

BOOKING_FIELDS: dict[str, Field] = {
    "umsatz": Field("Umsatz (ohne Soll/Haben-Kz)", ("umsatzohnesollhabenkz", "umsatz"), 0),
    "sh": Field("Soll/Haben-Kennzeichen", ("sollhabenkennzeichen", "sollhabenkz", "shkz"), 1),
    "wkz": Field("WKZ Umsatz", ("wkzumsatz",), 2),
    "basis": Field("Basis-Umsatz", ("basisumsatz",), 4),
    "wkz_basis": Field("WKZ Basis-Umsatz", ("wkzbasisumsatz",), 5),
    "konto": Field("Konto", ("konto", "kontonummer"), 6),
    "gegenkonto": Field("Gegenkonto (ohne BU-Schlüssel)", ("gegenkontoohnebuschlussel",
                                                            "gegenkonto"), 7),
    "belegdatum": Field("Belegdatum", ("belegdatum",), 9),
    "belegfeld1": Field("Belegfeld 1", ("belegfeld1",), 10),
    "belegfeld2": Field("Belegfeld 2", ("belegfeld2",), 11),
    "text": Field("Buchungstext", ("buchungstext",), 13),
    "gp_bank": Field("Geschäftspartnerbank", ("geschaftspartnerbank",), 16),
    "kost1": Field("KOST1 - Kostenstelle", ("kost1kostenstelle", "kost1"), 36),
    "herkunft": Field("Herkunft-Kz", ("herkunftkz",), None),
    "gu": Field("Generalumkehr (GU)", ("generalumkehrgu", "generalumkehr"), None),
}
for _i in range(1, BELEGINFO_PAIRS + 1):
    BOOKING_FIELDS[f"art{_i}"] = Field(f"Beleginfo - Art {_i}", (f"beleginfoart{_i}",),
                                       18 + 2 * _i)
    BOOKING_FIELDS[f"inhalt{_i}"] = Field(f"Beleginfo - Inhalt {_i}", (f"beleginfoinhalt{_i}",),
                                          19 + 2 * _i)
REQUIRED = ("umsatz", "sh", "konto", "gegenkonto", "belegdatum")

# Beleginfo-Art values (normalised: lower case, letters and digits only) we map
BELEGINFO_MAP: dict[str, tuple[str, ...]] = {
    "entered_by": ("benutzer", "benutzername", "erfasser", "erfasstvon", "user", "username",
                   "bearbeiter", "sachbearbeiter", "buchungsbenutzer"),
    "approved_by": ("freigabe", "freigegebenvon", "freigeber", "genehmiger", "genehmigtvon",
                    "approver", "approvedby", "anordnungsbefugter", "angeordnetvon"),
    "entered_at": ("erfassungsdatum", "erfassungszeitpunkt", "erfasstam", "zeitstempel",
                   "timestamp", "enteredat", "erfassungszeit"),
    "document_date": ("belegdatum", "rechnungsdatum", "dokumentdatum", "documentdate"),
    "document_type": ("belegart", "documenttype"),
    "source": ("quelle", "herkunft", "source"),
    "reference": ("referenz", "reference", "externereferenz"),
    "reversal_of": ("stornozu", "storniertbeleg", "reversalof", "storno"),
}
DATE_FORMATS = ("%d.%m.%Y", "%Y-%m-%d", "%d%m%Y", "%Y%m%d")
TIMESTAMP_FORMATS = ("%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%Y-%m-%d %H:%M:%S",
                     "%Y-%m-%dT%H:%M:%S", "%Y%m%d%H%M%S", "%d.%m.%Y", "%Y-%m-%d")

ACCOUNT_FIELDS = {
    "konto": Field("Konto", ("konto",), 0),
    "short": Field("Kontenbeschriftung", ("kontenbeschriftung", "kontobeschriftung"), 1),
    "long": Field("Kontenbeschriftung lang", ("kontenbeschriftunglang",
                                              "kontobeschriftunglang"), None),
}
VENDOR_FIELDS = {
    "konto": Field("Konto", ("konto",), 0),
    "company": Field("Name (Adressatentyp Unternehmen)", ("nameadressatentypunternehmen",
                                                          "nameadressattypunternehmen"), 1),
    "surname": Field("Name (Adressatentyp natürl. Person)", ("nameadressatentypnaturlperson",
                                                              "nameadressattypnaturlperson"), 3),
    "forename": Field("Vorname (Adressatentyp natürl. Person)",
                      ("vornameadressatentypnaturlperson", "vornameadressattypnaturlperson"), 4),
    "noname": Field("Name (Adressatentyp keine Angabe)", ("nameadressatentypkeineangabe",
                                                          "nameadressattypkeineangabe"), 5),
    "kind": Field("Adressatentyp", ("adressatentyp", "adressattyp"), 6),
    "short": Field("Kurzbezeichnung", ("kurzbezeichnung",), 7),
}
for _i in range(1, 6):
    VENDOR_FIELDS[f"iban{_i}"] = Field(f"IBAN {_i}", (f"iban{_i}", f"ibannr{_i}"), None)
    VENDOR_FIELDS[f"main{_i}"] = Field(f"Kennz. Hauptbankverb. {_i}",
                                       (f"kennzhauptbankverb{_i}",), None)


def sniff(path: Path, text: str) -> float:
    category = sniff_category(text)
    if category is None:
        return 0.0
    return 1.0 if category == 21 else 0.6


# --- the Buchungsstapel --------------------------------------------------------------------------

def _period(header: ExtfHeader) -> tuple[date, date]:
    """The batch period; falls back to the fiscal year that starts at WJ-Beginn."""
    start = header.period_from or header.fy_start
    end = header.period_to
    if end is None and header.fy_start is not None:
        fy = header.fy_start
        end = date(fy.year + 1, fy.month, fy.day) - timedelta(days=1)
    assert start is not None and end is not None  # fy_start is required for category 21
    return start, end


def _days_in_month(year: int, month: pl.Expr) -> pl.Expr:
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    return (pl.when(month == 2).then(29 if leap else 28)
            .when(month.is_in([4, 6, 9, 11])).then(30).otherwise(31))


def with_voucher_date(frame: F, raw: str, start: date, end: date, out: str,
                      issue_out: str) -> F:
    """Add ``out``: ``Belegdatum`` TTMM (or TMM, or TTMMJJJJ) in column ``raw`` as a date; the
    year is the one that puts the date nearest the batch period (a 2812 voucher in a January
    batch is last December's). ``issue_out`` says why a value is not a date.

    Built arithmetically in stages (each intermediate once): this runs on every row.
    """
    text = pl.col(raw).str.strip_chars()
    n = text.str.len_chars()
    ttmm = pl.when(n == 3).then(pl.lit("0") + text).otherwise(text)
    frame = frame.with_columns(
        text.alias("_vd_text"),
        (text.str.contains(r"^\d+$") & n.is_between(3, 4)).alias("_vd_short"),
        (text.str.contains(r"^\d{8}$")).alias("_vd_full"),
        ttmm.str.slice(0, 2).cast(pl.Int32, strict=False).alias("_vd_day"),
        ttmm.str.slice(2, 2).cast(pl.Int32, strict=False).alias("_vd_month"))
    day, month = pl.col("_vd_day"), pl.col("_vd_month")
    month_ok = month.is_between(1, 12)
    years = (end.year - 1, end.year, end.year + 1)
    frame = frame.with_columns([
        pl.when(pl.col("_vd_short") & month_ok & day.is_between(1, 31)
                & (day <= _days_in_month(year, month)))
        .then(pl.date(year, pl.when(month_ok).then(month).otherwise(1), 1)
              + pl.duration(days=day.fill_null(1) - 1)).alias(f"_vd_c{k}")
        for k, year in enumerate(years)])
    lo, hi = pl.lit(start), pl.lit(end)
    frame = frame.with_columns([
        (pl.when(pl.col(f"_vd_c{k}").is_null()).then(pl.lit(10**6, pl.Int64))
         .when(pl.col(f"_vd_c{k}") < lo).then((lo - pl.col(f"_vd_c{k}")).dt.total_days())
         .when(pl.col(f"_vd_c{k}") > hi).then((pl.col(f"_vd_c{k}") - hi).dt.total_days())
         .otherwise(pl.lit(0, pl.Int64))).alias(f"_vd_d{k}") for k in range(3)])
    d0, d1, d2 = (pl.col(f"_vd_d{k}") for k in range(3))
    nearest = (pl.when((d0 < d1) & (d0 <= d2)).then(pl.col("_vd_c0"))
               .when(d2 < d1).then(pl.col("_vd_c2")).otherwise(pl.col("_vd_c1")))
    full = pl.when(pl.col("_vd_full")).then(
        pl.col("_vd_text").str.strptime(pl.Date, "%d%m%Y", strict=False))
    frame = frame.with_columns(pl.coalesce(nearest, full).alias(out))
    frame = frame.with_columns(pl.when(pl.col(out).is_null()).then(pl.format(
        "Belegdatum: '{}' is not a date (TTMM)",
        pl.col("_vd_text").fill_null("").str.slice(0, 20))).alias(issue_out))
    return frame.drop([c for c in frame.collect_schema().names() if c.startswith("_vd_")])


def _amount(raw: pl.Expr, label: str) -> tuple[pl.Expr, pl.Expr]:
    """A DATEV amount: decimal comma, at most two decimals, no thousands separator, no sign.

    One regex on the common path; the reasons are worked out only for the rows that fail.
    """
    text = raw.str.strip_chars()
    ok = text.str.contains(r"^\d+(,\d{1,2})?$")
    value = pl.when(ok).then(text.str.replace(",", ".", literal=True)).cast(AMOUNT, strict=False)
    shown = text.str.slice(0, 40)
    bad = ~ok & text.is_not_null() & (text != "")
    issue = (pl.when(~bad).then(None)
             .when(text.str.contains(r"^\d{1,3}(\.\d{3})+(,\d+)?$")).then(pl.format(
                 "{}: '{}' has a thousands separator; DATEV writes amounts without one "
                 "(like 1234,56)", pl.lit(label), shown))
             .when(text.str.starts_with("-")).then(pl.format(
                 "{}: '{}' is negative; DATEV amounts are positive, the sign is in "
                 "Soll/Haben-Kennzeichen", pl.lit(label), shown))
             .otherwise(pl.format("{}: '{}' is not a valid amount (like 1234,56)",
                                  pl.lit(label), shown)))
    return value, issue


def _norm_expr(raw: pl.Expr) -> pl.Expr:
    """Vectorised ``delimited.norm_name`` for Beleginfo-Art values (the mapped names have no
    umlauts, so one lower-casing and one regex suffice)."""
    return raw.str.to_lowercase().str.replace_all(r"[^a-z0-9]", "")


def _beleginfo_columns(col: dict[str, pl.Expr]) -> list[pl.Expr]:
    """One column ``_bi_<target>`` per mapped Beleginfo type: the Inhalt of the first pair whose
    Art names it. Expects ``_art<i>`` (normalised) and ``_inh<i>`` columns."""
    pairs = [i for i in range(1, BELEGINFO_PAIRS + 1) if f"art{i}" in col and f"inhalt{i}" in col]
    out = []
    for target, names in BELEGINFO_MAP.items():
        picks = [pl.when(pl.col(f"_art{i}").is_in(list(names))).then(pl.col(f"_inh{i}"))
                 for i in pairs]
        value = pl.coalesce(picks) if picks else pl.lit(None, pl.String)
        out.append(value.alias(f"_bi_{target}"))
    return out


def is_creditor(account: pl.Expr, account_length: int | None) -> pl.Expr:
    """Creditor (Kreditor) accounts: personal accounts one digit longer than the G/L accounts,
    starting with 7, 8 or 9 (70000-99999 with the usual 4-digit Sachkonten)."""
    length = (account_length or 4) + 1
    return (account.str.len_chars() == length) & account.str.contains(r"^[7-9]\d*$")


def _batch_frame(header: ExtfHeader, file_idx: int, settings: Settings, workdir: Path,
                 warnings: list[str]) -> pl.LazyFrame:
    """One Buchungsstapel -> canonical lines (two per row), plus helper columns ``_ord``,
    ``_side``, ``_gp_bank``."""
    idx, lf = _scan_table(header, BOOKING_FIELDS, REQUIRED, workdir, warnings)
    start, end = _period(header)
    label = {k: f.label for k, f in BOOKING_FIELDS.items()}
    # stage 1: trimmed text per field, normalised Beleginfo types (small plans, each once)
    col = {key: pl.col(f"c{i}") for key, i in idx.items()}
    stage1 = [strip_or_null(c).alias(f"t_{key}") for key, c in col.items()
              if not key.startswith(("art", "inhalt"))]
    stage1 += [_norm_expr(c).alias(f"_art{key[3:]}") for key, c in col.items()
               if key.startswith("art")]
    stage1 += [strip_or_null(c).alias(f"_inh{key[6:]}") for key, c in col.items()
               if key.startswith("inhalt")]
    raw = [c.alias(f"r_{key}") for key, c in col.items() if key in ("umsatz", "basis")]
    lf = lf.select(*stage1, *raw, pl.col(LINE), pl.col(OVERFLOW))
    lf = lf.with_columns(_beleginfo_columns(col))

    def t(key: str) -> pl.Expr:
        return pl.col(f"t_{key}") if key in col else pl.lit(None, pl.String)

    # stage 2: typed values and one issue column each
    issues: list[pl.Expr] = [overflow_issue("DATEV")]
    umsatz, issue = _amount(pl.col("r_umsatz"), label["umsatz"])
    issues.append(pl.coalesce(pl.when(t("umsatz").is_null()).then(
        pl.lit(f"{label['umsatz']}: is empty")), issue))
    if "basis" in col:
        basis, issue = _amount(pl.col("r_basis"), label["basis"])
        issues.append(issue)
    else:
        basis = pl.lit(None, AMOUNT)
    sh = t("sh").str.to_uppercase()
    issues.append(pl.when(~sh.is_in(["S", "H"]) | sh.is_null()).then(pl.format(
        "{}: '{}' is not S or H", pl.lit(label["sh"]), sh.fill_null(""))))
    for key in ("konto", "gegenkonto"):
        issues.append(pl.when(t(key).is_null()).then(pl.lit(f"{label[key]}: is empty")))
    lf = with_voucher_date(lf, "t_belegdatum", start, end, "_posted", "_iss_date")
    issues.append(pl.col("_iss_date"))
    entered_at, issue = parse_datetime(pl.col("_bi_entered_at"), "Beleginfo Erfassungsdatum",
                                       TIMESTAMP_FORMATS)
    issues.append(issue)
    voucher, issue = parse_date(pl.col("_bi_document_date"), "Beleginfo Belegdatum",
                                DATE_FORMATS)
    issues.append(issue)
    lf = lf.with_columns(
        pl.coalesce(basis, umsatz).alias("_amount"),  # Basis-Umsatz = house currency amount
        basis.is_not_null().alias("_has_basis"),
        sh.alias("_sh"),
        voucher.alias("_voucher"),
        entered_at.alias("_entered_at"),
        *[e.alias(f"_iss{i}") for i, e in enumerate(issues)],
    )

    # stage 3: the canonical columns, two list entries per row
    header_ccy = header.currency or settings.currency
    currency = pl.when(pl.col("_has_basis")).then(pl.coalesce(t("wkz_basis"), pl.lit(header_ccy))) \
        .otherwise(pl.coalesce(t("wkz"), pl.lit(header_ccy)))
    batch_tag = header.created or sha256_of(header.path)[:12]
    row_no = pl.col(LINE) - header.data_line + 1
    entity = settings.entity if settings.entity and settings.entity != "default" \
        else f"{header.berater}-{header.mandant}"
    fy_start = header.fy_start or start
    amount = pl.col("_amount")
    signed = pl.when(pl.col("_sh") == "H").then(-amount).when(pl.col("_sh") == "S").then(amount)
    konto, gegen = t("konto"), t("gegenkonto")
    belegfeld1 = t("belegfeld1")
    rows = lf.select(
        pl.lit(entity).alias("entity"),
        pl.lit(fy_start.year, pl.Int32).alias("fiscal_year"),
        ((pl.col("_posted").dt.month().cast(pl.Int32) - fy_start.month) % 12 + 1).alias("period"),
        pl.coalesce(belegfeld1, pl.format("{}-{}", pl.lit(batch_tag), row_no)).alias("journal_id"),
        pl.col("_posted").alias("posting_date"),
        pl.coalesce("_voucher", "_posted").alias("document_date"),
        pl.col("_entered_at").alias("entered_at"),
        pl.coalesce(pl.col("_bi_entered_by"),
                    pl.lit(header.dictation or None, pl.String)).alias("entered_by"),
        pl.col("_bi_approved_by").alias("approved_by"),
        pl.concat_list(konto, gegen).alias("gl_account"),
        pl.concat_list(signed, -signed).alias("amount"),
        pl.concat_list(
            pl.when(is_creditor(konto, header.account_length)).then(konto),
            pl.when(is_creditor(gegen, header.account_length)).then(gegen)).alias("vendor_id"),
        pl.lit([0, 1], pl.List(pl.Int32)).alias("_side"),
        currency.alias("currency"),
        t("text").alias("description"),
        pl.coalesce(pl.col("_bi_source"), t("herkunft"),
                    pl.lit(header.origin or None, pl.String)).alias("source"),
        pl.col("_bi_document_type").alias("document_type"),
        t("kost1").alias("cost_center"),
        # not Belegfeld 1: it is the journal id (and reused by the payment), so a reference
        # equal to it would blind the duplicate-invoice rules
        pl.coalesce(pl.col("_bi_reference"), t("belegfeld2")).alias("reference"),
        pl.coalesce(pl.col("_bi_reversal_of"), pl.when(
            t("gu").is_in(["1", "X", "x"])).then(belegfeld1)).alias("reversal_of"),
        t("gp_bank").alias("_gp_bank"),
        pl.lit(str(header.path)).alias("source_file"),
        pl.col(LINE).alias("source_line"),
        (pl.lit(file_idx, pl.Int64) * 10**12 + pl.col(LINE)).alias("_ord"),
        gather_issues([pl.col(f"_iss{i}") for i in range(len(issues))]),
    )
    return rows.explode(["gl_account", "amount", "vendor_id", "_side"])


# --- master files --------------------------------------------------------------------------------

def _scan_table(header: ExtfHeader, fields: dict[str, Field], required: tuple[str, ...],
                workdir: Path, warnings: list[str]) -> tuple[dict[str, int], pl.LazyFrame]:
    """Column positions of ``fields`` and a string scan of the data rows (cut files refused)."""
    idx = match_columns(header, fields, required, warnings)
    n_fields = max(len(header.columns), max(idx.values()) + 1)
    check_last_line(header.path, header.encoding, SEP, n_fields)
    source = utf8_source(header.path, header.encoding, workdir)
    return idx, scan_strings(source, SEP, n_fields, skip_lines=header.data_line - 1,
                             first_line_no=header.data_line)


def _master_rows(header: ExtfHeader, fields: dict[str, Field], required: tuple[str, ...],
                 workdir: Path, warnings: list[str]) -> pl.DataFrame:
    idx, lf = _scan_table(header, fields, required, workdir, warnings)
    return lf.select([strip_or_null(pl.col(f"c{i}")).alias(k) for k, i in idx.items()]
                     + [pl.col(LINE)]).collect().sort(LINE)


def _accounts(header: ExtfHeader, workdir: Path, warnings: list[str]) -> pl.DataFrame:
    df = _master_rows(header, ACCOUNT_FIELDS, ("konto", "short"), workdir, warnings)
    name = pl.coalesce(pl.col("long"), pl.col("short")) if "long" in df.columns else pl.col("short")
    out = df.filter(pl.col("konto").is_not_null()).select(
        pl.col("konto").alias("gl_account"), name.alias("account_name"))
    return conform(out.lazy(), MASTER_SCHEMAS["accounts"]).collect()


def _vendors(header: ExtfHeader, workdir: Path,
             warnings: list[str]) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """A Debitoren/Kreditoren file -> (vendors = creditors, their banks by Geschäftspartnerbank
    number, personal accounts for the chart: creditors as liability, debtors as asset)."""
    df = _master_rows(header, VENDOR_FIELDS, ("konto",), workdir, warnings)
    c = lambda k: pl.col(k) if k in df.columns else pl.lit(None, pl.String)  # noqa: E731
    person = pl.concat_str(c("forename"), c("surname"), separator=" ", ignore_nulls=True)
    person = pl.when(person == "").then(None).otherwise(person)
    main_iban = pl.coalesce([pl.when(c(f"main{i}") == "1").then(c(f"iban{i}")) for i in range(1, 6)]
                            + [c(f"iban{i}") for i in range(1, 6)])
    creditors = df.filter(is_creditor(pl.col("konto"), header.account_length))
    vendors = creditors.select(
        pl.col("konto").alias("vendor_id"),
        pl.coalesce(c("company"), person, c("noname"), c("short")).alias("vendor_name"),
        main_iban.str.replace_all(" ", "").alias("bank_account"),
        pl.when(c("kind").is_not_null()).then(c("kind") == "1").alias("is_person"),
    )
    banks = pl.concat([creditors.select(pl.col("konto").alias("vendor_id"),
                                        pl.lit(str(i)).alias("_gp_bank"),
                                        c(f"iban{i}").str.replace_all(" ", "").alias("_iban"))
                       for i in range(1, 6)]).filter(pl.col("_iban").is_not_null())
    personal = df.select(
        pl.col("konto").alias("gl_account"),
        pl.coalesce(c("company"), person, c("noname"), c("short")).alias("account_name"),
        pl.when(is_creditor(pl.col("konto"), header.account_length)).then(pl.lit("liability"))
        .otherwise(pl.lit("asset")).alias("account_type"))
    return (conform(vendors.lazy(), MASTER_SCHEMAS["vendors"]).collect(), banks,
            conform(personal.lazy(), MASTER_SCHEMAS["accounts"]).collect())


def _chart(parts: list[pl.DataFrame], lines: pl.LazyFrame, warnings: list[str]) -> pl.DataFrame:
    """The accounts master: labels (category 20) and personal accounts (category 16), completed
    with every booked account. DATEV exports Kontenbeschriftungen only for individually labelled
    accounts; the rest come from the standard chart (SKR) that DATEV does not export, and DATEV
    accepts no booking on an account that does not exist. Costs one extra pass over the rows."""
    chart = pl.concat(parts).unique("gl_account", keep="first", maintain_order=True)
    booked = lines.select(pl.col("gl_account").drop_nulls().unique()).collect()
    missing = booked.join(chart, on="gl_account", how="anti").sort("gl_account")
    if missing.height:
        warnings.append(f"DATEV: {missing.height} booked accounts have no Kontenbeschriftung "
                        "(DATEV exports only individually labelled accounts); they are added to "
                        "the chart without a name")
        chart = pl.concat([chart, conform(missing.lazy(), MASTER_SCHEMAS["accounts"]).collect()])
    return chart


# --- read ----------------------------------------------------------------------------------------

def _data_rows(header: ExtfHeader) -> int:
    """Data rows (physical lines after the header lines; a final line without newline counts)."""
    n = count_lines(header.path) + (0 if ends_with_newline(header.path) else 1)
    return max(0, n - (header.data_line - 1))


def read(files: list[Path], settings: Settings, workdir: Path) -> IngestResult:
    """Read every EXTF file of the delivery; at least one Buchungsstapel is required."""
    warnings: list[str] = []
    ignored: list[str] = []
    inputs: list[InputFile] = []
    frames: list[pl.LazyFrame] = []
    accounts: list[pl.DataFrame] = []
    vendors: list[pl.DataFrame] = []
    banks: list[pl.DataFrame] = []
    personal: list[pl.DataFrame] = []
    empty: list[Path] = []
    other_extf: list[str] = []
    for path in files:
        path = Path(path)
        if path.stat().st_size == 0:
            empty.append(path)
            continue
        if sniff_category(decode_head(read_head(path))) is None:
            ignored.append(str(path))
            continue
        header = read_extf_header(path)
        fv = KNOWN_FORMAT_VERSIONS.get(header.category)
        if fv is not None and header.format_version not in fv:
            warnings.append(f"{path}: EXTF format version {header.format_version} of category "
                            f"{header.category} is unknown; columns are matched by name")
        role = None
        if header.category == 21:
            frames.append(_batch_frame(header, len(frames), settings, workdir, warnings))
            role = "bookings"
        elif header.category == 20:
            accounts.append(_accounts(header, workdir, warnings))
            role = "master:accounts"
        elif header.category == 16:
            v, b, p = _vendors(header, workdir, warnings)
            vendors.append(v)
            banks.append(b)
            personal.append(p)
            role = "master:vendors"
        else:
            other_extf.append(f"{path.name} (category {header.category} "
                              f"{CATEGORIES.get(header.category, header.format_name)})")
            ignored.append(str(path))
            continue
        rows = _data_rows(header)
        if role == "bookings" and rows == 0:
            warnings.append(f"{path}: the Buchungsstapel holds no bookings")
        inputs.append(InputFile(str(path), sha256_of(path), path.stat().st_size, role=role,
                                rows=rows))
    if other_extf:
        warnings.append("DATEV files not read (only categories 21, 20 and 16 are): "
                        + ", ".join(other_extf))
    if not frames:
        if empty and not other_extf and not accounts and not vendors:
            raise IngestError("file is empty", file=str(empty[0]))
        found = "; found " + ", ".join(other_extf) if other_extf else ""
        if accounts or vendors:
            found += "; found only master data (categories 20/16)"
        raise IngestError("no DATEV Buchungsstapel (EXTF format category 21) in the delivery"
                          + found, file=str(files[0]) if len(files) == 1 else None,
                          hint="export the bookings as DATEV-Format 'Buchungsstapel'")
    for path in empty:
        warnings.append(f"{path}: file is empty; skipped")
        ignored.append(str(path))

    lines = pl.concat(frames, how="vertical")
    if banks:
        bank_df = pl.concat(banks).unique(["vendor_id", "_gp_bank"], keep="first")
        lines = lines.join(bank_df.lazy(), on=["vendor_id", "_gp_bank"], how="left")
        lines = lines.with_columns(pl.col("_iban").alias("bank_account"))
    # line_no = MMDD of the Belegdatum * 100000 + position within (journal, day): a voucher
    # number reused on another day (the payment of an invoice, in a later delivery) gets other
    # keys, so the history keeps both; a re-export of the same batch keeps its keys.
    journal_day = ["entity", "fiscal_year", "journal_id", "posting_date"]
    mmdd = (pl.col("posting_date").dt.month().cast(pl.Int64) * 100
            + pl.col("posting_date").dt.day().cast(pl.Int64)).fill_null(0)
    position = (pl.col("_ord").rank("dense").over(journal_day).cast(pl.Int64) - 1) * 2 + 1 \
        + pl.col("_side")
    lines = lines.with_columns((mmdd * LINE_DAY + position).cast(pl.Int32).alias("line_no"))
    lines = lines.sort(["_ord", "_side"])
    bookings = conform(lines, INGEST_SCHEMA)
    master: dict[str, pl.DataFrame] = {}
    if accounts:
        master["accounts"] = _chart(accounts + personal, lines, warnings)
    if vendors:
        master["vendors"] = pl.concat(vendors).unique("vendor_id", keep="first",
                                                      maintain_order=True)
    return IngestResult(format=NAME, bookings=bookings, inputs=inputs, master=master,
                        control_totals=[], warnings=warnings, ignored=ignored)
