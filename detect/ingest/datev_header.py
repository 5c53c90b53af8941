"""The DATEV EXTF file header (line 1) and tolerant column matching (line 2).

Every EXTF file starts with a 31-field header that says what the file is (format category 21 =
Buchungsstapel, 20 = Kontenbeschriftungen, 16 = Debitoren/Kreditoren, ...), for whom (Berater,
Mandant), for which fiscal year and period, and how long G/L account numbers are. Line 2 names
the columns; writers spell them slightly differently, so names are matched after normalising
(``delimited.norm_name``) and only then by their documented position.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from detect.errors import IngestError
from detect.ingest.delimited import head_lines, norm_name, split_line
from detect.ingest.textio import detect_encoding

SUPPORTED_VERSIONS = (510, 700)
"""Header ``Versionsnummer`` values DATEV has used for EXTF (510 up to 2015, 700 since)."""
KNOWN_FORMAT_VERSIONS = {21: range(2, 14), 20: range(1, 4), 16: range(1, 6)}
CATEGORIES = {
    21: "Buchungsstapel", 20: "Kontenbeschriftungen", 16: "Debitoren/Kreditoren",
    46: "Zahlungsbedingungen", 48: "Diverse Adressen", 65: "Wiederkehrende Buchungen",
    66: "Natural-Stapel",
}
HEADER_FIELDS = 31


def looks_like_extf(text: str) -> bool:
    """True when the first line of ``text`` starts like a DATEV header (``"EXTF";`` / ``DTVF``)."""
    first = text.lstrip("\ufeff").split("\n", 1)[0]
    return bool(re.match(r'^\s*"?(EXTF|DTVF)"?\s*;', first))


def sniff_category(text: str) -> int | None:
    """Format category from the header line in ``text``, None when not an EXTF header."""
    if not looks_like_extf(text):
        return None
    fields = split_line(text.lstrip("\ufeff").split("\n", 1)[0], ";")
    try:
        return int(fields[2].strip())
    except (IndexError, ValueError):
        return None


@dataclass(frozen=True)
class ExtfHeader:
    path: Path
    encoding: str
    version: int
    category: int
    format_name: str
    format_version: int | None
    created: str
    origin: str
    exported_by: str
    berater: str
    mandant: str
    fy_start: date | None
    account_length: int | None
    period_from: date | None
    period_to: date | None
    label: str
    dictation: str
    currency: str
    columns: list[str] = field(default_factory=list)
    """Column names from line 2 (empty when the file has no name line)."""
    data_line: int = 3
    """1-based physical line of the first data row."""

    @property
    def category_name(self) -> str:
        return CATEGORIES.get(self.category, self.format_name or "unknown")


def _ymd(raw: str, path: Path, column: str, *, required: bool) -> date | None:
    text = raw.strip()
    if not text:
        if required:
            raise IngestError("EXTF header field is empty", file=str(path), line=1, column=column)
        return None
    m = re.fullmatch(r"(\d{4})(\d{2})(\d{2})", text)
    try:
        if not m:
            raise ValueError(text)
        return date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError as exc:
        raise IngestError(f"'{text}' is not a date (YYYYMMDD)", file=str(path), line=1,
                          column=column) from exc


def _int(raw: str) -> int | None:
    try:
        return int(raw.strip())
    except ValueError:
        return None


def read_extf_header(path: Path, encoding: str | None = None) -> ExtfHeader:
    """Parse and check line 1 (and the names on line 2) of an EXTF file."""
    encoding = encoding or detect_encoding(path)
    lines = head_lines(path, encoding, 3)
    if not lines:
        raise IngestError("file is empty", file=str(path))
    fields = [f.strip() for f in split_line(lines[0], ";")]
    if not fields or fields[0] not in ("EXTF", "DTVF"):
        raise IngestError("not a DATEV EXTF file: line 1 must start with \"EXTF\"",
                          file=str(path), line=1, column="Kennzeichen")
    if len(fields) < 16:
        raise IngestError(f"the EXTF header has {len(fields)} fields, expected {HEADER_FIELDS}",
                          file=str(path), line=1)
    fields += [""] * (HEADER_FIELDS - len(fields))
    version = _int(fields[1])
    if version not in SUPPORTED_VERSIONS:
        raise IngestError(f"EXTF header version '{fields[1]}' is not supported "
                          f"(expected {' or '.join(map(str, SUPPORTED_VERSIONS))})",
                          file=str(path), line=1, column="Versionsnummer",
                          hint="export again with the DATEV-Format (EXTF 700)")
    category = _int(fields[2])
    if category is None:
        raise IngestError(f"'{fields[2]}' is not a format category", file=str(path), line=1,
                          column="Formatkategorie")
    is_batch = category == 21
    columns: list[str] = []
    data_line = 2
    if len(lines) > 1 and not re.match(r'^\s*"?[-+]?\d', lines[1]):
        columns = split_line(lines[1], ";")
        data_line = 3
    return ExtfHeader(
        path=path, encoding=encoding, version=version, category=category,
        format_name=fields[3], format_version=_int(fields[4]), created=fields[5],
        origin=fields[7], exported_by=fields[8], berater=fields[10], mandant=fields[11],
        fy_start=_ymd(fields[12], path, "WJ-Beginn", required=is_batch),
        account_length=_int(fields[13]),
        period_from=_ymd(fields[14], path, "Datum vom", required=False),
        period_to=_ymd(fields[15], path, "Datum bis", required=False),
        label=fields[16], dictation=fields[17], currency=fields[21],
        columns=columns, data_line=data_line,
    )


@dataclass(frozen=True)
class Field:
    """A logical column: accepted (normalised) names and its documented 0-based position."""

    label: str
    names: tuple[str, ...]
    position: int | None = None


def match_columns(header: ExtfHeader, fields: dict[str, Field], required: tuple[str, ...],
                  warnings: list[str]) -> dict[str, int]:
    """Map logical fields to column indexes: by name first, then by documented position.

    Without a name line every field takes its position. With one, a *required* field not found
    by name takes its position only when the column there has a name no field claims (with a
    warning), so a file that lacks a column fails clearly instead of reading its neighbour.
    """
    names = [norm_name(c) for c in header.columns]
    found: dict[str, int] = {}
    for key, spec in fields.items():
        idx = next((i for i, n in enumerate(names) if n in spec.names), None)
        if idx is None:
            idx = next((i for i, n in enumerate(names)
                        if any(len(a) >= 8 and n.startswith(a) for a in spec.names)), None)
        if idx is not None:
            found[key] = idx
    claimed = set(found.values())
    known = {a for spec in fields.values() for a in spec.names}
    n_cols = len(header.columns)
    for key, spec in fields.items():
        if key in found or spec.position is None:
            continue
        pos = spec.position
        if not header.columns:  # no name line at all: positions are all we have
            found[key] = pos
            continue
        # with a name line, only required columns fall back to their position (and say so)
        if key in required and pos < n_cols and pos not in claimed and names[pos] not in known:
            found[key] = pos
            claimed.add(pos)
            warnings.append(f"{header.path}: column {spec.label!r} not found by name; "
                            f"using position {pos + 1} ({header.columns[pos]!r})")
    for key in required:
        if key not in found:
            raise IngestError("required column is missing", file=str(header.path),
                              line=header.data_line - 1 if header.columns else 1,
                              column=fields[key].label)
    return found
