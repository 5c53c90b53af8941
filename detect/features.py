"""Per-line features for the outlier models, computed vectorised over an entity's history.

Why these features: an auditor asks "is this amount usual *for this account*?", "has this user
ever booked here?", "was this keyed in at 3 a.m.?". Each feature answers one such question as a
number where **higher = more unusual** (a few date gaps are two-sided), so every detector and
every explanation reads it the same way. Categorical attributes (account, user, vendor, bank
account) enter only as frequencies/rarities, never as raw codes: a code has no order and a
model must not learn that account 4711 is "bigger" than 0815.

Counts and medians are taken over the whole history handed in (the entity's ledger), so a
line is judged against everything the entity has booked. Missing source columns give a
constant feature, which ``active_features`` drops and notes.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from datetime import date

import holidays
import numpy as np
import polars as pl

from detect.config import Settings

JOURNAL = ["entity", "fiscal_year", "journal_id"]
KEY = ["entity", "fiscal_year", "journal_id", "line_no"]


@dataclass(frozen=True)
class Feature:
    name: str
    direction: int
    """+1: only high values are unusual; 0: both tails are unusual."""
    needs: tuple[str, ...]
    doc: str


FEATURES: list[Feature] = [
    Feature("amount_z_account", 1, ("amount", "gl_account"),
            "robust z-score of log |amount| within the account (median/MAD)"),
    Feature("account_rarity", 1, ("gl_account",), "-log10 share of lines on the account"),
    Feature("pair_rarity", 1, ("gl_account",),
            "-log10 P(contra account | account): how rare the debit/credit pair is"),
    Feature("user_account_rarity", 1, ("entered_by", "gl_account"),
            "-log10 P(user | account), counted in journals"),
    Feature("user_rarity", 1, ("entered_by",), "-log10 share of lines entered by the user"),
    Feature("vendor_account_rarity", 1, ("vendor_id", "gl_account"),
            "-log10 P(account | vendor of the journal), counted in journals"),
    Feature("vendor_new", 1, ("vendor_id",),
            "1 on the day a vendor first appears, falling to 0 after 90 days"),
    Feature("bank_rarity", 1, ("vendor_id", "bank_account"),
            "-log10 share of the vendor's journals paid to this bank account"),
    Feature("off_hours", 1, ("entered_at",),
            "hours outside office hours at entry x (1 - the user's usual share of such lines):"
            " an interface user that always runs at night is not unusual at night"),
    Feature("non_workday", 1, ("posting_date",),
            "1 if entered or posted on a weekend or public holiday, x (1 - the user's usual"
            " share of such lines)"),
    Feature("doc_post_days", 0, ("document_date",), "posting date - document date, days"),
    Feature("entry_post_days", 0, ("entered_at",),
            "posting date - entry date, days (negative = backdated)"),
    Feature("round_zeros", 1, ("amount",), "trailing zeros of the amount in cents"),
    Feature("trailing_nines", 1, ("amount",), "trailing 9s of the amount (4,999.00 -> 3)"),
    Feature("user_day_z", 1, ("entered_by", "entered_at"),
            "robust z of the user's lines that day against the user's usual days"),
]
FEATURE_NAMES: list[str] = [f.name for f in FEATURES]
DIRECTIONS: dict[str, int] = {f.name: f.direction for f in FEATURES}

CONTEXT = ["gl_account", "amount_f", "amount_pct_account", "amount_pct_all", "account_lines",
           "contra_account", "pair_journals", "entered_by", "ua_other", "user_lines", "vendor_j",
           "va_other", "vendor_age_days", "bank_journals", "vendor_bank_journals", "entry_time",
           "day", "doc_post", "entry_post", "user_day_lines", "user_day_median", "user_off_share",
           "user_nonwork_share"]
"""Columns kept next to the features so explanations can quote values in words."""

CATEGORY_COLUMNS = ["entered_by", "gl_account", "vendor_id", "bank_account"]

MAD_FLOOR = 0.05
"""Floor for the MAD in log10 units (~12 %): accounts with constant amounts (rent) would
otherwise turn a 1 % change into an enormous z-score."""
NEW_VENDOR_DAYS = 90
_HHMM = pl.Series("entry_time", [f"{h:02d}:{m:02d}" for h in range(24) for m in range(60)])
"""The entry times of the day's minutes, gathered by minute instead of formatting each stamp."""


@dataclass
class FeatureFrame:
    frame: pl.DataFrame
    """KEY + FEATURE_NAMES + CONTEXT + ``_jk`` (the journal's number in key order), sorted by
    KEY."""
    notes: list[str] = field(default_factory=list)
    order: np.ndarray | None = None
    """Row ``i`` of ``frame`` is line ``order[i]`` of the bookings as read (None: the same
    order), so a frame in the lines' order can be compared with it without a sort."""


def _rarity(count: pl.Expr, total: pl.Expr) -> pl.Expr:
    return -(count.cast(pl.Float64) / total.cast(pl.Float64)).log10()


class Codes:
    """Dense integer codes of the grouping columns of the (key-sorted) lines.

    Why: every per-group statistic used to be a ``group_by`` over the string columns plus a
    join back onto the lines (~1 s per 1M lines for the 15 statistics). With one integer code
    per line and group, a count is an ``np.bincount`` and the lookup a gather; aggregates that
    need Polars (medians, means) group an integer column and are gathered back by code. Null
    keys form a group of their own, as in the group-bys before (``nulls_equal``)."""

    def __init__(self, df: pl.DataFrame):
        self.df = df
        self.n = df.height
        self.jk = df.get_column("_jk").to_numpy().astype(np.int64)
        self.journal_start = np.r_[True, self.jk[1:] != self.jk[:-1]] if self.n \
            else np.zeros(0, dtype=bool)
        self._cache: dict[tuple[str, ...], tuple[np.ndarray, int]] = {}
        self._firsts: dict[tuple[str, ...], np.ndarray] = {}
        self._pairs: list[np.ndarray] | None = None
        self._line_journal: np.ndarray | None = None

    def of(self, *cols: str) -> tuple[np.ndarray, int]:
        """Codes of the combination of ``cols`` (0..n_groups-1 up to unused gaps), n_groups."""
        if cols in self._cache:
            return self._cache[cols]
        if len(cols) == 1:  # kept for reuse, as int32 (combinations are used once, not kept)
            self._cache[cols] = _column_codes(self.df.get_column(cols[0]))
            return self._cache[cols]
        code, size = self.of(*cols[:-1])
        last, last_size = self.of(cols[-1])
        return self._combine(code, size, last, last_size)

    def _combine(self, code: np.ndarray, size: int, last: np.ndarray,
                 last_size: int, dense: bool = True) -> tuple[np.ndarray, int]:
        """Codes of (``code``, ``last``) pairs, n_groups. ``dense=False``: the raw products,
        however large their range (for a hash count; renumbered only near int64's limit)."""
        code = code.astype(np.int64) * last_size + last
        size = size * last_size
        if size > (1 << 62 if not dense else max(4 * self.n, 1 << 20)):
            # keep the count arrays small: renumber densely
            code = (pl.Series(code).rank("dense").to_numpy() - 1).astype(np.int64)
            size = int(code.max(initial=-1)) + 1
        return code, size

    def lines(self, *cols: str) -> np.ndarray:
        """Lines per group, on every line (uint32: the counts' table is narrowed before the
        gather)."""
        code, size = self.of(*cols)
        return _count_table(np.bincount(code, minlength=size))[code]

    def journals(self, *cols: str, per_journal: bool = False,
                 where: np.ndarray | None = None,
                 same_in_journal: tuple[str, ...] = ()) -> np.ndarray:
        """Distinct journals per group, on every line. ``per_journal``: the columns are the
        same on all lines of a journal (count first lines only); ``where``: count only
        journals whose (first) line satisfies it; ``same_in_journal``: those of ``cols`` that
        are the same on all lines of a journal (the journal's vendor), so a line is its
        (journal, group)'s first exactly when it is the first of the other columns' group
        (``journals("vendor_j", "gl_account", same_in_journal=("vendor_j",))`` reuses the
        first lines ``journals("gl_account")`` found: one scan of the journals less)."""
        if per_journal:  # codes of the journals' first lines only (half the rows), expanded
            heads = np.flatnonzero(self.journal_start)
            code, size = self._of_rows(cols, heads)
            if size > max(4 * len(heads), 1 << 20):
                # a wide combination (vendor x bank account): counted by a hash of the codes
                # instead of renumbering them densely by a sort (1M lines: 0.05 -> 0.015)
                counted = pl.Series("w", np.ones(len(heads), dtype=bool) if where is None
                                    else where[heads])
                per_head = pl.DataFrame([pl.Series("c", code), counted]).select(
                    pl.col("w").sum().over("c").cast(pl.UInt32)).to_series().to_numpy()
            else:
                counted = code if where is None else code[where[heads]]
                per_head = _count_table(np.bincount(counted, minlength=size))[code]
            return per_head[self._journal_of_line()]
        code, size = self.of(*cols)
        rest = tuple(c for c in cols if c not in same_in_journal) or cols
        first = self._first(rest, code if rest == cols else None)
        if where is not None:
            first = first & where
        return _count_table(np.bincount(code[first], minlength=size))[code]

    def _journal_of_line(self) -> np.ndarray:
        """Each line's journal as 0, 1, ... (the runs of ``_jk``), computed once."""
        if self._line_journal is None:
            self._line_journal = np.cumsum(self.journal_start) - 1
        return self._line_journal

    def _first(self, cols: tuple[str, ...], code: np.ndarray | None = None) -> np.ndarray:
        """First line of each (journal, group of ``cols``) (``code``: their codes, if the
        caller has them), kept for reuse: read only, never changed in place."""
        if cols not in self._firsts:
            self._firsts[cols] = self._first_in_journal(self.of(*cols)[0] if code is None
                                                        else code)
        return self._firsts[cols]

    def _of_rows(self, cols: tuple[str, ...], rows: np.ndarray) -> tuple[np.ndarray, int]:
        """The codes of the combination of ``cols`` at ``rows`` only, n_groups: the raw
        products (not renumbered: the caller counts a wide combination by a hash)."""
        code, size = self.of(cols[0])
        code = code[rows]
        for col in cols[1:]:
            last, last_size = self.of(col)
            code, size = self._combine(code, size, last[rows], last_size, dense=False)
        return code, size

    def _first_in_journal(self, code: np.ndarray) -> np.ndarray:
        """First line of each (journal, group) pair. Journals are runs of rows and short: a
        line is a repeat if a line up to ``d`` rows earlier in the same journal has its code,
        checked for d = 1, 2, ... on the ever fewer rows whose journal is that long (the row
        pairs are found once and reused for every grouping; a hash of (journal, code) cost 3x
        as much). A journal of more than 33 lines makes all groupings fall back to the hash."""
        if self._pairs is None:  # rows i with a line i - d in the same journal, per d
            # d = 1 by comparing the shifted journal numbers (no gathers over all lines)
            self._pairs, rows = [], np.flatnonzero(~self.journal_start[1:]) + 1
            for d in range(1, 34):
                if d > 1:
                    rows = rows[self.jk[rows] == self.jk[rows - d]]
                if len(rows) == 0:
                    break
                self._pairs.append(rows)
                rows = rows[rows >= d + 1]
        if len(self._pairs) > 32:
            return pl.DataFrame({"j": self.jk, "c": code}).select(
                pl.struct("j", "c").is_first_distinct()).to_series().to_numpy()
        dup = np.zeros(self.n, dtype=bool)
        for d, rows in enumerate(self._pairs, start=1):
            dup[rows[code[rows] == code[rows - d]]] = True
        return ~dup

    def _table(self, cols: tuple[str, ...], values: pl.DataFrame,
               **aggs: pl.Expr) -> tuple[pl.DataFrame, np.ndarray]:
        """Polars aggregates of ``values`` (one row per line) per group, and each line's row
        in that table. In-memory engine: a one-shot group-by of a few columns, no streaming."""
        code, size = self.of(*cols)
        table = values.with_columns(_g=pl.Series(code)).lazy().group_by("_g").agg(**aggs) \
            .collect(engine="in-memory")
        slot = np.zeros(size, dtype=np.int64)
        slot[table.get_column("_g").to_numpy()] = np.arange(table.height)
        return table, slot[code]

    def agg(self, cols: tuple[str, ...], values: pl.DataFrame, **aggs: pl.Expr) -> list[pl.Series]:
        """Polars aggregates of ``values`` (one row per line) per group, on every line."""
        table, rows = self._table(cols, values, **aggs)
        idx = pl.Series(rows)
        return [table.get_column(name).gather(idx).alias(name) for name in aggs]

    def robust_z(self, cols: tuple[str, ...], x: pl.Series, floor: float,
                 median: pl.Series | None = None) -> pl.Series:
        """(x - median) / (1.4826 MAD + floor) within the groups of ``cols``; ``median``: the
        groups' median of ``x`` on every line when the caller has it already.

        The medians are Polars group-bys; the per-line arithmetic is NumPy's (its IEEE
        - * / + and abs give Polars' bits): no column-sized Polars temporaries, which are
        fresh pages each (1M lines: ~-0.02 CPU s and ~-10k page faults for both z-scores).
        ``x`` and ``median`` have no nulls (log amounts, log line counts)."""
        if median is None:
            table, rows = self._table(cols, x.to_frame("_x"), _med=pl.col("_x").median())
            med = table.get_column("_med").to_numpy()[rows]
        else:
            med = median.to_numpy()
        centred = x.to_numpy() - med
        table, rows = self._table(cols, pl.DataFrame({"_dev": np.abs(centred)}),
                                  _mad=pl.col("_dev").median())
        mad = table.get_column("_mad").to_numpy()[rows]
        return pl.Series(centred / (1.4826 * mad + floor))


def _column_codes(s: pl.Series) -> tuple[np.ndarray, int]:
    """int32 codes of a column's values below ``size`` (null: the last code), and ``size``.

    A category's physical id (``build_features``' named mappings: small, as they hold only
    the values the process has seen), a date's day offset, or else a fresh mapping numbered
    in order of appearance."""
    if s.dtype == pl.Date:
        phys = s.to_physical()
        low = phys.min()
        phys = phys - (low if low is not None else 0)
    elif isinstance(s.dtype, pl.Categorical):
        phys = s.to_physical()
    else:
        phys = s.cast(pl.String).cast(pl.Categorical(pl.Categories.random())).to_physical()
    top = phys.max()
    size = int(top) + 1 if top is not None else 0
    return phys.fill_null(size).to_numpy().astype(np.int32), size + 1


SLICE_LINES = 1 << 17
"""Lines per slice of the final feature select (see ``_sliced``)."""


def _sliced(df: pl.DataFrame, exprs: list[pl.Expr]) -> list[pl.Series]:
    """``df.select(exprs)`` (row-wise Float32 expressions without nulls) computed slice by
    slice on the streaming engine into one preallocated array per column; ``df`` has the
    journal numbers ``_jk``.

    Why: the streaming engine evaluates the expressions morsel by morsel (cache-sized, on
    both threads) with less overhead than eager selects over 65k-line slices did (1M lines:
    0.16 -> 0.10 CPU s; 64k- and 256k-line slices 0.11-0.12, and the engine's buffers grow
    with the slice: build_features' peak RSS +5-17 MB at 128k, +55 MB at 256k). Its result
    comes in chunks, copied into the arrays chunk by chunk: nothing beyond one slice's result
    is held (a rechunked whole result held a second copy of the features, 600 MB at 10M
    lines). A select keeps the row order; checked anyway: the slice's journal numbers must
    come back as they went in, else the slice is selected again on the in-memory engine."""
    out = [np.empty(df.height, dtype=np.float32) for _ in exprs]
    check = pl.col("_jk").alias("_sliced_check")
    for start in range(0, df.height, SLICE_LINES):
        part = df.slice(start, SLICE_LINES)
        got = part.lazy().select(*exprs, check).collect(engine="streaming")
        if not got.get_column("_sliced_check").equals(part.get_column("_jk"),
                                                      check_names=False):
            got = part.select(*exprs, check)
        for buf, col in zip(out, got.iter_columns()):  # the check column comes last
            at = start
            for chunk in col.get_chunks():
                buf[at:at + len(chunk)] = chunk.to_numpy()
                at += len(chunk)
    names = df.head(0).select(exprs).columns
    return [pl.Series(name, buf, dtype=pl.Float32) for name, buf in zip(names, out)]


def _u32(name: str, values: np.ndarray) -> pl.Series:
    return pl.Series(name, values, dtype=pl.UInt32)


def _count_table(counts: np.ndarray) -> np.ndarray:
    """A table of counts per group as uint32 when they fit (they do below 4G lines): the
    gather onto the lines moves half the bytes and the Series needs no cast."""
    return counts.astype(np.uint32) if counts.max(initial=0) <= np.iinfo(np.uint32).max \
        else counts


def _holidays(settings: Settings, years: list[int]) -> list[date]:
    if not years:
        return []
    try:
        cal = holidays.country_holidays(settings.country, subdiv=settings.state or None,
                                        years=years)
    except (NotImplementedError, KeyError):
        cal = holidays.country_holidays(settings.country, years=years)
    return sorted(cal.keys())


class _Journals:
    """The journal runs of the key-sorted lines, for picking one line per journal.

    ``df`` is sorted by KEY and ``_jk`` numbers its journals 1, 2, ... in that order; the run
    starts, |amount| and the row pairs are computed once for all picks (four picks each
    recomputed them)."""

    MAX_PAIR_DISTANCE = 32
    """Journals up to this many lines + 1 are picked by comparing row pairs (``pick``)."""

    def __init__(self, df: pl.DataFrame):
        self.n = df.height
        self.jk = df.get_column("_jk").to_numpy().astype(np.int64) - 1
        self.starts = np.flatnonzero(np.r_[True, self.jk[1:] != self.jk[:-1]]) if self.n \
            else np.zeros(0, dtype=np.int64)
        self.size = np.abs(df.get_column("amount_f").to_numpy())
        # rows i with a line i - d of the same journal (d = 1, 2, ...) and whether line i is
        # larger: journals are short runs (at 1M lines 94 % have two lines, none more than 7)
        self.pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = []
        rows = np.flatnonzero(self.jk[1:] == self.jk[:-1]) + 1
        for d in range(1, self.MAX_PAIR_DISTANCE + 2):
            if d > 1:
                rows = rows[rows >= d]
                rows = rows[self.jk[rows] == self.jk[rows - d]]
            if len(rows) == 0:
                break
            if d > self.MAX_PAIR_DISTANCE:  # a long journal: the pairs would grow with its
                self.pairs = None           # square, run maxima instead (``_pick_runs``)
                break
            self.pairs.append((rows - d, rows, self.size[rows] > self.size[rows - d]))

    def pick(self, ok: np.ndarray) -> np.ndarray:
        """Row of the journal's line with the largest |amount| among the lines where ``ok``
        (first such line on ties), on every line of the journal; -1 if none.

        A line is out when another ``ok`` line of its journal is larger, or as large and
        earlier; what is left is each journal's pick. By row pairs (i - d, i): 1M lines
        0.019 -> 0.01 CPU s per pick against a run maximum by ``np.maximum.reduceat``."""
        if self.n == 0:
            return np.zeros(0, dtype=np.int64)
        if self.pairs is None:
            return self._pick_runs(ok)
        out = ~ok
        for first, later, larger in self.pairs:
            both = ok[first] & ok[later]
            out[first[both & larger]] = True
            out[later[both & ~larger]] = True
        rows = np.flatnonzero(~out)  # one line per journal with any ok line
        pick = np.full(len(self.starts), -1, dtype=np.int64)
        pick[self.jk[rows]] = rows
        return pick[self.jk]

    def _pick_runs(self, ok: np.ndarray) -> np.ndarray:
        """``pick`` by the journals' run maxima (any journal length)."""
        jk = self.jk
        score = np.where(ok, self.size, -1.0)
        best = np.maximum.reduceat(score, self.starts)
        winner = ok & (score == best[jk])
        rows = np.flatnonzero(winner)
        owner = jk[rows]  # ascending: the first winner of each journal starts a run
        first = np.r_[True, owner[1:] != owner[:-1]] if len(rows) else np.zeros(0, dtype=bool)
        pick = np.full(len(self.starts), -1, dtype=np.int64)
        pick[owner[first]] = rows[first]
        return pick[jk]


def _gather(column: pl.Series, rows: np.ndarray, name: str) -> pl.Series:
    """``column`` at ``rows`` (one gather for all lines), null where a row is -1."""
    idx = pl.Series("_i", rows).to_frame().select(
        pl.when(pl.col("_i") >= 0).then(pl.col("_i"))).to_series()
    return column.gather(idx).alias(name)


def _trailing(values: np.ndarray, digit: int, limit: int) -> np.ndarray:
    """How many trailing decimal digits of each value equal ``digit`` (at most ``limit``).

    Peels one digit per pass, only off the values still ending in it (most stop at once): a
    sum of 18 modulo tests over all lines cost 0.35 CPU s per 1M lines, a regex 0.12 s. The
    passes after the first work on the surviving values alone (no copy of all of them)."""
    out = np.zeros(len(values), dtype=np.int64)
    alive = np.flatnonzero(values % 10 == digit)
    rest = values[alive]
    for _ in range(limit):
        if len(alive) == 0:
            break
        out[alive] += 1
        rest //= 10
        keep = rest % 10 == digit
        alive, rest = alive[keep], rest[keep]
    return out


_CENT_ZEROS = np.array([2 if c == 0 else int(c % 10 == 0) for c in range(100)], dtype=np.int64)
_CENT_NINES = np.array([2 if c == 99 else int(c % 10 == 9) for c in range(100)], dtype=np.int64)
"""Trailing zeros / nines of an amount's two cent digits (00 and 99: 2, continued in the euros)."""


def _amount_digits(cents: np.ndarray) -> dict[str, pl.Series]:
    """round_zeros (trailing zeros of the amount in cents, up to 8) and trailing_nines (of the
    amount as written: 4.999,00 -> "4999", 4.999,99 -> "499999").

    Both from the two cent digits (a table of 100) and, only where they are 00 or 99, the
    euros: one ``divmod`` over all lines instead of four modulo/division passes (1M lines:
    0.042 -> 0.02 CPU s). The amounts are >= 0 (|amount| in cents)."""
    euros, cent = np.divmod(cents, 100)
    zeros = _CENT_ZEROS[cent]
    nines = _CENT_NINES[cent]
    whole = np.flatnonzero(cent == 0)  # written without cents: the euros' digits count
    if len(whole):
        part = euros[whole]
        zeros[whole] = np.where(part > 0, 2 + _trailing(part, 0, 6), 0)  # 0.00: no zeros
        nines[whole] = _trailing(part, 9, 19)
    ends99 = np.flatnonzero(cent == 99)  # x99: the nines go on into the euros
    if len(ends99):
        nines[ends99] += _trailing(euros[ends99], 9, 17)
    return {"round_zeros": pl.Series("round_zeros", zeros, dtype=pl.UInt32),
            "trailing_nines": pl.Series("trailing_nines", nines, dtype=pl.UInt32)}


def _is_sorted(df: pl.DataFrame) -> bool:
    """Whether the lines are in KEY order (non-null keys; one vectorised pass, no sort)."""
    if df.height < 2:
        return True
    if df.select(pl.any_horizontal(pl.col(c).is_null().any() for c in KEY)).item():
        return False
    later = pl.lit(False)
    for c in reversed(KEY):  # row >= previous row, lexicographically over the key columns
        prev = pl.col(c).shift()
        later = (pl.col(c) > prev) | ((pl.col(c) == prev) & later) if c != KEY[-1] \
            else pl.col(c) >= prev
    return bool(df.select(later.slice(1).all()).item())


def _key_order(df: pl.DataFrame) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The permutation that sorts the lines by KEY (None: they are in KEY order already) and,
    when it is known on the way, each sorted line's journal number (1, 2, ... in key order;
    None: number the runs of the sorted frame).

    The history is stored in delivery order (the merge does not sort): journals are runs of
    rows with their lines in order, only the journals are out of order. Then sorting the
    journals' first rows and expanding each to its run gives the same permutation at half
    the cost (1M lines: 0.2 instead of 0.5 CPU s), and the journal numbers are the run
    lengths in sorted order; otherwise the lines are sorted. Key columns with one value (one
    entity, one fiscal year: the usual history) are left out of the sort: a one-column string
    sort costs a third of the three-column row sort."""
    n = df.height
    nulls = df.select(pl.any_horizontal(pl.col(c).is_null().any() for c in KEY)).item()
    if not nulls and n:
        new = df.select(pl.any_horizontal(pl.col(c).ne_missing(pl.col(c).shift())
                                          for c in JOURNAL)).to_series().to_numpy()
        line = df.get_column("line_no").to_numpy()
        if bool(((line[1:] > line[:-1]) | new[1:]).all()):  # lines ascend within each run
            starts = np.flatnonzero(new)
            sizes = np.diff(np.r_[starts, n])
            heads = df.select(JOURNAL)[starts]
            varying = [c for c, same in zip(JOURNAL, heads.select(
                pl.col(c).min() == pl.col(c).max() for c in JOURNAL).row(0)) if not same]
            if not varying:  # one journal key: sorted if it is one run
                by_key = np.zeros(1 if len(starts) == 1 else 0, dtype=np.int64)
                repeated = len(starts) > 1
            else:
                by_key = heads.select(pl.arg_sort_by(varying)).to_series().to_numpy()
                repeated = heads[by_key].select(pl.all_horizontal(
                    pl.col(c).eq_missing(pl.col(c).shift()) for c in varying).any()).item()
            if not repeated:  # each journal is one run
                sizes = sizes[by_key]
                journal = np.repeat(np.arange(1, len(sizes) + 1, dtype=np.uint32), sizes)
                if bool((by_key[1:] > by_key[:-1]).all()):  # already in key order
                    return None, journal
                starts = starts[by_key]
                offset = starts - np.r_[0, np.cumsum(sizes)[:-1]]
                return np.repeat(offset, sizes) + np.arange(n), journal
    if _is_sorted(df):
        return None, None
    return df.select(pl.arg_sort_by(KEY)).to_series().to_numpy(), None


def build_features(bookings: pl.LazyFrame, settings: Settings,
                   vendors: pl.DataFrame | None = None, *,
                   percentiles: bool = True) -> FeatureFrame:
    """Features for every line of ``bookings`` (canonical schema), sorted by the line key.

    ``percentiles=False`` leaves out the context columns ``amount_pct_account`` and
    ``amount_pct_all`` (two ranks over all lines, ~0.3 CPU s per 1M): they only feed the
    reason texts, and ``amount_percentiles`` computes them for the few explained lines."""
    schema = bookings.collect_schema()
    cols = ["entity", "fiscal_year", "journal_id", "line_no", "posting_date", "document_date",
            "entered_at", "entered_by", "gl_account", "amount", "vendor_id", "bank_account"]
    lf = bookings.select([pl.col(c) if c in schema else pl.lit(None).alias(c) for c in cols])
    # the grouping columns as categories (4 bytes a line instead of a 16-byte string view, for
    # them and the journal context picked from them); one named mapping per column, so codes
    # stay dense and two feature frames of the process compare equal
    lf = lf.with_columns(pl.col(c).cast(pl.String).cast(
        pl.Categorical(pl.Categories(f"belegwacht_features_{c}"))) for c in CATEGORY_COLUMNS)
    df = lf.with_columns(
        pl.col("fiscal_year").cast(pl.Int32), pl.col("line_no").cast(pl.Int32),
        pl.col("amount").cast(pl.Float64).fill_null(0.0).alias("amount_f"),
    ).collect().rechunk()  # one chunk per column: gathers over many files' chunks are slow
    notes: list[str] = []
    empty = [c for c in cols[4:] if df.get_column(c).null_count() == df.height]
    if empty and df.height:
        notes.append("column(s) entirely empty, dependent features are constant: "
                     + ", ".join(empty))
    df = df.drop("amount")  # Decimal, 16 bytes a line; amount_f carries it
    # the history is stored in delivery order: the lines are put in key order by one gather
    order, journal = _key_order(df)
    if order is not None:
        if df.height < np.iinfo(np.int32).max:
            order = order.astype(np.int32)  # kept with the frame (``FeatureFrame.order``)
        df = df[order]
    # journal number: rows are sorted, so a journal is a run of equal keys; an integer key makes
    # the per-journal group-bys, joins and distinct counts far lighter than the string key
    if journal is not None:
        df = df.with_columns(pl.Series("_jk", journal, dtype=pl.UInt32))
    else:
        new_journal = pl.any_horizontal([pl.col(c).ne_missing(pl.col(c).shift())
                                         for c in JOURNAL])
        df = df.with_columns(new_journal.cum_sum().cast(pl.UInt32).alias("_jk"))
    office = settings.office_hours
    years = df.get_column("fiscal_year").drop_nulls().unique().to_list()
    hol = _holidays(settings, sorted(set(years) | {y + 1 for y in years}))
    n_total = pl.len()
    abs_amt = pl.col("amount_f").abs()
    log_abs = (abs_amt + 1.0).log10()

    # journal context: main debit and credit account, journal vendor and bank account
    # the line with the largest |amount| (lowest line_no on ties: rows are sorted by KEY) per
    # journal, found with numpy over the runs of the sorted journal number: no sorted copy of the
    # lines and no group-by (a group-by here held ~300 MB per 1M lines)
    # contra account: a debit line's is the journal's top credit line's account and vice versa
    # (the two picks are combined by row, so the account column is gathered once)
    runs = _Journals(df)
    amount = df.get_column("amount_f").to_numpy()
    debit = amount > 0
    contra = np.where(debit, runs.pick(amount < 0), runs.pick(debit))
    df = df.with_columns(
        _gather(df.get_column("gl_account"), contra, "contra_account"),
        _gather(df.get_column("vendor_id"),
                runs.pick(df.get_column("vendor_id").is_not_null().to_numpy()), "vendor_j"),
        _gather(df.get_column("bank_account"),
                runs.pick(df.get_column("bank_account").is_not_null().to_numpy()), "_bank_j"),
        pl.coalesce(pl.col("entered_at").dt.date(), pl.col("posting_date")).alias("day"),
    ).drop("vendor_id", "bank_account")
    del runs, amount, debit, contra

    codes = Codes(df)
    # vendor age: master created_at when known, else first appearance in the history; the
    # dates as day numbers per vendor (a table over the vendors' codes), only the age per
    # line (1M lines: 0.085 -> 0.03 CPU s against date expressions over every line)
    code, size = codes.of("vendor_j")
    posting = df.get_column("posting_date").to_physical()
    firsts = pl.DataFrame([pl.Series("_g", code), posting.alias("_d")]).lazy().group_by("_g") \
        .agg(pl.col("_d").min()).drop_nulls("_d").collect(engine="in-memory")
    first = np.zeros(size, dtype=np.int64)
    has_first = np.zeros(size, dtype=bool)
    first[firsts.get_column("_g").to_numpy()] = firsts.get_column("_d").to_numpy()
    has_first[firsts.get_column("_g").to_numpy()] = True
    created = np.zeros(size, dtype=np.int64)
    has_created = np.zeros(size, dtype=bool)
    if vendors is not None and vendors.height and "created_at" in vendors.columns:
        master = vendors.select(pl.col("vendor_id").cast(pl.String).alias("vendor_j"),
                                pl.col("created_at").cast(pl.Date).alias("_created"))
        master = master.drop_nulls("vendor_j").unique("vendor_j", keep="first",
                                                      maintain_order=True)
        # a lookup per vendor (one line of each stands for it): looking up 1M lines' names
        # cost 0.05 CPU s
        line = np.zeros(size, dtype=np.int64)
        line[code] = np.arange(df.height)  # any line of a vendor: all carry its name
        seen = np.flatnonzero(np.bincount(code, minlength=size) > 0)
        per_vendor = df.get_column("vendor_j").gather(line[seen]).cast(pl.String).replace_strict(
            master.get_column("vendor_j"), master.get_column("_created"), default=None,
            return_dtype=pl.Date).to_physical()
        known = per_vendor.is_not_null().to_numpy()
        created[seen[known]] = per_vendor.filter(known).to_numpy()
        has_created[seen[known]] = True
    # a vendor first seen in the first 90 days of the history may simply predate it: unknown
    hist_start = posting.min()
    recent = has_first & (first - (hist_start if hist_start is not None else 0)
                          >= NEW_VENDOR_DAYS)
    since = np.where(has_created, created, first)
    has_since = has_created | recent
    valid = has_since[code] & posting.is_not_null().to_numpy()
    age = posting.fill_null(0).to_numpy().astype(np.int64) - since[code]
    df = df.with_columns(pl.Series("vendor_age_days", np.where(valid, age, 0), dtype=pl.Int32)
                         .scatter(np.flatnonzero(~valid), None))
    del code, posting, valid, age  # ~17 bytes a line, not to be held up to the final select

    # the entry's minute of the day from the timestamp's integer (a naive microsecond stamp,
    # the canonical type): dt.hour/dt.minute/strftime convert every stamp to a calendar time
    # (1M lines: 0.1 CPU s for the off-hours and the entry time, 0.03 this way)
    if df.schema["entered_at"] == pl.Datetime("us"):
        minute = df.select(((pl.col("entered_at").to_physical() % 86_400_000_000)
                            // 60_000_000).cast(pl.Int32)).to_series()
        hours = ((pl.col("_minute") // 60).cast(pl.Float64)
                 + (pl.col("_minute") % 60).cast(pl.Float64) / 60.0)
        entry_time = _HHMM.gather(minute)
    else:
        hours = (pl.col("entered_at").dt.hour().cast(pl.Float64)
                 + pl.col("entered_at").dt.minute().cast(pl.Float64) / 60.0)
        entry_time = df.select(pl.col("entered_at").dt.strftime("%H:%M")).to_series()
    off = pl.max_horizontal(pl.lit(float(office.start_hour)) - hours,
                            hours - float(office.end_hour), pl.lit(0.0))
    if df.schema["entered_at"] == pl.Datetime("us"):
        # the off hours of each minute of the day the lines use, gathered by minute: the same
        # expression on <= 1,440 values instead of every line (1M lines: 0.02 -> 0.005 CPU s);
        # no stamp: 0, as max_horizontal gives for nulls
        if minute.null_count() == df.height:
            off = pl.lit(0.0)
        else:
            low = int(minute.min())
            span = pl.int_range(low, int(minute.max()) + 1, dtype=pl.Int32, eager=True)
            off = span.to_frame("_minute").select(off).to_series() \
                .gather(minute - low).fill_null(0.0)
    def non_work(d: pl.Expr) -> pl.Expr:
        return (~d.dt.weekday().is_in(office.workdays)) | d.is_in(hol)

    cents = (abs_amt * 100).round(0).cast(pl.Int64)
    # per-group line and journal counts from integer codes (see Codes)
    df = df.with_columns(
        _u32("account_lines", codes.lines("gl_account")),
        _u32("pair_journals", codes.journals("gl_account", "contra_account")),
        _u32("_acct_journals", codes.journals("gl_account")),
        _u32("_ua_journals", codes.journals("entered_by", "gl_account")),
        _u32("user_lines", codes.lines("entered_by")),
        _u32("_va_journals", codes.journals("vendor_j", "gl_account",
                                            same_in_journal=("vendor_j",))),
        _u32("_v_journals", codes.journals("vendor_j", per_journal=True)),
        _u32("bank_journals", codes.journals("vendor_j", "_bank_j", per_journal=True)),
        pl.Series("user_day_lines", codes.lines("entered_by", "day"), dtype=pl.Float64),
    )
    df = df.with_columns(codes.robust_z(("gl_account",), df.select(log_abs).to_series(),
                                        MAD_FLOOR).alias("amount_z_account"))
    if percentiles:
        df = df.with_columns(
            ((abs_amt.rank("min").over("gl_account") - 1) / pl.col("account_lines"))
            .alias("amount_pct_account"),
            ((abs_amt.rank("min") - 1) / n_total).alias("amount_pct_all"))
    df = df.with_columns(
        entry_time.alias("entry_time"),
        # day gaps as differences of the dates' day numbers (Int32, no Duration), and the
        # entry's date is ``day`` where the stamp is known: no second conversion of the stamps
        (pl.col("posting_date").to_physical() - pl.col("document_date").to_physical())
        .alias("doc_post"),
        pl.when(pl.col("entered_at").is_not_null())
        .then(pl.col("posting_date").to_physical() - pl.col("day").to_physical())
        .alias("entry_post"),
        off.alias("_off"),
        (non_work(pl.col("day")) | non_work(pl.col("posting_date"))).cast(pl.Float64)
        .alias("_nonwork"),
        **_amount_digits(df.select(cents.fill_null(0)).to_series().to_numpy()),
    )
    has_user = pl.col("entered_by").is_not_null()
    has_vendor = pl.col("vendor_j").is_not_null()
    # the user's own habits: share of their lines off hours / on non-workdays (null user: all
    # lines) as counts / lines by bincount (Polars' mean of a boolean divides the same two
    # numbers); the median of the user's log day counts is one Polars group-by, gathered and
    # exp'd per user (its exp, on the users' values only): 1M lines 0.07 -> 0.04 CPU s
    user, n_users = codes.of("entered_by")
    known = df.get_column("entered_by").is_not_null().to_numpy()
    per_user = np.bincount(user, minlength=n_users)
    habits = []
    for name, col in (("user_off_share", "_off"), ("user_nonwork_share", "_nonwork")):
        flag = df.get_column(col).to_numpy() > 0
        with np.errstate(invalid="ignore", divide="ignore"):  # unused codes: never gathered
            share = np.bincount(user, weights=flag, minlength=n_users) / per_user
        overall = np.count_nonzero(flag) / max(len(flag), 1)
        habits.append(pl.Series(name, np.where(known, share[user], overall)))
    day_log = df.get_column("user_day_lines").log1p()
    table, rows = codes._table(("entered_by",), day_log.to_frame("_x"),
                               _med=pl.col("_x").median())
    medians = table.get_column("_med")
    day_median = medians.to_numpy()[rows]
    # vendor and bank account are the journal's: count journals by their first line
    with_bank = df.get_column("_bank_j").is_not_null().to_numpy()
    vb_journals = _u32("vendor_bank_journals",
                       codes.journals("vendor_j", per_journal=True, where=with_bank))
    df = df.with_columns(
        *habits, vb_journals,
        pl.Series("user_day_median", (medians.exp() - 1).to_numpy()[rows]),
        codes.robust_z(("entered_by",), day_log, 0.1,  # the same median: not twice
                       median=pl.Series(day_median)).alias("_user_day_z"),
        (pl.col("_ua_journals") - 1).alias("ua_other"),
        (pl.col("_va_journals") - 1).alias("va_other"),
    ).drop("posting_date", "document_date")
    del day_log, day_median, user, known, rows
    del codes, with_bank  # the codes (~40 bytes a line) are not needed for the final select
    lines = pl.lit(df.height)  # all lines, not the slice's (pl.len() in _sliced)
    computed = dict(
        account_rarity=_rarity(pl.col("account_lines"), lines),
        pair_rarity=pl.when(pl.col("contra_account").is_not_null())
        .then(_rarity(pl.col("pair_journals"), pl.col("_acct_journals"))),
        user_account_rarity=pl.when(has_user)
        .then(_rarity(pl.col("_ua_journals"), pl.col("_acct_journals"))),
        user_rarity=pl.when(has_user).then(_rarity(pl.col("user_lines"), lines)),
        vendor_account_rarity=pl.when(has_vendor)
        .then(_rarity(pl.col("_va_journals"), pl.col("_v_journals"))),
        vendor_new=pl.when(has_vendor).then(
            (1.0 - pl.col("vendor_age_days").cast(pl.Float64) / NEW_VENDOR_DAYS).clip(0.0, 1.0)),
        bank_rarity=pl.when(has_vendor & pl.col("_bank_j").is_not_null())
        .then(_rarity(pl.col("bank_journals"), pl.col("vendor_bank_journals"))),
        # rounded: a night-shift user's residue (3 h x 0.6 %) must not beat the ties at 0
        off_hours=(pl.col("_off") * (1.0 - pl.col("user_off_share"))).round(1),
        non_workday=(pl.col("_nonwork") * (1.0 - pl.col("user_nonwork_share"))).round(1),
        doc_post_days=pl.col("doc_post").cast(pl.Float64),
        entry_post_days=pl.col("entry_post").cast(pl.Float64),
        user_day_z=pl.when(has_user & pl.col("entered_at").is_not_null())
        .then(pl.col("_user_day_z")),
    )
    # Float32: half the memory of the frame's biggest block; the detectors see the same rounded
    # values at fit and at scoring time, and 7 significant digits are far finer than any tail.
    # Cast inside the final select: the Float64 features are never a column of the wide frame
    exprs = {n: computed.get(n, pl.col(n)) for n in FEATURE_NAMES}
    feats = [exprs[n].cast(pl.Float64).fill_nan(None).fill_null(0.0).cast(pl.Float32).alias(n)
             for n in FEATURE_NAMES]
    # the features slice by slice (see _sliced); the key and context columns as they are
    out = df.select(KEY).hstack(_sliced(df, feats)).hstack(
        df.select([c for c in CONTEXT if c in df.columns] + ["_jk"]))
    return FeatureFrame(out, notes, order)


def amount_percentiles(frame: pl.DataFrame, rows: np.ndarray) -> pl.DataFrame:
    """``amount_pct_account`` and ``amount_pct_all`` of the lines at ``rows`` of a feature frame:
    the share of the account's / all lines with a smaller |amount| (``rank("min") - 1`` over
    the frame, divided by the account's / all lines).

    One sort of |amount| serves both (``_amount_tables``, kept for the frame's next call: the
    model worker explains in two passes, 0.07 CPU s per 1M lines each)."""
    n = frame.height
    ordered, key, account = _amount_tables(frame)
    amount = np.abs(frame.get_column("amount_f").to_numpy()[rows])
    below_all = np.searchsorted(ordered, amount, "left")
    base = account[rows].astype(np.int64) * n
    below_account = np.searchsorted(key, base + below_all, "left") \
        - np.searchsorted(key, base, "left")
    lines = frame.get_column("account_lines").to_numpy()[rows]
    return pl.DataFrame({"amount_pct_account": below_account / lines,
                         # Polars divides by the line count as a product with its inverse
                         "amount_pct_all": below_all * (1.0 / n)})


_amount_cache: tuple[weakref.ref, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
"""The last feature frame's ``_amount_tables`` while that frame lives (feature frames are
never changed in place)."""


def _forget_amounts(ref: weakref.ref) -> None:
    global _amount_cache
    if _amount_cache is not None and _amount_cache[0] is ref:
        _amount_cache = None


def _amount_tables(frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All lines' |amount| sorted, the lines' (account, |amount| rank) keys sorted, and the
    lines' account codes: each line's global rank (position of its first equal value) turns
    (account, |amount|) into one integer key, increasing with both, to search the lines'
    sorted keys in."""
    global _amount_cache
    cached = _amount_cache
    if cached is not None and cached[0]() is frame:
        return cached[1]
    n = frame.height
    index = np.int32 if n < np.iinfo(np.int32).max else np.int64  # halves the 10M arrays
    amount = np.abs(frame.get_column("amount_f").to_numpy())
    account = _column_codes(frame.get_column("gl_account"))[0].astype(index, copy=False)
    order = np.argsort(amount).astype(index)  # ties in any order: ranks use a run's start
    ordered = amount[order]
    new_value = np.r_[True, ordered[1:] != ordered[:-1]] if n else np.zeros(0, dtype=bool)
    del amount
    rank = np.empty(n, dtype=index)
    rank[order] = np.maximum.accumulate(np.where(new_value, np.arange(n, dtype=index), 0))
    del new_value, order
    # the lines' (account, rank) keys, sorted as integers: one sort instead of a stable
    # argsort by account and two gathers (1M lines: 0.076 -> 0.05 CPU s for the tables)
    key = account.astype(np.int64) * n + rank
    del rank
    key.sort()
    tables = (ordered, key, account)
    _amount_cache = (weakref.ref(frame, _forget_amounts), tables)
    return tables


def active_features(frame: pl.DataFrame,
                    names: list[str] | None = None) -> tuple[list[str], list[str]]:
    """Split features into (used, dropped): a constant column carries no information."""
    names = names or FEATURE_NAMES
    if frame.height == 0:
        return [], list(names)
    spread = frame.select([(pl.col(n).max() - pl.col(n).min()).alias(n) for n in names]).row(0)
    used = [n for n, s in zip(names, spread) if s is not None and s > 0]
    return used, [n for n in names if n not in used]


def to_matrix(frame: pl.DataFrame, names: list[str]) -> np.ndarray:
    """Features as a C-contiguous float64 matrix for the detectors."""
    return np.ascontiguousarray(frame.select(names).to_numpy().astype(np.float64, copy=False))
