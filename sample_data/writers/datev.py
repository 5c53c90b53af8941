"""DATEV EXTF 700 export: one Buchungsstapel per month, plus Kontenbeschriftungen and
Debitoren/Kreditoren master files.

Format as DATEV writes it: cp1252, CRLF, semicolons, decimal comma without thousands
separator, text in double quotes, the 31-field header in line 1 (format category 21, format
version 13, Sachkontenlänge 6), column names in line 2.

How a journal becomes rows: every row books ``Umsatz`` on ``Konto`` against ``Gegenkonto``, so
each journal is written as its non-anchor lines booked against its anchor (the one line alone on
its side; see ``sample_data.frames``). A journal with one credit and N debits gives N rows; read
back (two lines per row) it has 2N lines, with the same debit and credit totals. Creditor lines
(351000/352000 with a vendor) use the creditor's personal account (7 digits, ``vendor_id``)
as DATEV does. An unbalanced journal cannot exist in DATEV: its anchor is implied by the other
lines, so the imbalance disappears (the debit total stays, the credit total differs).

Fields DATEV's booking rows do not have travel in Beleginfo pairs: Erfasser, Erfasst am,
Freigabe, Belegdatum (the voucher date; ``Belegdatum`` itself carries the posting date, as it
determines the period in DATEV), Quelle, Belegart, Referenz, Storno zu. The payee IBAN is the
``Geschäftspartnerbank`` number of the creditor's bank connection in the Debitoren/Kreditoren
file (up to five per creditor).
"""

from __future__ import annotations

from calendar import monthrange
from datetime import date, timedelta
from pathlib import Path

import polars as pl

from sample_data.master import AP, AP_INV
from sample_data.writers import MasterData, money, write_csv_chunk
from sample_data.writers.datev_columns import BUCHUNGSSTAPEL, DEBKRED

BERATER, MANDANT = "70001", "1"
SLICE_JOURNALS = 25_000
ACCOUNT_LENGTH = 6
BELEGINFO = (("Erfasser", "entered_by"), ("Erfasst am", "_entered"), ("Freigabe", "approved_by"),
             ("Belegdatum", "_docdate"), ("Quelle", "source"), ("Belegart", "document_type"),
             ("Referenz", "reference"), ("Storno zu", "reversal_of"))


def _q(expr: pl.Expr) -> pl.Expr:
    """DATEV text field: in double quotes, inner quotes doubled, empty when null."""
    return pl.format('"{}"', expr.fill_null("").cast(pl.String).str.replace_all('"', '""'))


def _record(values: dict[str, pl.Expr], columns: tuple[str, ...]) -> pl.Expr:
    """One text column holding the whole ``;``-separated record (most DATEV fields are empty,
    so runs of empty fields become literal semicolons instead of 100 empty columns)."""
    pieces: list[pl.Expr] = []
    for i, name in enumerate(columns):
        sep = ";" if i else ""
        if name in values:
            pieces.append(pl.concat_str(pl.lit(sep), values[name].fill_null("")))
        elif pieces and isinstance(pieces[-1], str):
            pieces[-1] += sep
        else:
            pieces.append(sep)  # type: ignore[arg-type]
    exprs = [pl.lit(p) if isinstance(p, str) else p for p in pieces]
    return pl.concat_str(exprs).alias("record")


def header_line(category: int, name: str, version: int, created: str, fy_start: str,
                date_from: str = "", date_to: str = "", label: str = "") -> str:
    fields = ['"EXTF"', "700", str(category), f'"{name}"', str(version), created, "", '"BW"',
              '"belegwacht"', '""', BERATER, MANDANT, fy_start, str(ACCOUNT_LENGTH), date_from,
              date_to, f'"{label}"', '""', "1" if category == 21 else "", "0" if category == 21
              else "", "0" if category == 21 else "", '"EUR"' if category == 21 else '""', "",
              '""', "", "", '""', "", "", '""', '""']
    assert len(fields) == 31
    return ";".join(fields)


class DatevWriter:
    def __init__(self, out: Path, year: int) -> None:
        self.dir = out / "datev"
        self.dir.mkdir(parents=True, exist_ok=True)
        for old in self.dir.glob("EXTF_*.csv"):
            old.unlink()
        self.year = year
        self.banks = pl.DataFrame(schema={"vendor_id": pl.String, "iban": pl.String,
                                          "bank_no": pl.Int64})

    def _bank_numbers(self, pairs: pl.DataFrame) -> pl.DataFrame:
        """Number each creditor's IBANs in order of first use (1, 2, ...)."""
        new = pairs.unique(maintain_order=True).join(self.banks, on=["vendor_id", "iban"],
                                                     how="anti", maintain_order="left")
        if new.height:
            have = self.banks.group_by("vendor_id").agg(n=pl.len())
            new = (new.join(have, on="vendor_id", how="left", maintain_order="left")
                   .with_columns(bank_no=pl.col("n").fill_null(0)
                                 + pl.int_range(pl.len()).over("vendor_id") + 1)
                   .select("vendor_id", "iban", pl.col("bank_no").cast(pl.Int64)))
            self.banks = pl.concat([self.banks, new])
        return self.banks

    def write(self, frame: pl.DataFrame) -> None:
        """One month -> one Buchungsstapel, built in slices of journals (bounded memory)."""
        month = int(frame["period"][0])
        first = date(self.year, month, 1)
        last = date(self.year, month, monthrange(self.year, month)[1])
        created = (last + timedelta(days=1)).strftime("%Y%m%d") + "020000000"
        head = header_line(21, "Buchungsstapel", 13, created, f"{self.year}0101",
                           first.strftime("%Y%m%d"), last.strftime("%Y%m%d"),
                           f"Musterstadt {month:02d}/{self.year}")
        path = self.dir / f"EXTF_Buchungsstapel_{self.year}{month:02d}.csv"
        path.write_bytes((head + "\r\n" + ";".join(BUCHUNGSSTAPEL) + "\r\n").encode("cp1252"))
        ids = frame["journal_id"].unique().sort()
        for lo in range(0, ids.len(), SLICE_JOURNALS):
            part = ids.slice(lo, SLICE_JOURNALS)
            sub = frame.filter(pl.col("journal_id").is_between(pl.lit(part[0]), pl.lit(part[-1])))
            write_csv_chunk(self._rows(sub), path, header=False, sep=";", quote_style="never",
                            crlf=True, encoding="cp1252")

    def _rows(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Journals -> Buchungsstapel records (one text column), non-anchor lines vs anchor."""
        personal = pl.col("gl_account").is_in([AP, AP_INV]) & pl.col("vendor_id").is_not_null()
        f = frame.with_columns(konto=pl.when(personal).then(pl.col("vendor_id"))
                               .otherwise(pl.col("gl_account")),
                               _creditor=pl.when(personal).then(pl.col("vendor_id")))
        anchor = f.filter(pl.col("anchor")).select(
            "journal_id", pl.col("konto").alias("gegenkonto"),
            pl.col("cost_center").alias("_acc_cc"), pl.col("_creditor").alias("_acc_cred"),
            pl.col("bank_account").alias("_acc_bank"))
        rows = f.filter(~pl.col("anchor")).join(anchor, on="journal_id", how="left")
        rows = rows.sort("journal_id", "line_no").with_columns(
            _cred=pl.coalesce("_creditor", "_acc_cred"),
            _iban=pl.coalesce("bank_account", "_acc_bank"))
        pairs = rows.filter(pl.col("_cred").is_not_null() & pl.col("_iban").is_not_null()) \
            .select(pl.col("_cred").alias("vendor_id"), pl.col("_iban").alias("iban"))
        banks = self._bank_numbers(pairs)
        rows = rows.join(banks.rename({"vendor_id": "_cred", "iban": "_iban"}),
                         on=["_cred", "_iban"], how="left", maintain_order="left")
        rows = rows.with_columns(
            _entered=pl.col("entered_at").dt.strftime("%d.%m.%Y %H:%M:%S"),
            _docdate=pl.col("document_date").dt.strftime("%d.%m.%Y"))
        values: dict[str, pl.Expr] = {
            "Umsatz (ohne Soll/Haben-Kz)": money(pl.col("cents"), ","),
            "Soll/Haben-Kennzeichen": _q(pl.when(pl.col("cents") >= 0).then(pl.lit("S"))
                                         .otherwise(pl.lit("H"))),
            "WKZ Umsatz": _q(pl.col("currency")),
            "Konto": pl.col("konto"),
            "Gegenkonto (ohne BU-Schlüssel)": pl.col("gegenkonto"),
            "Belegdatum": pl.col("posting_date").dt.strftime("%d%m"),
            "Belegfeld 1": _q(pl.col("journal_id")),
            "Belegfeld 2": _q(pl.col("reference").str.slice(0, 12)),
            "Buchungstext": _q(pl.col("description").str.slice(0, 60)),
            "Geschäftspartnerbank": pl.when(pl.col("bank_no") <= 5)
            .then(pl.col("bank_no").cast(pl.String)).otherwise(pl.lit("")),
            "KOST1 - Kostenstelle": _q(pl.coalesce("cost_center", "_acc_cc")),
            "Festschreibung": pl.lit("0"),
        }
        for i, (art, col) in enumerate(BELEGINFO, start=1):
            values[f"Beleginfo - Art {i}"] = _q(pl.when(pl.col(col).is_not_null())
                                                .then(pl.lit(art)))
            values[f"Beleginfo - Inhalt {i}"] = _q(pl.col(col).str.slice(0, 210))
        return rows.select(_record(values, BUCHUNGSSTAPEL))

    def close(self, master: MasterData) -> None:
        created = f"{self.year + 1}0115020000000"
        fy = f"{self.year}0101"
        acc = master.accounts.select(pl.col("gl_account").alias("c0"),
                                     _q(pl.col("account_name").str.slice(0, 40)).alias("c1"),
                                     _q(pl.lit("de-DE")).alias("c2"),
                                     _q(pl.col("account_name")).alias("c3"))
        self._master_file("EXTF_Kontenbeschriftungen.csv", 20, "Kontenbeschriftungen", 3,
                          created, fy, "Konto;Kontenbeschriftung;Sprach-ID;"
                          "Kontenbeschriftung lang", acc)
        # creditors with their bank connections: the IBAN on file first, then any other used
        v = master.vendors
        on_file = v.select("vendor_id", pl.col("bank_account").alias("iban"))
        used = self.banks.sort("vendor_id", "bank_no").select("vendor_id", "iban")
        known = pl.concat([on_file, used]).unique(maintain_order=True)
        banks = self.banks
        rest = known.join(banks, on=["vendor_id", "iban"], how="anti", maintain_order="left")
        have = banks.group_by("vendor_id").agg(n=pl.len())
        rest = (rest.join(have, on="vendor_id", how="left", maintain_order="left")
                .with_columns(bank_no=(pl.col("n").fill_null(0)
                                       + pl.int_range(pl.len()).over("vendor_id") + 1)
                              .cast(pl.Int64)).select("vendor_id", "iban", "bank_no"))
        allb = pl.concat([banks, rest]).filter(pl.col("bank_no") <= 5)
        main = on_file.rename({"iban": "_main"})
        allb = allb.join(main, on="vendor_id", how="left", maintain_order="left")
        cols: dict[str, pl.Expr] = {}
        wide = v.select("vendor_id", "vendor_name", "is_person")
        for k in range(1, 6):
            b = allb.filter(pl.col("bank_no") == k).select(
                "vendor_id", pl.col("iban").alias(f"iban{k}"),
                (pl.col("iban") == pl.col("_main")).alias(f"main{k}"))
            wide = wide.join(b, on="vendor_id", how="left")
            cols[f"Bankleitzahl {k}"] = pl.col(f"iban{k}").str.slice(4, 8)
            cols[f"Bank-Kontonummer {k}"] = _q(pl.col(f"iban{k}").str.slice(12, 10))
            cols[f"Länderkennzeichen {k}"] = _q(pl.col(f"iban{k}").str.slice(0, 2))
            cols[f"IBAN-Nr. {k}"] = _q(pl.col(f"iban{k}"))
            cols[f"Kennz. Hauptbankverb. {k}"] = pl.when(pl.col(f"iban{k}").is_null()) \
                .then(pl.lit("")).when(pl.col(f"main{k}")).then(pl.lit("1")).otherwise(pl.lit("0"))
        cols["Konto"] = pl.col("vendor_id")
        person = pl.col("is_person")
        first = pl.col("vendor_name").str.split(" ").list.first()
        last = pl.col("vendor_name").str.split(" ").list.slice(1).list.join(" ")
        cols["Name (Adressattyp Unternehmen)"] = _q(pl.when(~person).then(
            pl.col("vendor_name").str.slice(0, 50)))
        cols["Name (Adressattyp natürl. Person)"] = _q(pl.when(person).then(last))
        cols["Vorname (Adressattyp natürl. Person)"] = _q(pl.when(person).then(first))
        cols["Adressattyp"] = _q(pl.when(person).then(pl.lit("1")).otherwise(pl.lit("2")))
        cols["Kurzbezeichnung"] = _q(pl.col("vendor_name").str.slice(0, 15))
        self._master_file("EXTF_DebKred_Stamm.csv", 16, "Debitoren/Kreditoren", 5, created, fy,
                          ";".join(DEBKRED),
                          wide.sort("vendor_id").select(_record(cols, DEBKRED)))

    def _master_file(self, name: str, category: int, title: str, version: int, created: str,
                     fy: str, columns: str, frame: pl.DataFrame) -> None:
        head = header_line(category, title, version, created, fy)
        (self.dir / name).write_bytes((head + "\r\n" + columns + "\r\n").encode("cp1252"))
        write_csv_chunk(frame, self.dir / name, header=False, sep=";", quote_style="never",
                        crlf=True, encoding="cp1252")
