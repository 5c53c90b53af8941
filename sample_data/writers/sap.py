"""SAP FI table export in German locale, as users download it from SE16N:
``BKPF.csv`` (document headers), ``BSEG.csv`` (line items), ``REGUH.csv`` (payee bank per
payment document), ``LFA1.csv`` / ``LFBK.csv`` (vendor master and bank), ``SKAT.csv`` (account
names), ``CDHDR.csv`` / ``CDPOS.csv`` (vendor bank changes).

Locale: semicolons, UTF-8 with BOM, CRLF, ``1.234,56`` (the sign is in SHKZG), ``DD.MM.YYYY``,
``HH:MM:SS``, BELNR with leading zeros to 10 digits. Mapping from the canonical ledger:

- BUKRS ``1000``; BELNR = journal_id; BLART = document_type; BUDAT/BLDAT/MONAT; CPUDT/CPUTM =
  entered_at; four eyes as park-and-post: PPNAM = who keyed (entered_by), USNAM = who posted
  (approved_by); without an approver USNAM = entered_by and PPNAM is empty;
- TCODE from the source: F110 payment run, RFBIBL00 interfaces (batch input), FB60 invoices,
  FB50 G/L, FBCJ cash journal, F-53 manual payments, FB08 reversals;
- XBLNR (16) = reference, BKTXT (25) = header text, STBLG/STJAH on the reversing document;
- BSEG: KOART K with LIFNR for creditor lines (HKONT = reconciliation account 351000/352000),
  S otherwise; BSCHL 31/21/25 (vendor) and 40/50 (G/L); SGTXT (50), ZUONR = reference, KOSTL.
- REGUH lists every payment document with a payee IBAN (ZIBAN); manual payments get run id
  ``MANU`` (SAP would only list payment-program runs; this keeps the IBAN available).
Standing orders and direct debits (DA/DL) carry no REGUH row: SAP has no payee IBAN for them.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from sample_data.master import AP, AP_INV
from sample_data.writers import MasterData, money, write_csv_chunk

BUKRS, MANDT = "1000", "100"
BKPF = ("MANDT", "BUKRS", "BELNR", "GJAHR", "BLART", "BLDAT", "BUDAT", "MONAT", "CPUDT", "CPUTM",
        "USNAM", "PPNAM", "TCODE", "XBLNR", "BKTXT", "WAERS", "STBLG", "STJAH")
BSEG = ("MANDT", "BUKRS", "BELNR", "GJAHR", "BUZEI", "BSCHL", "KOART", "SHKZG", "DMBTR", "WRBTR",
        "HKONT", "LIFNR", "KOSTL", "SGTXT", "ZUONR")


def _de(c: str) -> pl.Expr:
    return pl.col(c).dt.strftime("%d.%m.%Y")


def _write(frame: pl.DataFrame, path: Path, header: bool) -> None:
    if header:
        path.write_bytes(b"\xef\xbb\xbf")
    write_csv_chunk(frame, path, header=header, sep=";", crlf=True)


class SapWriter:
    def __init__(self, out: Path, year: int) -> None:
        self.dir = out / "sap"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.year = year
        self.first = True

    def write(self, frame: pl.DataFrame) -> None:
        belnr = pl.col("journal_id").str.zfill(10)
        vendor_line = pl.col("gl_account").is_in([AP, AP_INV]) & pl.col("vendor_id").is_not_null()
        head = frame.filter(pl.col("line_no") == pl.col("line_no").min().over("journal_id"))
        tcode = (pl.when(pl.col("reversal_of").is_not_null()).then(pl.lit("FB08"))
                 .when(pl.col("source") == "payment_run").then(pl.lit("F110"))
                 .when(pl.col("source") == "interface").then(pl.lit("RFBIBL00"))
                 .otherwise(pl.col("document_type").replace_strict(
                     {"KR": "FB60", "SA": "FB50", "KA": "FBCJ", "KZ": "F-53"}, default="FB01")))
        bkpf = head.sort("journal_id").select(
            pl.lit(MANDT).alias("MANDT"), pl.lit(BUKRS).alias("BUKRS"), belnr.alias("BELNR"),
            pl.col("fiscal_year").alias("GJAHR"), pl.col("document_type").alias("BLART"),
            _de("document_date").alias("BLDAT"), _de("posting_date").alias("BUDAT"),
            pl.col("period").cast(pl.String).str.zfill(2).alias("MONAT"),
            _de("entered_at").alias("CPUDT"),
            pl.col("entered_at").dt.strftime("%H:%M:%S").alias("CPUTM"),
            pl.coalesce("approved_by", "entered_by").alias("USNAM"),
            pl.when(pl.col("approved_by").is_not_null()).then(pl.col("entered_by"))
            .alias("PPNAM"),
            tcode.alias("TCODE"),
            pl.col("reference").str.slice(0, 16).alias("XBLNR"),
            pl.col("header_description").str.slice(0, 25).alias("BKTXT"),
            pl.col("currency").alias("WAERS"),
            pl.col("reversal_of").str.zfill(10).alias("STBLG"),
            pl.when(pl.col("reversal_of").is_not_null()).then(pl.col("fiscal_year"))
            .alias("STJAH"))
        debit = pl.col("cents") >= 0
        bschl = (pl.when(vendor_line & debit & (pl.col("kind") == "payment")).then(pl.lit("25"))
                 .when(vendor_line & debit).then(pl.lit("21"))
                 .when(vendor_line).then(pl.lit("31"))
                 .when(debit).then(pl.lit("40")).otherwise(pl.lit("50")))
        amount = money(pl.col("cents"), ",", ".")
        bseg = frame.sort("journal_id", "line_no").select(
            pl.lit(MANDT).alias("MANDT"), pl.lit(BUKRS).alias("BUKRS"), belnr.alias("BELNR"),
            pl.col("fiscal_year").alias("GJAHR"),
            pl.col("line_no").cast(pl.String).str.zfill(3).alias("BUZEI"),
            bschl.alias("BSCHL"),
            pl.when(vendor_line).then(pl.lit("K")).otherwise(pl.lit("S")).alias("KOART"),
            pl.when(debit).then(pl.lit("S")).otherwise(pl.lit("H")).alias("SHKZG"),
            amount.alias("DMBTR"), amount.alias("WRBTR"),
            pl.col("gl_account").alias("HKONT"),
            pl.when(vendor_line).then(pl.col("vendor_id")).alias("LIFNR"),
            pl.col("cost_center").alias("KOSTL"),
            pl.col("description").str.slice(0, 50).alias("SGTXT"),
            pl.col("reference").str.slice(0, 18).alias("ZUONR"))
        pay = frame.filter(pl.col("kind").is_in(["payment"]) & pl.col("bank_account").is_not_null())
        reguh = pay.sort("journal_id").select(
            pl.lit(MANDT).alias("MANDT"), _de("posting_date").alias("LAUFD"),
            pl.when(pl.col("source") == "payment_run")
            .then(pl.format("Z{}", pl.col("posting_date").dt.strftime("%m%d")))
            .otherwise(pl.lit("MANU")).alias("LAUFI"),
            pl.lit(None, pl.String).alias("XVORL"), pl.lit(BUKRS).alias("ZBUKR"),
            pl.col("vendor_id").alias("LIFNR"), belnr.alias("VBLNR"),
            pl.col("bank_account").str.slice(0, 2).alias("ZBNKS"),
            pl.col("bank_account").str.slice(4, 8).alias("ZBNKL"),
            pl.col("bank_account").str.slice(12, 10).alias("ZBNKN"),
            pl.col("bank_account").alias("ZIBAN"),
            money(pl.col("cents"), ",", ".").alias("RBETR"),
            pl.col("currency").alias("WAERS"))
        _write(bkpf, self.dir / "BKPF.csv", self.first)
        _write(bseg, self.dir / "BSEG.csv", self.first)
        _write(reguh, self.dir / "REGUH.csv", self.first)
        self.first = False

    def close(self, master: MasterData) -> None:
        v = master.vendors.sort("vendor_id")
        _write(v.select(pl.lit(MANDT).alias("MANDT"), pl.col("vendor_id").alias("LIFNR"),
                        pl.col("vendor_name").str.slice(0, 35).alias("NAME1"),
                        pl.lit("DE").alias("LAND1"), pl.lit("KRED").alias("KTOKK"),
                        pl.when(pl.col("is_person")).then(pl.lit("X")).alias("STKZN"),
                        _de("created_at").alias("ERDAT")), self.dir / "LFA1.csv", True)
        _write(v.select(pl.lit(MANDT).alias("MANDT"), pl.col("vendor_id").alias("LIFNR"),
                        pl.col("bank_account").str.slice(0, 2).alias("BANKS"),
                        pl.col("bank_account").str.slice(4, 8).alias("BANKL"),
                        pl.col("bank_account").str.slice(12, 10).alias("BANKN"),
                        pl.col("bank_account").alias("IBAN")), self.dir / "LFBK.csv", True)
        _write(master.accounts.select(
            pl.lit(MANDT).alias("MANDT"), pl.lit("D").alias("SPRAS"), pl.lit("NKF").alias("KTOPL"),
            pl.col("gl_account").alias("SAKNR"),
            pl.col("account_name").str.slice(0, 20).alias("TXT20"),
            pl.col("account_name").str.slice(0, 50).alias("TXT50")), self.dir / "SKAT.csv", True)
        ch = master.vendor_changes.sort("changed_at", "vendor_id").with_row_index("nr", 1)
        obj = pl.col("vendor_id").str.zfill(10)
        nr = pl.col("nr").cast(pl.String).str.zfill(10)
        _write(ch.select(pl.lit(MANDT).alias("MANDT"), pl.lit("KRED").alias("OBJECTCLAS"),
                         obj.alias("OBJECTID"), nr.alias("CHANGENR"),
                         pl.col("changed_by").alias("USERNAME"), _de("changed_at").alias("UDATE"),
                         pl.col("changed_at").dt.strftime("%H:%M:%S").alias("UTIME"),
                         pl.lit("FK02").alias("TCODE"), pl.lit("U").alias("CHANGE_IND")),
               self.dir / "CDHDR.csv", True)
        _write(ch.select(pl.lit(MANDT).alias("MANDT"), pl.lit("KRED").alias("OBJECTCLAS"),
                         obj.alias("OBJECTID"), nr.alias("CHANGENR"),
                         pl.lit("LFBK").alias("TABNAME"),
                         pl.format("{}{}", pl.lit(MANDT), obj).alias("TABKEY"),
                         pl.lit("IBAN").alias("FNAME"), pl.lit("U").alias("CHNGIND"),
                         pl.col("new_value").alias("VALUE_NEW"),
                         pl.col("old_value").alias("VALUE_OLD")), self.dir / "CDPOS.csv", True)
