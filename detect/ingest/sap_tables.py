"""SAP table exports (SE16N / SE16 / SQVI downloads): find the header, name the table, guess the
locale.

Why: users download SAP tables in whatever locale their SAP GUI runs (German ``1.234,56`` and
``DD.MM.YYYY``, US ``1,234.56`` and ``MM/DD/YYYY``), with technical field names (``BELNR``) or
field labels (``Belegnummer`` / ``Document Number``), separated by ``;``, tabs, commas or ``|``.
Tables are recognised by their columns, never by file name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from detect.errors import IngestError
from detect.ingest.delimited import (
    LINE,
    head_lines,
    norm_name,
    scan_strings,
    split_line,
    utf8_source,
)
from detect.ingest.textio import detect_encoding

# field labels (normalised) -> technical names, German and English SE16N column headings
LABELS: dict[str, str] = {
    "buchungskreis": "BUKRS", "companycode": "BUKRS",
    "belegnummer": "BELNR", "documentnumber": "BELNR", "accountingdocument": "BELNR",
    "geschaftsjahr": "GJAHR", "fiscalyear": "GJAHR",
    "buchungszeile": "BUZEI", "position": "BUZEI", "lineitem": "BUZEI", "item": "BUZEI",
    "buchungsdatum": "BUDAT", "postingdate": "BUDAT",
    "belegdatum": "BLDAT", "documentdate": "BLDAT",
    "erfassungsdatum": "CPUDT", "entrydate": "CPUDT", "enteredon": "CPUDT",
    "erfassungsuhrzeit": "CPUTM", "uhrzeit": "CPUTM", "timeofentry": "CPUTM", "enteredat": "CPUTM",
    "benutzername": "USNAM", "username": "USNAM", "enteredby": "USNAM",
    "belegart": "BLART", "documenttype": "BLART",
    "transaktionscode": "TCODE", "transactioncode": "TCODE",
    "referenz": "XBLNR", "referenzbelegnummer": "XBLNR", "reference": "XBLNR",
    "belegkopftext": "BKTXT", "documentheadertext": "BKTXT",
    "wahrung": "WAERS", "wahrungsschlussel": "WAERS", "currency": "WAERS",
    "hauswahrung": "HWAER", "localcurrency": "HWAER",
    "stornobeleg": "STBLG", "storniertmit": "STBLG", "reversedwith": "STBLG",
    "sachkonto": "HKONT", "hauptbuchkonto": "HKONT", "glaccount": "HKONT",
    "betraginhauswahrung": "DMBTR", "betraginhw": "DMBTR", "amountinlc": "DMBTR",
    "amountinlocalcurrency": "DMBTR",
    "betrag": "WRBTR", "betraginbelegwahrung": "WRBTR", "amount": "WRBTR",
    "amountindoccurr": "WRBTR", "amountindocumentcurrency": "WRBTR",
    "sollhabenkennz": "SHKZG", "sollhabenkennzeichen": "SHKZG", "debitcreditind": "SHKZG",
    "debitcreditindicator": "SHKZG",
    "kostenstelle": "KOSTL", "costcenter": "KOSTL",
    "kreditor": "LIFNR", "lieferant": "LIFNR", "vendor": "LIFNR", "supplier": "LIFNR",
    "kontonummerdeslieferantenbzwkreditors": "LIFNR",
    "zuordnung": "ZUONR", "assignment": "ZUONR",
    "positionstext": "SGTXT", "text": "SGTXT", "itemtext": "SGTXT",
    "periode": "MONAT", "buchungsperiode": "MONAT", "postingperiod": "MONAT", "period": "MONAT",
    "buchungsschlussel": "BSCHL", "postingkey": "BSCHL",
    "kontoart": "KOART", "accounttype": "KOART",
}

AMOUNT_COLUMNS = ("DMBTR", "WRBTR", "HSL", "WSL", "TSL", "KSL", "PSWBT", "RBETR", "RWBTR",
                  "DMBE2", "KURSF", "KURSR")
DATE_COLUMNS = ("BUDAT", "BLDAT", "CPUDT", "AEDAT", "UPDDT", "ERDAT", "UDATE", "LAUFD", "ZALDT",
                "VALUT", "H_BUDAT", "H_BLDAT", "AUGDT", "WWERT", "ZFBDT")
KNOWN = set(LABELS.values()) | set(AMOUNT_COLUMNS) | set(DATE_COLUMNS) | {
    "MANDT", "RBUKRS", "RACCT", "DOCLN", "RLDNR", "POPER", "RYEAR", "DRCRK", "RHCUR", "RCNTR",
    "SAKNR", "TXT20", "TXT50", "SPRAS", "KTOPL", "NAME1", "NAME2", "STKZN", "BANKS", "BANKL",
    "BANKN", "IBAN", "VBLNR", "ZBUKR", "ZIBAN", "ZBNKN", "ZBNKL", "ZBNKY", "ZBNKS", "OBJECTCLAS",
    "OBJECTID", "CHANGENR", "TABNAME", "TABKEY", "FNAME", "CHNGIND", "VALUE_NEW", "VALUE_OLD",
    "UTIME", "XREVERSAL", "STJAH", "PPNAM", "AWTYP", "KUNNR", "XVORL", "LAUFI"}


@dataclass
class Locale:
    decimal: str = ","
    thousands: str = "."
    date_formats: tuple[str, ...] = ("%d.%m.%Y", "%Y-%m-%d", "%Y%m%d")

    def describe(self) -> str:
        sample = "1.234,56" if self.decimal == "," else "1,234.56"
        return f"amounts like {sample}, dates {self.date_formats[0]}"


@dataclass
class SapTable:
    path: Path
    encoding: str
    sep: str
    header_line: int
    """1-based line of the column names."""
    raw_names: list[str]
    columns: list[str]
    """Technical names (upper case) in file order; '' for unnamed (pipe frame) columns."""
    kind: str | None = None
    locale: Locale = field(default_factory=Locale)

    def has(self, *names: str) -> bool:
        return all(n in self.columns for n in names)

    def any(self, *names: str) -> bool:
        return any(n in self.columns for n in names)


def technical(name: str) -> str:
    text = name.strip().strip('"').strip()
    up = text.upper()
    if re.fullmatch(r"[A-Z][A-Z0-9_/]*", up) and (up in KNOWN or text == up):
        return up
    return LABELS.get(norm_name(text), up)


def _separator(line: str) -> str:
    counts = {s: line.count(s) for s in (";", "\t", "|", ",")}
    return max(counts, key=lambda s: counts[s])


def header_tokens(text: str) -> tuple[str, list[str], int] | None:
    """(separator, technical names, 0-based line index) of the likeliest header line in ``text``."""
    best: tuple[int, str, list[str], int] | None = None
    for i, line in enumerate(text.lstrip("\ufeff").splitlines()[:20]):
        if not line.strip():
            continue
        sep = _separator(line)
        names = [technical(n) for n in split_line(line, sep)]
        score = sum(n in KNOWN for n in names)
        if score >= 2 and (best is None or score > best[0]):
            best = (score, sep, names, i)
    return None if best is None else (best[1], best[2], best[3])


def classify(cols: set[str]) -> str | None:
    """Which SAP table the columns belong to."""
    if "RACCT" in cols or ("RBUKRS" in cols and cols & {"HSL", "TSL", "WSL"}):
        return "ACDOCA"
    if "BELNR" in cols and "BUZEI" in cols and cols & {"DMBTR", "WRBTR", "HKONT", "SHKZG"}:
        return "BSEG"
    if "BELNR" in cols and cols & {"BUDAT", "BLDAT", "CPUDT"}:
        return "BKPF"
    if "VBLNR" in cols and cols & {"LAUFD", "ZBUKR"}:
        return "REGUH"
    if "CHANGENR" in cols and "FNAME" in cols:
        return "CDPOS"
    if "CHANGENR" in cols and "OBJECTCLAS" in cols:
        return "CDHDR"
    if "LIFNR" in cols and "NAME1" in cols:
        return "LFA1"
    if "LIFNR" in cols and cols & {"BANKN", "BANKL", "IBAN"}:
        return "LFBK"
    if "SAKNR" in cols and cols & {"TXT20", "TXT50"}:
        return "SKAT"
    return None


def open_table(path: Path) -> SapTable | None:
    """Header, separator and kind of an SAP table export; None when ``path`` is not one."""
    encoding = detect_encoding(path)
    lines = head_lines(path, encoding, 25)
    found = header_tokens("\n".join(lines))
    if found is None:
        return None
    sep, names, idx = found
    table = SapTable(path, encoding, sep, idx + 1, split_line(lines[idx], sep), [])
    seen: set[str] = set()
    for n in names:  # keep the first of duplicate names
        table.columns.append(n if n not in seen else "")
        seen.add(n)
    table.kind = classify(set(table.columns))
    return table


def scan(table: SapTable, workdir: Path) -> pl.LazyFrame:
    """All-string LazyFrame with technical column names, ``_line`` and ``_overflow``; repeated
    header rows and ``|----|`` rule lines of list exports are dropped."""
    source = utf8_source(table.path, table.encoding, workdir)
    lf = scan_strings(source, table.sep, len(table.columns), skip_lines=table.header_line,
                      first_line_no=table.header_line + 1)
    named = [pl.col(f"c{i}").alias(n) for i, n in enumerate(table.columns) if n]
    lf = lf.select(named + [pl.col("_overflow"), pl.col(LINE)])
    first = next(n for n in table.columns if n)
    raw_first = table.raw_names[table.columns.index(first)].strip()
    lf = lf.filter(pl.col(first).is_null() | ~(
        pl.col(first).str.strip_chars().is_in([raw_first, first])
        | pl.col(first).str.contains(r"^-{3,}")))
    if table.sep == "|":  # list output: drop rule lines and empty frame rows
        lf = lf.filter(pl.any_horizontal([pl.col(n).str.strip_chars() != ""
                                          for n in table.columns if n][:5]))
    return lf


def detect_locale(table: SapTable, sample: pl.DataFrame) -> Locale:
    """Decimal mark and date order from the values themselves (separator only breaks ties)."""
    amounts = [c for c in AMOUNT_COLUMNS if c in sample.columns]
    comma = point = 0
    for c in amounts:
        s = sample[c].drop_nulls().str.strip_chars()
        comma += int(s.str.contains(r",\d{1,2}-?$").sum()
                     + s.str.contains(r"^-?\d{1,3}(\.\d{3})+,").sum())
        point += int(s.str.contains(r"\.\d{1,2}-?$").sum()
                     + s.str.contains(r"^-?\d{1,3}(,\d{3})+\.").sum()
                     + s.str.contains(r"^-?\d+\.\d{3,}$").sum())
    if comma == point:
        decimal = "." if table.sep == "," else ","
    else:
        decimal = "," if comma > point else "."
    thousands = "." if decimal == "," else ","
    dates = [c for c in DATE_COLUMNS if c in sample.columns]
    values = pl.concat([sample[c].drop_nulls().str.strip_chars() for c in dates]) if dates \
        else pl.Series([], dtype=pl.String)
    slash = values.filter(values.str.contains(r"^\d{1,2}/\d{1,2}/\d{4}$")
                          & ~values.is_in(["00/00/0000"]))
    formats: list[str] = []
    if slash.len() > 0 or decimal == ".":
        parts = slash.str.split("/")
        first_big = bool((parts.list.get(0).cast(pl.Int32) > 12).any()) if slash.len() else False
        second_big = bool((parts.list.get(1).cast(pl.Int32) > 12).any()) if slash.len() else False
        if first_big and not second_big:
            formats.append("%d/%m/%Y")
        elif second_big and not first_big:
            formats.append("%m/%d/%Y")
        else:
            formats.append("%m/%d/%Y" if decimal == "." else "%d/%m/%Y")
    formats += ["%d.%m.%Y", "%Y-%m-%d", "%Y%m%d"]
    if values.str.contains(r"^\d{1,2}\.\d{1,2}\.\d{4}$").any():
        formats.remove("%d.%m.%Y")
        formats.insert(0, "%d.%m.%Y")
    return Locale(decimal, thousands, tuple(formats))


def require(table: SapTable, *alternatives: str, what: str) -> str:
    """The first of ``alternatives`` the table has; IngestError naming the file and column."""
    for name in alternatives:
        if name in table.columns:
            return name
    raise IngestError(f"required column is missing ({what}); the header names: "
                      f"{', '.join(c for c in table.columns if c)[:300]}",
                      file=str(table.path), line=table.header_line, column=alternatives[0])
