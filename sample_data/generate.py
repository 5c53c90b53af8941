"""Generate a sample municipal ledger with labelled anomalies, in several export formats.

Python API (used by the benchmark helper and the tests)::

    from sample_data.generate import generate
    summary = generate(lines=1_000_000, seed=7, out="bench/cache/ledger_1m",
                       formats=["parquet", "ads", "datev", "sap"])

Command line::

    python -m sample_data.generate --lines 20000 --seed 2025 --out /tmp/ledger \\
        --formats ads,datev,sap,parquet
    python -m sample_data.generate --demo      # rewrite the committed sample_data/demo/

The ledger is built month by month (bounded memory), each month from its own random stream,
so the same seed gives byte-identical files. Every folder gets ``labels.csv`` (entity,
fiscal_year, journal_id, scenario) and ``master/*.parquet``; each format goes to its own
sub-folder (``ads/``, ``datev/``, ``sap/``); ``parquet`` writes ``bookings.parquet``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from detect.schema import MASTER_SCHEMAS

from sample_data import anomalies as an
from sample_data import ledger as lg
from sample_data import master as md
from sample_data.world import World
from sample_data.writers import WRITERS, MasterData

SCENARIOS = an.SCENARIOS
FORMATS = ("parquet", "ads", "datev", "sap")
YEAR = 2025
DEMO_LINES, DEMO_SEED = 20_000, 2025
DEMO_DIR = Path(__file__).parent / "demo"
DEMO_LABELS = Path(__file__).parent / "demo_labels.csv"

# journal number ranges per document type (SAP-like); ids are written without leading zeros
NUMBER_RANGES = {"KR": 1_900_000_000, "ZP": 1_500_000_000, "KZ": 1_500_000_000,
                 "DA": 1_600_000_000, "DL": 1_600_000_000, "DZ": 1_400_000_000,
                 "SA": 100_000_000, "KA": 300_000_000, "PY": 500_000_000}


def _finalize(w: World, month: int, h: pl.DataFrame, l: pl.DataFrame,
              counters: dict[int, int]) -> pl.DataFrame:
    """Assign journal numbers (per number range, in posting order) and join lines to headers."""
    h = h.sort("posting_date", "entered_at", "jk")
    base = h["document_type"].replace_strict(NUMBER_RANGES, return_dtype=pl.Int64)
    h = h.with_columns(_base=base)
    h = h.with_columns(_n=pl.int_range(pl.len()).over("_base") + 1)
    offs = {b: counters.get(b, 0) for b in NUMBER_RANGES.values()}
    h = h.with_columns(_off=pl.col("_base").replace_strict(offs, return_dtype=pl.Int64))
    h = h.with_columns(journal_id=(pl.col("_base") + pl.col("_off") + pl.col("_n"))
                       .cast(pl.String))
    for b, n in h.group_by("_base").agg(pl.len()).iter_rows():
        counters[b] = counters.get(b, 0) + n
    ids = h.select(pl.col("jk").alias("reversal_of_jk"), pl.col("journal_id").alias("_rev"))
    h = (h.join(ids, on="reversal_of_jk", how="left")
         .with_columns(reversal_of=pl.coalesce("reversal_of", "_rev")))
    out = l.join(h.drop("_base", "_n", "_off", "_rev"), on="jk")
    return out.select(
        pl.lit(md.ENTITY).alias("entity"),
        pl.lit(w.year, pl.Int32).alias("fiscal_year"),
        pl.col("posting_date").dt.month().cast(pl.Int32).alias("period"),
        "journal_id", "line_no", "posting_date", "document_date", "entered_at", "entered_by",
        "approved_by", "gl_account",
        (pl.col("cents").cast(pl.Decimal(18, 2)) / 100).cast(pl.Decimal(18, 2)).alias("amount"),
        pl.lit(md.CURRENCY).alias("currency"),
        "description", "header_description", "document_type", "source", "cost_center",
        "vendor_id", "reference", "bank_account", "reversal_of",
        "cents", "anchor", "scenario", "kind", "jk",
    ).sort("posting_date", "journal_id", "line_no")


@dataclass
class _State:
    """What carries over from one month to the next."""

    counters: dict[int, int] = field(default_factory=dict)
    carry: pl.DataFrame | None = None
    """Payments due in a later month."""
    pool: pl.DataFrame | None = None
    """Earlier months' G/L journals that a late reversal may reverse."""
    next_jk: int = 1


def _month(w: World, month: int, plan: lg.MonthPlan, counts: dict[str, int],
           st: _State) -> pl.DataFrame:
    """One finalised month. A function of its own, so every intermediate frame is freed
    before the writers run (memory is bounded by one month)."""
    gen = lg.MonthGen(w, month, st.next_jk)
    hs, ls, contracts = gen.recurring()
    parts = [gen.contract_invoices(contracts), gen.invoices(plan.invoices)]
    inv_h = pl.concat([x[0] for x in parts])
    inv_l = pl.concat([x[1] for x in parts])
    rev = gen.revenue(plan.revenue)
    cash = gen.cash(plan.cash)
    gl = gen.gl(plan.gl)
    rv = gen.reversals(inv_h, inv_l, plan.reversals)
    m = an.Month(gen, pl.concat([*hs, inv_h, rev[0], cash[0], gl[0], rv[0]]),
                 pl.concat([*ls, inv_l, rev[1], cash[1], gl[1], rv[1]]), counts, st.pool)
    del hs, ls, parts, inv_h, inv_l, rev, cash, gl, rv
    an.before_payments(m)
    # the payment run pays the month's invoices (not reversed, not paid by an anomaly)
    reversed_ = m.h["reversal_of_jk"].drop_nulls()
    inv = m.h.filter((pl.col("kind") == "invoice") & ~pl.col("jk").is_in(reversed_.implode())
                     & ~pl.col("jk").is_in(pl.Series(m.skip_payment, dtype=pl.Int64)
                                           .implode()))
    due = lg.schedule_payments(w, inv, m.l.filter(pl.col("jk").is_in(inv["jk"].implode())),
                               gen.rng)
    if st.carry is not None:
        due = pl.concat([st.carry, due])
    in_year = pl.col("pay_date").dt.year() == w.year
    now = due.filter(in_year & (pl.col("pay_date").dt.month() == month))
    st.carry = due.filter(in_year & (pl.col("pay_date").dt.month() > month))
    pay = lg.payments(gen, now.sort("pay_date", "vendor_id", "reference", "cents",
                                    "posting_date", "gl_account"))
    m.add(pay[0], pay[1], None)
    an.after_payments(m)
    st.next_jk = gen.jk
    frame = _finalize(w, month, m.h, m.l, st.counters)
    gl_pool = frame.filter((pl.col("kind") == "gl") & pl.col("scenario").is_null()
                           & pl.col("reversal_of").is_null())
    keep = gl_pool["journal_id"].unique().sort().head(400)
    new_pool = gl_pool.filter(pl.col("journal_id").is_in(keep.implode())).select(
        "journal_id", "line_no", "gl_account", "cents", "cost_center", "vendor_id",
        "bank_account", "description", "anchor", "reference", "header_description")
    pool = new_pool if st.pool is None else pl.concat([st.pool, new_pool]).tail(3000)
    reversed_ids = frame["reversal_of"].drop_nulls().unique().implode()
    st.pool = pool.filter(~pl.col("journal_id").is_in(reversed_ids))  # reverse only once
    return frame


def build(lines: int, seed: int, year: int = YEAR) -> Iterator[tuple[World, int, pl.DataFrame]]:
    """Yield ``(world, month, frame)`` for each month; ``frame`` is the finalised month."""
    alloc = an.allocate(seed, lines)
    w = World(seed, year, lines, n_rare=int(alloc["rare_user"].sum()) + 2)
    plans = lg.plan(lines)
    st = _State()
    for month in range(1, 13):
        counts = {s: int(alloc[s][month - 1]) for s in SCENARIOS}
        counts["_rare_used"] = int(sum(alloc["rare_user"][:month - 1]))
        yield w, month, _month(w, month, plans[month - 1], counts, st)


def master_data(w: World) -> MasterData:
    """Master data as of the end of the year (canonical ``detect.schema.MASTER_SCHEMAS``)."""
    v = w.vendors
    vendors = v.select(
        "vendor_id", "vendor_name",
        pl.coalesce("iban_changed", "iban_initial").alias("bank_account"),
        "created_at", "is_person", "category", "iban_initial", "iban_changed")
    schema = MASTER_SCHEMAS["vendor_changes"]
    changes = pl.concat([f.cast(schema) for f in [w.legit_changes(), *w.vendor_changes]]) \
        .sort("changed_at", "vendor_id")
    users = w.users.with_columns(pl.col("approval_limit").cast(pl.Decimal(18, 2)))
    return MasterData(accounts=md.accounts_frame(), vendors=vendors, vendor_changes=changes,
                      users=users, cost_centers=w.cost_centers)


def generate(lines: int, seed: int, out: str | Path,
             formats: list[str] | tuple[str, ...] = FORMATS) -> dict[str, Any]:
    """Write one ledger of about ``lines`` lines to ``out``; returns a summary dict.

    ``formats``: any of ``parquet`` (canonical ``bookings.parquet``), ``ads``, ``datev``,
    ``sap``. ``labels.csv`` and ``master/`` are always written.
    """
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown format(s) {sorted(unknown)}; choose from {FORMATS}")
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    writers = [WRITERS[f](out, YEAR) for f in FORMATS if f in formats]
    labels = []
    n_lines = n_journals = 0
    debit = credit = 0
    w = None
    spent = {f: 0.0 for f in formats}
    names = [f for f in FORMATS if f in formats]
    for w, _month, frame in build(lines, seed):
        for name, wr in zip(names, writers, strict=True):
            t = time.perf_counter()
            wr.write(frame)
            spent[name] += time.perf_counter() - t
        labels.append(frame.filter(pl.col("scenario").is_not_null())
                      .select("entity", "fiscal_year", "journal_id", "scenario").unique()
                      .sort("journal_id"))
        n_lines += frame.height
        n_journals += frame["journal_id"].n_unique()
        debit += int(frame.filter(pl.col("cents") > 0)["cents"].sum())
        credit += int(frame.filter(pl.col("cents") < 0)["cents"].sum())
        del frame  # not alive while the next month is built
    assert w is not None
    master = master_data(w)
    for name, wr in zip(names, writers, strict=True):
        t = time.perf_counter()
        wr.close(master)
        spent[name] += time.perf_counter() - t
    (out / "master").mkdir(exist_ok=True)
    for name, frame in master.canonical().items():
        frame.write_parquet(out / "master" / f"{name}.parquet")
    lab = pl.concat(labels).sort("journal_id")
    lab.write_csv(out / "labels.csv")
    return {"lines": n_lines, "journals": n_journals, "debit": debit / 100,
            "credit": -credit / 100, "anomalous_journals": lab.height,
            "scenarios": lab["scenario"].n_unique(), "seconds": time.perf_counter() - t0,
            "writer_seconds": {k: round(v, 2) for k, v in spent.items()},
            "out": str(out)}


def write_demo(lines: int = DEMO_LINES, seed: int = DEMO_SEED) -> dict[str, Any]:
    """Regenerate the committed demo: ``sample_data/demo/`` (ADS) + ``demo_labels.csv``."""
    tmp = DEMO_DIR.parent / ".demo_tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    summary = generate(lines, seed, tmp, ["ads"])
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    shutil.copytree(tmp / "ads", DEMO_DIR)
    shutil.copyfile(tmp / "labels.csv", DEMO_LABELS)
    shutil.rmtree(tmp)
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sample_data.generate",
                                 description="Generate a sample municipal ledger with labelled "
                                             "anomalies (see docs/sample_data.md).")
    ap.add_argument("--lines", type=int, default=DEMO_LINES, help="about this many lines")
    ap.add_argument("--seed", type=int, default=DEMO_SEED)
    ap.add_argument("--out", type=Path, help="output folder")
    ap.add_argument("--formats", default="parquet,ads,datev,sap",
                    help="comma-separated: parquet, ads, datev, sap")
    ap.add_argument("--demo", action="store_true",
                    help="rewrite the committed demo (sample_data/demo/, demo_labels.csv)")
    args = ap.parse_args(argv)
    if args.demo:
        s = write_demo(args.lines, args.seed)
    else:
        if args.out is None:
            ap.error("--out is required (or use --demo)")
        formats = [f.strip() for f in args.formats.split(",") if f.strip()]
        try:
            s = generate(args.lines, args.seed, args.out, formats)
        except ValueError as exc:
            ap.error(str(exc))
    print(f"{s['lines']:,} lines, {s['journals']:,} journals, debit {s['debit']:,.2f}, "
          f"credit {s['credit']:,.2f}, {s['anomalous_journals']} labelled journals in "
          f"{s['scenarios']} scenarios, {s['seconds']:.1f} s -> {s['out']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
