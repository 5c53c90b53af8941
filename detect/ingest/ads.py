"""AICPA Audit Data Standard: ``GL_Detail`` plus optional listings in the same delivery.

Files are recognised by their header, not their name: the GL detail (Journal_ID,
GL_Account_Number, Amount), Chart_Of_Accounts, Supplier/Vendor listing, User_Listing, vendor
change logs, cost centers, and an ADS-style control log (Journal_ID, indicator, Total).
Column names are matched tolerantly (case, spaces, underscores), because real exports have
quirks such as the header ``JE_Header_ Description``.

Mapping decisions (see docs/ingest_formats.md):

- ``Amount`` with ``Amount_Credit_Debit_Indicator`` D/C (or SAP S/H, Debit/Credit) becomes a
  signed amount; without an indicator the amount's own sign is kept.
- ``entity`` is the journal's first ``Business_Unit_Code`` (so a journal spanning business units
  stays whole), unless the entity setting names one explicitly.
- ``posting_date`` is ``Effective_Date`` as delivered, placeholders included; the setting
  ``posting_date_column`` takes it from another column, and a warning says when to use it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from detect.config import Settings
from detect.errors import IngestError
from detect.ingest import IngestResult, InputFile, Materialised, materialise
from detect.ingest.mapped import (
    LINE, AmountSpec, Profile, SourceOptions, check_not_blank, find_column, normalise_name,
    open_delimited, scan_delimited, to_bookings,
)
from detect.ingest.parsing import parse_date, parse_datetime, parse_decimal, strip_or_null
from detect.ingest.textio import decode_head, read_head, sha256_of
from detect.schema import MASTER_SCHEMAS, conform

NAME = "ads"

DATE_FORMATS = ["%Y%m%d", "%Y-%m-%d", "%m/%d/%Y", "%d.%m.%Y", "%Y/%m/%d"]
DATETIME_FORMATS = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y%m%d%H%M%S", "%Y%m%d %H%M%S",
                    "%m/%d/%Y %H:%M:%S", "%d.%m.%Y %H:%M:%S", "%Y-%m-%d %H:%M:%S%.f"]

GL_ALIASES: dict[str, list[str]] = {
    "journal_id": ["Journal_ID"],
    "line_no": ["Journal_ID_Line_Number", "JE_Line_Number", "Line_Number"],
    "posting_date": ["Effective_Date", "Posting_Date"],
    "document_date": ["Document_Date"],
    "entered_date": ["Entered_Date"],
    "entered_time": ["Entered_Time"],
    "entered_by": ["Entered_By"],
    "approved_by": ["Approved_By"],
    "gl_account": ["GL_Account_Number", "GL_Account_ID", "Account_Number"],
    "description": ["JE_Line_Description", "Line_Description"],
    "header_description": ["JE_Header_Description", "Header_Description"],
    "document_type": ["Document_Type", "JE_Document_Type"],
    "source": ["Source"],
    "fiscal_year": ["Fiscal_Year"],
    "period": ["Period", "Fiscal_Period"],
    "currency": ["Amount_Currency", "Currency"],
    "entity": ["Business_Unit_Code", "Entity", "Company_Code"],
    "cost_center": ["Cost_Center", "Cost_Centre"],
    "vendor_id": ["Supplier_Account_ID", "Vendor_ID", "Vendor_Account_ID", "Supplier_ID"],
    "reference": ["Reference_Number", "Reference", "Invoice_Number"],
    "bank_account": ["Bank_Account", "IBAN", "Bank_Account_Number"],
    "reversal_of": ["Reversal_Journal_ID"],
}

MASTER_ALIASES: dict[str, dict[str, list[str]]] = {
    "accounts": {
        "gl_account": ["GL_Account_Number", "GL_Account_ID", "Account_Number", "gl_account"],
        "account_name": ["GL_Account_Name", "Account_Name", "Account_Description"],
        "account_type": ["Account_Type", "GL_Account_Type"],
    },
    "vendors": {
        "vendor_id": ["Supplier_Account_ID", "Supplier_ID", "Vendor_ID", "Vendor_Account_ID"],
        "vendor_name": ["Supplier_Account_Name", "Supplier_Name", "Vendor_Name",
                        "Vendor_Account_Name"],
        "bank_account": ["Supplier_Bank_Account", "Supplier_IBAN", "Bank_Account", "IBAN",
                         "Bank_Account_Number"],
        "created_at": ["Supplier_Account_Creation_Date", "Supplier_Created_Date", "Created_At",
                       "Creation_Date", "Created_Date", "Supplier_Added_Date"],
        "is_person": ["Is_Person", "Natural_Person", "Supplier_Is_Person"],
    },
    "vendor_changes": {
        "vendor_id": ["Supplier_Account_ID", "Supplier_ID", "Vendor_ID", "Vendor_Account_ID"],
        "changed_at": ["Changed_At", "Change_Date", "Change_Timestamp", "Modified_Date",
                       "Last_Modified_Date", "Changed_Date"],
        "field": ["Field", "Field_Name", "Changed_Field", "Change_Field"],
        "old_value": ["Old_Value", "Value_Old", "Previous_Value"],
        "new_value": ["New_Value", "Value_New"],
        "changed_by": ["Changed_By", "Modified_By", "Last_Modified_By", "Change_User"],
    },
    "users": {
        "user_id": ["User_ID", "User", "Username"],
        "department": ["Department", "Department_Name", "Dept"],
        "approval_limit": ["Approval_Limit", "Posting_Limit"],
        "is_service": ["Is_Service", "Service_Account", "Is_Service_User", "Service_User"],
    },
    "cost_centers": {
        "cost_center": ["Cost_Center", "Cost_Center_ID", "Cost_Centre"],
        "cost_center_name": ["Cost_Center_Name", "Cost_Centre_Name", "Cost_Center_Description"],
        "department": ["Department", "Department_Name"],
    },
}


def _has(header: set[str], aliases: list[str]) -> bool:
    return any(normalise_name(a) in header for a in aliases)


def _header_names(text: str) -> set[str]:
    first = text.lstrip("\ufeff").splitlines()[0] if text.strip() else ""
    sep = max((";", ",", "\t", "|"), key=first.count)
    return {normalise_name(c.strip().strip('"')) for c in first.split(sep)}


def classify(text: str) -> str | None:
    """Role of an ADS file from its header: gl, control, or a master-data name."""
    h = _header_names(text)
    journal = "journalid" in h
    if journal and _has(h, GL_ALIASES["gl_account"]) and (
            "amount" in h or {"debitamount", "creditamount"} <= h):
        return "gl"
    if journal and "total" in h:
        return "control"
    if journal:
        return None
    m = MASTER_ALIASES
    if _has(h, m["vendor_changes"]["vendor_id"]) and (
            _has(h, m["vendor_changes"]["field"]) or _has(h, m["vendor_changes"]["new_value"])):
        return "vendor_changes"
    if _has(h, m["vendors"]["vendor_id"]):
        return "vendors"
    if _has(h, m["accounts"]["gl_account"]):
        return "accounts"
    if _has(h, m["users"]["user_id"]):
        return "users"
    if _has(h, m["cost_centers"]["cost_center"]):
        return "cost_centers"
    return None


def sniff(path: Path, text: str) -> float:
    return 0.95 if classify(text) == "gl" else 0.0


def gl_profile(names: list[str], settings: Settings) -> Profile:
    """The built-in ADS profile, resolved against this file's (quirky) header."""
    columns: dict[str, list[str]] = {}
    for key, aliases in GL_ALIASES.items():
        found = next((c for a in aliases if (c := find_column(names, a))), None)
        if found:
            columns[key] = [found]
    if settings.posting_date_column:
        found = find_column(names, settings.posting_date_column)
        if found is None:
            raise IngestError(f"posting_date_column {settings.posting_date_column!r} is not in "
                              "the GL detail", column=settings.posting_date_column,
                              hint=f"columns: {', '.join(names)}")
        columns["posting_date"] = [found]
    missing = [k for k in ("journal_id", "gl_account", "posting_date") if k not in columns]
    if missing:
        raise IngestError(f"required ADS column {GL_ALIASES[missing[0]][0]} is missing",
                          column=GL_ALIASES[missing[0]][0],
                          hint=f"the header has: {', '.join(names)}")
    amount = find_column(names, "Amount")
    indicator = find_column(names, "Amount_Credit_Debit_Indicator") \
        or find_column(names, "Debit_Credit_Indicator")
    if amount:
        spec = AmountSpec(column=amount, dc_column=indicator)
    else:
        spec = AmountSpec(debit_column=find_column(names, "Debit_Amount"),
                          credit_column=find_column(names, "Credit_Amount"))
    if settings.entity != "default":
        columns.pop("entity", None)
    return Profile("built-in ADS profile", SourceOptions(
        encoding="auto", delimiter=None, decimal=".", thousands=",", date_formats=DATE_FORMATS,
        datetime_formats=DATETIME_FORMATS), columns, spec)


def _required_column_error(path: Path, err: IngestError) -> IngestError:
    return IngestError(err.message, file=str(path), column=err.column, hint=err.hint)


PLACEHOLDER_FLAG = "__ingest_posting_placeholder"
"""Helper column: the delivered posting-date text is a placeholder (for the warning)."""
UNIT_GIVEN = "__ingest_unit_given"
"""Helper column: the line names a business unit (``entity`` is already filled with the
default where it does not; ``finish_gl`` needs the difference)."""


@dataclass
class GLFile:
    """One GL_Detail file as read lazily, plus what its whole-file steps need."""

    frame: pl.LazyFrame
    check: Callable[[], object]
    path: Path
    posting_column: str
    """The source column of posting_date (named in the placeholder warning)."""
    others: list[str]
    """Alternative date columns in the file, suggested by the placeholder warning."""
    unit_column: bool
    """entity comes from the file's Business_Unit_Code (one unit per journal, see below)."""
    trim_later: list[str]
    """Text columns delivered untrimmed (``IngestResult.trim_later``)."""


def read_gl(path: Path, settings: Settings, workdir: Path) -> GLFile:
    """The GL detail as canonical bookings (lazy), without reading the file yet.

    What needs the whole file (is there one business unit per journal? how many placeholder
    posting dates?) is answered by ``finish_gl`` on the materialised bookings.
    """
    scan = open_delimited(path, workdir=workdir)
    raw = scan.frame
    names = [n for n in raw.collect_schema().names() if n != LINE]
    try:
        profile = gl_profile(names, settings)
    except IngestError as err:
        raise _required_column_error(path, err) from None
    col = profile.columns["posting_date"][0]
    placeholders = [p.replace("-", "") for p in settings.validation.placeholder_dates] \
        + list(settings.validation.placeholder_dates)
    trim_later: list[str] = []
    frame = to_bookings(raw, profile, settings, str(path), scan.sample, extra={
        PLACEHOLDER_FLAG: pl.col(col).str.strip_chars().is_in(placeholders)},
        trim_later=trim_later)
    # the usual result of ``finish_gl`` (one unit per journal) written right away, so that the
    # materialised file is final; which lines named no unit is kept for the check
    frame = frame.with_columns(pl.col("entity").is_not_null().alias(UNIT_GIVEN),
                               pl.coalesce("entity", pl.lit(settings.entity)))
    others = [c for c in ("Entered_Date", "Document_Date") if find_column(names, c)]
    return GLFile(frame, scan.check, path, col, others, "entity" in profile.columns, trim_later)


class GLStats:
    """What ``finish_gl`` needs, gathered from the batches ``materialise`` writes (an observer,
    see ``IngestResult.observers``): lines and placeholder posting dates per file, and the
    summary of ``_adjacent_units`` (height, runs of the same (file, journal), distinct keys,
    whether a line names another unit than the line before it in the same journal). Queried
    on the Parquet instead, these cost 0.17 CPU s per 1M lines; here ~0.05.

    Batches come in delivered order; a run that continues across a batch boundary is counted
    once, and the unit is compared across the boundary too. Distinct keys are counted by hash
    over the first line of each run (every key starts some run): hash(journal_id) +
    hash(source_file), the same function of the key in every batch (a collision can only lower
    the count, see ``_one_unit_per_journal``)."""

    def __init__(self, units: bool) -> None:
        self.units = units
        self.counts: dict[str, list[int]] = {}
        self.height = 0
        self.runs = 0
        self.differs = False
        self._hashes: list[pl.Series] = []
        self._distinct = 0
        self._last: tuple | None = None

    def __call__(self, batch: pl.DataFrame) -> None:
        if batch.height == 0:
            return
        one, name, flagged = batch.select(  # a batch usually lies within one file: no group_by
            pl.col("source_file").eq_missing(pl.col("source_file").first()).all(),
            pl.col("source_file").first().alias("name"), pl.col(PLACEHOLDER_FLAG).sum()).row(0)
        per_file = [(name, batch.height, flagged)] if one and name is not None else \
            batch.group_by("source_file").agg(pl.len(), pl.col(PLACEHOLDER_FLAG).sum()).rows()
        for file, n, p in per_file:
            known = self.counts.setdefault(file, [0, 0])
            known[0] += n
            known[1] += p
        if not self.units:  # finish_gl checks business units only when the file has them
            return
        file, journal = pl.col("source_file"), pl.col("journal_id")
        unit = pl.when(pl.col(UNIT_GIVEN)).then(pl.col("entity"))  # as delivered
        same = file.eq_missing(file.shift(1)) & journal.eq_missing(journal.shift(1))
        frame = batch.select(file, journal, unit.alias("unit"), same.alias("same"))
        starts = frame.filter(~pl.col("same") | (pl.int_range(pl.len()) == 0))
        runs, differs = frame.select(
            (~pl.col("same")).slice(1).sum().alias("runs"),
            (pl.col("same") & ~pl.col("unit").eq_missing(pl.col("unit").shift(1)))
            .slice(1).any().alias("differs")).row(0)
        head = frame.row(0)[:3]
        continues = self._last is not None and self._last[:2] == head[:2]
        self.height += batch.height
        self.runs += runs + (0 if continues else 1)
        self.differs = self.differs or bool(differs) or (
            continues and self._last[2] != head[2])  # type: ignore[index]
        # key hash: hash(journal_id) + hash(source_file) (wrapping); for a batch of one file the
        # file's hash is one scalar (a struct hash of both columns cost 0.03 CPU s per 1M lines)
        file_hash = pl.lit(pl.Series([name], dtype=pl.String).hash()[0], pl.UInt64) \
            if one and name is not None else pl.col("source_file").hash()
        self._hashes.append(starts.select(pl.col("journal_id").hash() + file_hash).to_series())
        self._last = frame.row(frame.height - 1)[:3]

    def adjacent(self) -> pl.DataFrame:
        """The one-row result ``_adjacent_units`` would give for everything seen."""
        if self._hashes:   # counted once, then dropped (40 MB at 10M lines)
            self._distinct = pl.concat(self._hashes).n_unique()
            self._hashes = []
        distinct = self._distinct
        return pl.DataFrame({"height": [self.height], "runs": [max(self.runs, 1)],
                             "distinct": [distinct], "differs": [self.differs]})


def finish_gl(done: Materialised, gl_files: list[GLFile], settings: Settings,
              workdir: Path, warnings: list[str], warn_at: list[int],
              stats: GLStats | None = None) -> Materialised:
    """Whole-file steps on the materialised bookings (Parquet: a few columns, cheap).

    - One entity per journal: the first business unit named on any of its lines. In the usual
      export every line names its journal's unit, and entity is just the line's own unit (or
      the default), as ``read_gl`` wrote it; otherwise the first unit by line is joined on and
      the bookings are written again (rare; a lazy join here would keep the parsed file in
      memory: 5.8 GB at 10M lines).
    - The placeholder warning per file, inserted where the reader met the file (``warn_at``).
    """
    bookings = done.frame
    key = ["source_file", "journal_id"]
    units = any(gl.unit_column for gl in gl_files)
    if units:  # entity as delivered (null where a line names no unit)
        bookings = bookings.with_columns(
            pl.when(pl.col(UNIT_GIVEN)).then(pl.col("entity")).alias("entity"))
    if stats is not None:  # gathered while the batches were written
        counts = {f: (n, p) for f, (n, p) in stats.counts.items()}
        adjacent = [stats.adjacent()] if units else []
    else:  # both summaries in one go (Polars runs them side by side over one scan)
        summary, *adjacent = pl.collect_all(
            [bookings.group_by("source_file")
             .agg(pl.len().alias("n"), pl.col(PLACEHOLDER_FLAG).sum().alias("p"))]
            + ([_adjacent_units(bookings, key)] if units else []))
        counts = {r["source_file"]: (r["n"], r["p"]) for r in summary.iter_rows(named=True)}
    # from the back, so that earlier positions stay valid
    for gl, at in reversed(list(zip(gl_files, warn_at, strict=True))):
        n, p = counts.get(str(gl.path), (0, 0))
        warnings[at:at] = placeholder_warnings(gl, n, p, settings)
    if not units or _one_unit_per_journal(bookings, key, adjacent[0]):
        return done
    first_bu = (bookings.filter(pl.col("entity").is_not_null()).group_by(key)
                .agg(pl.col("entity").sort_by("source_line").first().alias("__bu")))
    joined = (bookings.join(first_bu, on=key, how="left", maintain_order="left",
                            nulls_equal=True)
              .with_columns(pl.coalesce("__bu", pl.lit(settings.entity)).alias("entity"))
              .drop("__bu"))
    # bank accounts are already pseudonymised (if ingest was given the key): not again
    return materialise(joined, workdir)


def _adjacent_units(frame: pl.LazyFrame, key: list[str]) -> pl.LazyFrame:
    """One row: height, runs of the same key, distinct keys (by hash), and whether a line names
    another unit than the line before it in the same journal (see ``_one_unit_per_journal``)."""
    file, journal, unit = (pl.col(c) for c in (*key, "entity"))
    same = file.eq_missing(file.shift(1)) & journal.eq_missing(journal.shift(1))
    return frame.select(
        pl.len().alias("height"), ((~same).slice(1).sum() + 1).alias("runs"),
        pl.struct(key).hash().n_unique().alias("distinct"),
        (same & ~unit.eq_missing(unit.shift(1))).slice(1).any().alias("differs"))


def _one_unit_per_journal(frame: pl.LazyFrame, key: list[str],
                          adjacent: pl.DataFrame | None = None) -> bool:
    """True when no journal names two business units or leaves the unit empty on some lines
    only.

    Exports list a journal's lines together: then comparing each line with the one before
    suffices (one pass over three columns, ``_adjacent_units``, or its result ``adjacent``).
    Whether they do is one count: runs of the same key == distinct keys (counted by hash: a
    collision can only lower the distinct count and so send us to the exact aggregate, never
    skip it). Otherwise one aggregate per journal.
    """
    if adjacent is None:
        adjacent = _adjacent_units(frame, key).collect()
    height, runs, distinct, differs = adjacent.row(0)
    if height == 0:
        return True
    if runs == distinct:
        return not differs
    per_journal = (frame.select(*key, "entity").group_by(key)
                   .agg(pl.col("entity").n_unique().alias("units"),
                        pl.col("entity").null_count().alias("empty"), pl.len().alias("n")))
    mixed = per_journal.filter((pl.col("units") > 1)
                               | ((pl.col("empty") > 0) & (pl.col("empty") < pl.col("n"))))
    return mixed.select(pl.len()).collect().item() == 0


def placeholder_warnings(gl: GLFile, n: int, p: int, settings: Settings) -> list[str]:
    """Tell the user when the posting-date column is mostly a placeholder, and what to do."""
    if n == 0 or p / n < settings.validation.placeholder_share_warn:
        return []
    col, others = gl.posting_column, gl.others
    return [f"{gl.path.name}: posting_date comes from {col!r}, which holds a placeholder date on "
            f"{p:,} of {n:,} rows ({p / n:.0%}). Kept as delivered; to take posting_date from "
            f"another column set posting_date_column = \"{(others or ['Entered_Date'])[0]}\" "
            f"in belegwacht.toml (candidates: {', '.join(others) or 'none found'})."]


def _bool(expr: pl.Expr) -> pl.Expr:
    text = strip_or_null(expr).str.to_lowercase()
    return (pl.when(text.is_in(["1", "true", "yes", "ja", "y", "j", "x", "wahr"])).then(True)
            .when(text.is_in(["0", "false", "no", "nein", "n", "falsch"])).then(False)
            .otherwise(None))


def read_master(path: Path, name: str, workdir: Path) -> tuple[pl.DataFrame, list[str]]:
    """A listing file -> the master schema ``name``; unparseable cells become null + a warning."""
    raw = scan_delimited(path, workdir=workdir)
    names = raw.collect_schema().names()
    schema = MASTER_SCHEMAS[name]
    exprs, issues = [], []
    for col, dtype in schema.items():
        src = next((c for a in MASTER_ALIASES[name].get(col, [col]) + [col]
                    if (c := find_column(names, a))), None)
        if src is None:
            continue
        text = pl.col(src)
        if dtype == pl.String:
            exprs.append(strip_or_null(text).alias(col))
            continue
        if dtype == pl.Boolean:
            exprs.append(_bool(text).alias(col))
            continue
        if dtype == pl.Date:
            value, issue = parse_date(text, src, DATE_FORMATS)
        elif isinstance(dtype, pl.Datetime):
            value, issue = parse_datetime(text, src, DATETIME_FORMATS + DATE_FORMATS)
        else:
            value, issue = parse_decimal(text, src)
        exprs.append(value.alias(col))
        issues.append(issue.alias(f"__issue_{col}"))
    frame = raw.select([*exprs, *issues, pl.col(LINE)]).sort(LINE).collect()
    warnings = []
    for issue_col in [c for c in frame.columns if c.startswith("__issue_")]:
        bad = frame.filter(pl.col(issue_col).is_not_null())
        if bad.height:
            warnings.append(f"{path.name} line {bad[LINE][0]}: {bad[issue_col][0]} "
                            f"({bad.height} such cells left empty)")
    out = conform(frame.lazy(), schema).collect()
    key = schema.names()[0]
    if key not in frame.columns:
        raise IngestError(f"listing has no {key} column", file=str(path), column=key)
    return out, warnings


def read(files: list[Path], settings: Settings, workdir: Path) -> IngestResult:
    from detect.ingest.control import read_control_totals  # control imports mapped, as we do

    gl_files: list[GLFile] = []
    warn_at: list[int] = []
    result = IngestResult(NAME, pl.LazyFrame())
    masters: dict[str, list[pl.DataFrame]] = {}
    for path in files:
        check_not_blank(path)
        role = classify(decode_head(read_head(path)))
        if role is None:
            result.ignored.append(str(path))
            continue
        digest = InputFile(str(path), sha256_of(path), path.stat().st_size)
        if role == "gl":
            gl_files.append(read_gl(path, settings, workdir))
            warn_at.append(len(result.warnings))
        elif role == "control":
            result.control_totals.append(read_control_totals(path))
            digest.role = "control_totals"
        else:
            frame, warnings = read_master(path, role, workdir)
            masters.setdefault(role, []).append(frame)
            result.warnings.extend(warnings)
            digest.role = f"master:{role}"
            digest.rows = frame.height
        result.inputs.append(digest)
    if not gl_files:
        raise IngestError("no ADS GL_Detail file (header with Journal_ID, GL_Account_Number, "
                          "Amount) in the delivery", file=", ".join(str(f) for f in files[:3]))
    result.bookings = pl.concat([gl.frame for gl in gl_files], how="vertical")
    result.deferred_checks = [gl.check for gl in gl_files]
    # trimming an already trimmed column changes nothing: the union is safe for every file
    result.trim_later = sorted({c for gl in gl_files for c in gl.trim_later})
    stats = GLStats(any(gl.unit_column for gl in gl_files))
    result.observers.append(stats)
    result.finishers.append(lambda done: finish_gl(
        done, gl_files, settings, workdir, result.warnings, warn_at, stats))
    result.master = {k: pl.concat(v, how="vertical") for k, v in masters.items()}
    return result
