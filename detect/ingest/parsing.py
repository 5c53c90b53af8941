"""Vectorised parsers for the text fields ERPs write, each paired with an issue expression.

A parser returns ``(value_expr, issue_expr)``: the typed value (null when unparseable) and a
message (null when fine). Ingest modules gather the issues into the ``ingest_issue`` column;
validation quarantines those rows with the message, so a bad cell is reported with its file,
line and column, and never silently becomes null.
"""

from __future__ import annotations

import functools
import re
import sys
from typing import Any

import polars as pl

from detect.schema import AMOUNT

DEFAULT_DATE_PLACEHOLDERS = ("", "00.00.0000", "00000000", "0000-00-00", "00/00/0000", "0")


def _blank(raw: pl.Expr) -> pl.Expr:
    return raw.is_null() | (raw.str.strip_chars() == "")


def cell_issue(column: str, raw: pl.Expr, bad: pl.Expr, what: str) -> pl.Expr:
    # the text is built only for bad rows (format of a null part is null): most rows have none
    return pl.format("{}: '{}' is not {}", pl.lit(column),
                     pl.when(bad).then(raw).str.slice(0, 40), pl.lit(what))


# --- amounts -----------------------------------------------------------------------------------

_PLAIN_AMOUNT = r"^[-+]?(\d+(\.\d{0,2})?|\.\d{1,2})$"
"""What the full amount parser finally casts; a cell already in this shape needs no rewriting."""


def _decimal_text(raw: pl.Expr, decimal: str, thousands: str | None,
                  allow_trailing_minus: bool) -> pl.Expr:
    """The general rewrite of an amount text into ``_PLAIN_AMOUNT`` (null when impossible)."""
    text = raw.str.strip_chars().str.replace_all(r"[\s\u00a0']", "")
    if thousands:
        # a thousands separator is only allowed in groups of three digits before the decimal mark
        grouped = rf"^[-+]?\d{{1,3}}(\{thousands}\d{{3}})+(\{decimal}\d+)?-?$"
        text = pl.when(text.str.contains(grouped)).then(
            text.str.replace_all(rf"\{thousands}", "", literal=False)).otherwise(text)
    if decimal != ".":
        # a '.' left over (not a valid thousands group) must not turn into a decimal point
        text = pl.when(text.str.contains(".", literal=True)).then(pl.lit(None, pl.String)) \
            .otherwise(text.str.replace_all(rf"\{decimal}", ".", literal=False))
    if allow_trailing_minus:
        text = pl.when(text.str.ends_with("-")).then(
            pl.concat_str(pl.lit("-"), text.str.strip_chars_end("-"))).otherwise(text)
    return pl.when(text.str.contains(_PLAIN_AMOUNT)).then(text)


def decimal_parts(raw: pl.Expr, *, decimal: str = ".", thousands: str | None = None,
                  allow_trailing_minus: bool = True) -> tuple[pl.Expr, pl.Expr]:
    """``(value, blank)`` of an amount column: the decimal(18,2) and whether the cell was empty.

    Fast path (decimal mark '.'): a cell that already is a plain number (``-1234.5``) is cast
    directly; only the other cells (thousands separators, trailing minus, blanks, garbage) go
    through the general rewrite. A plain cell passes that rewrite unchanged, so the values are
    the same, at a seventh of the cost (one regex instead of five string passes).
    """
    if decimal != "." or (thousands is not None and thousands in "0123456789.+-"):
        text = _decimal_text(raw, decimal, thousands, allow_trailing_minus)
        return text.cast(AMOUNT, strict=False), _blank(raw)
    plain = raw.str.contains(_PLAIN_AMOUNT)
    rest = pl.when(plain.not_()).then(raw)          # null for plain cells: nearly free below
    value = pl.coalesce(
        pl.when(plain).then(raw).cast(AMOUNT, strict=False),
        _decimal_text(rest, decimal, thousands, allow_trailing_minus).cast(AMOUNT, strict=False))
    blank = raw.is_null() | (rest.str.strip_chars() == "").fill_null(False)
    return value, blank


def parse_decimal(raw: pl.Expr, column: str, *, decimal: str = ".", thousands: str | None = None,
                  allow_trailing_minus: bool = True) -> tuple[pl.Expr, pl.Expr]:
    """Parse ``1.234,56`` / ``1,234.56`` / ``100,00-`` into an exact decimal(18,2)."""
    value, blank = decimal_parts(raw, decimal=decimal, thousands=thousands,
                                 allow_trailing_minus=allow_trailing_minus)
    return value, cell_issue(column, raw, ~blank & value.is_null(), "a valid amount")


# --- dates -------------------------------------------------------------------------------------

_DIRECTIVE = re.compile(r"%[-_0^#]?(?:\.|:|::|\d)?[A-Za-z%+]")


def literal_skeleton(fmt: str) -> str:
    """The literal characters of a strptime format (``%d.%m.%Y`` -> ``..``)."""
    return _DIRECTIVE.sub("", fmt)


def format_order(formats: list[str] | tuple[str, ...], prefer: str | None) -> list[str]:
    """``formats`` with ``prefer`` first, when that cannot change which format wins a value.

    The multi-format parse takes the first format that accepts a value. Moving ``prefer`` ahead
    of an earlier format is only harmless when no value can match both; formats with different
    literal characters (``%Y%m%d`` vs ``%Y-%m-%d`` vs ``%d.%m.%Y``) cannot, formats with the same
    ones can (``%m/%d/%Y`` vs ``%d/%m/%Y``), so those keep their configured order.
    """
    formats = list(formats)
    if prefer is None or prefer not in formats:
        return formats
    k = formats.index(prefer)
    if any(literal_skeleton(f) == literal_skeleton(prefer) for f in formats[:k]):
        return formats
    return [prefer, *formats[:k], *formats[k + 1:]]


@functools.lru_cache(maxsize=256)
def _placeholder_is_a_date(formats: tuple[str, ...], placeholders: tuple[str, ...],
                           dtype: pl.DataType) -> bool:
    """Whether a placeholder parses as a date (``31.12.9999`` configured as "no date")."""
    texts = pl.Series([p.strip() for p in placeholders], dtype=pl.String)
    return any(texts.str.strptime(dtype, f, strict=False).is_not_null().any() for f in formats)


def date_parts(raw: pl.Expr, formats: list[str] | tuple[str, ...], placeholders: tuple[str, ...],
               dtype: pl.DataType, prefer: str | None = None) -> tuple[pl.Expr, pl.Expr]:
    """``(value, empty)`` of a date/timestamp column; ``empty``: null or a placeholder.

    Result of the general rule: the first of ``formats`` that accepts the trimmed text, null
    for placeholders. Computed fast: the raw cell is parsed with one format (``prefer``, the
    format detected from a sample, when ``format_order`` allows it; else the first), and only
    cells that fail go through the general rule. strptime ignores leading blanks and rejects
    trailing ones, so a raw cell it accepts has the value its trimmed text would get. Not used
    when a placeholder is itself a valid date (it must become null, never a date).
    """
    formats = list(formats)

    def general(text: pl.Expr) -> pl.Expr:
        return pl.coalesce([text.str.strptime(dtype, f, strict=False) for f in formats])

    if _placeholder_is_a_date(tuple(formats), tuple(placeholders), dtype):
        text = raw.str.strip_chars()
        empty = text.is_null() | text.is_in(list(placeholders))
        return pl.when(empty).then(None).otherwise(general(text)), empty
    first = raw.str.strptime(dtype, format_order(formats, prefer)[0], strict=False)
    rest = pl.when(first.is_null()).then(raw).str.strip_chars()   # null where parsed
    placeholder = rest.is_in(list(placeholders))
    value = pl.coalesce(first, pl.when(placeholder.not_()).then(general(rest)))
    return value, raw.is_null() | placeholder.fill_null(False)


def dominant_format(sample: pl.Series, formats: list[str] | tuple[str, ...],
                  dtype: pl.DataType) -> str | None:
    """The format that parses most of ``sample`` (ties: the earlier one); None if none does.

    Only decides which format is tried first (see ``date_parts``); results never depend on it.
    """
    text = sample.cast(pl.String).str.strip_chars().drop_nulls()
    if text.is_empty():
        return None
    counts = [int(text.str.strptime(dtype, f, strict=False).is_not_null().sum()) for f in formats]
    best = max(range(len(formats)), key=lambda i: (counts[i], -i)) if formats else None
    return formats[best] if best is not None and counts[best] else None


def parse_date(raw: pl.Expr, column: str, formats: list[str] | tuple[str, ...],
               placeholders: tuple[str, ...] = DEFAULT_DATE_PLACEHOLDERS,
               prefer: str | None = None) -> tuple[pl.Expr, pl.Expr]:
    """Try each strptime format in turn; placeholders such as ``00.00.0000`` become null."""
    value, empty = date_parts(raw, formats, placeholders, pl.Date(), prefer)
    what = f"a date ({' or '.join(formats)})"
    issue = cell_issue(column, raw, ~empty & value.is_null(), what)
    return value, issue


def parse_datetime(raw: pl.Expr, column: str, formats: list[str] | tuple[str, ...],
                   placeholders: tuple[str, ...] = DEFAULT_DATE_PLACEHOLDERS,
                   prefer: str | None = None) -> tuple[pl.Expr, pl.Expr]:
    value, empty = date_parts(raw, formats, placeholders, pl.Datetime("us"), prefer)
    what = f"a timestamp ({' or '.join(formats)})"
    issue = cell_issue(column, raw, ~empty & value.is_null(), what)
    return value, issue


# --- whole numbers, text -----------------------------------------------------------------------

def int_parts(raw: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """``(value, blank)`` of a whole-number column. The raw cell is cast first (the cast rejects
    blanks around the digits, so an accepted cell has its trimmed value); only the rest is
    trimmed and cast again."""
    first = raw.cast(pl.Int64, strict=False)
    rest = pl.when(first.is_null()).then(raw).str.strip_chars()
    value = pl.coalesce(first, rest.cast(pl.Int64, strict=False))
    return value, raw.is_null() | (rest == "").fill_null(False)


def parse_int(raw: pl.Expr, column: str) -> tuple[pl.Expr, pl.Expr]:
    value, blank = int_parts(raw)
    issue = cell_issue(column, raw, ~blank & value.is_null(), "a whole number")
    return value, issue


def combine_time(date: pl.Expr, time_raw: pl.Expr) -> pl.Expr:
    """Date + ``HH:MM:SS`` (or ``HHMMSS``) text -> datetime; null when either is missing.

    The usual ``HHMMSS`` / ``HMMSS`` cell is read as one number (h = n // 10000, ...); other
    shapes keep the general rule: drop non-digits, pad to six, read HH, MM, SS.
    """
    number = time_raw.cast(pl.Int64, strict=False)
    # the cast accepts '+' and digits only (no blanks): for such a cell of at most six
    # characters the general rule reads exactly these three parts
    plain = number.is_not_null() & (number >= 0) & (time_raw.str.len_bytes() <= 6)
    digits = pl.when(plain.not_()).then(time_raw).str.replace_all(r"\D", "").str.pad_start(6, "0")
    general = (digits.str.slice(0, 2).cast(pl.Int64, strict=False) * 3600
               + digits.str.slice(2, 2).cast(pl.Int64, strict=False) * 60
               + digits.str.slice(4, 2).cast(pl.Int64, strict=False))
    fast = number // 10000 * 3600 + number // 100 % 100 * 60 + number % 100
    seconds = pl.when(plain).then(fast).otherwise(general)
    return date.cast(pl.Datetime("us")) + pl.duration(seconds=seconds)


def gather_issues(issues: list[pl.Expr]) -> pl.Expr:
    """One ``ingest_issue`` text per row: all parse problems joined, null when none."""
    if not issues:
        return pl.lit(None, dtype=pl.String).alias("ingest_issue")
    joined = pl.concat_str(issues, separator="; ", ignore_nulls=True)
    return pl.when(joined == "").then(None).otherwise(joined).alias("ingest_issue")


def strip_or_null(raw: pl.Expr) -> pl.Expr:
    """Trimmed text; empty strings become null (ERPs write "" for absent values).

    when/then, not ``replace("", None)``: ``replace`` is faster in memory but not streamable
    (Polars 2.1 falls back to the in-memory engine: the 1M-line ingest peaked at 0.97 GB)."""
    text = raw.str.strip_chars()
    return pl.when(text == "").then(None).otherwise(text)


# --- text columns trimmed after the read, only where needed ------------------------------------

WHITESPACE = ("\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(chr(c) for c in range(0x2000, 0x200B))
              + "\u2028\u2029\u202f\u205f\u3000")
"""What ``str.strip_chars()`` removes (Unicode White_Space; a test compares every code point)."""


def _byte_table(index: int) -> Any:
    import numpy as np

    table = np.zeros(256, dtype=bool)
    table[[ch.encode()[index] for ch in WHITESPACE]] = True
    return table


_FIRST_BYTES = _byte_table(0)
"""First UTF-8 byte of a whitespace character: a value starting with another byte needs no
trimming at its start."""
_LAST_BYTES = _byte_table(-1)
"""Last UTF-8 byte of a whitespace character (likewise at the end; this set also holds the last
byte of some letters, e.g. 'ß', which only costs a trim that changes nothing)."""


def text_state(values: pl.Series | Any) -> tuple[bool, bool]:
    """``(may need trimming, has empty strings)`` of a String column (a Polars Series or an
    Arrow array), from the Arrow string views alone: the first and last byte of each value, no
    per-value string operation.

    Why: ``strip_chars`` on every text column was a quarter of the ingest's CPU (0.37 s per
    1M ADS lines), and real exports rarely pad their fields. A value that neither starts nor
    ends with a byte a whitespace character can start or end with is its own trimmed value;
    when any value might not be, the caller trims the whole column as before. Unknown layouts
    answer (True, True): trim."""
    import numpy as np
    import pyarrow as pa

    arrow = values.to_arrow(compat_level=pl.CompatLevel.newest()) \
        if isinstance(values, pl.Series) else values
    empty = False
    for chunk in arrow.chunks if isinstance(arrow, pa.ChunkedArray) else [arrow]:
        untrimmed, chunk_empty = _chunk_state(chunk, np, pa)
        if untrimmed:
            return True, True
        empty = empty or chunk_empty
    return False, empty


def _chunk_state(chunk: Any, np: Any, pa: Any) -> tuple[bool, bool]:
    """``text_state`` of one Arrow array (not combined: concatenating views cost more than
    the checks). Lookups by ``np.take`` and view positions from a cached ``_view_ends``
    (indexing by ``table[bytes]`` and a fresh ``arange`` per array cost a quarter more:
    1M lines, 14 columns, 0.23 -> 0.18 CPU s)."""
    n, offset = len(chunk), chunk.offset
    if n == 0 or chunk.null_count == n:
        return False, False
    if not pa.types.is_string_view(chunk.type) or sys.byteorder != "little":
        return True, True   # other layouts (large_string, ...) or views read below as "<i4"
    buffers = chunk.buffers()
    raw = np.frombuffer(buffers[1], dtype=np.uint8)[offset * 16:(offset + n) * 16]
    length = raw.view("<i4")[::4]   # length, then 12 bytes: the value (up to 12 bytes) or
    if chunk.null_count:            # its prefix, buffer index and offset
        first = offset // 8
        bits = np.unpackbits(np.frombuffer(buffers[0], dtype=np.uint8)
                             [first:(offset + n + 7) // 8 + 1], bitorder="little")
        valid = bits[offset - 8 * first:offset - 8 * first + n].view(bool)
        present = (length > 0) & valid
        empty = bool((valid & (length == 0)).any())
        end = np.clip(length, 0, 12)    # a null's view is not data (Arrow leaves its bytes
    else:                               # unspecified): clipped, and masked below
        present = length > 0
        empty = not present.all()
        end = np.minimum(length, 12)
    inline = present & (length <= 12)
    # first byte: byte 4 of every view; last byte of a value of up to 12 bytes: byte 3 + length
    if (np.take(_FIRST_BYTES, raw[4::16]) & present).any():
        return True, True
    if (np.take(_LAST_BYTES, np.take(raw, _view_ends(n, np) + end)) & inline).any():
        return True, True
    outside = np.flatnonzero(present ^ inline)
    if outside.size:  # longer values: their last byte in the data buffers (copied together)
        views = raw.view("<i4").reshape(n, 4)
        data = buffers[2:]
        sizes = np.array([b.size for b in data], dtype=np.int64)
        if int(sizes.sum()) > 8 * int(length[outside].sum()) + (1 << 20):
            return True, True   # buffers shared far beyond these values: trim instead
        joined = np.concatenate([np.frombuffer(b, dtype=np.uint8) for b in data])
        base = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        ends = base[views[outside, 2]] + views[outside, 3] + length[outside] - 1
        if np.take(_LAST_BYTES, joined[ends]).any():
            return True, True
    return False, empty


_VIEW_ENDS: list[Any] = []


def _view_ends(n: int, np: Any) -> Any:
    """``3 + 16 * i`` for i < n (byte before the value in view i), from a cached array."""
    if not _VIEW_ENDS or _VIEW_ENDS[0].size < n:
        _VIEW_ENDS[:] = [np.arange(3, 16 * max(n, 1 << 16), 16, dtype=np.intp)]
    return _VIEW_ENDS[0][:n]


def finish_text(batch: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """``columns`` of ``batch`` as ``strip_or_null`` would give them, computed only where
    ``text_state`` cannot rule a change out (the ingest defers trimming to here, see
    ``mapped.Mapper.typed``)."""
    fixes = []
    table = batch.select(columns).to_arrow(compat_level=pl.CompatLevel.newest())  # no copy
    for name in columns:
        untrimmed, empty = text_state(table.column(name))
        if untrimmed:
            fixes.append(strip_or_null(pl.col(name)).alias(name))
        elif empty:
            fixes.append(pl.when(pl.col(name) == "").then(None).otherwise(pl.col(name))
                         .alias(name))
    return batch.with_columns(fixes) if fixes else batch
