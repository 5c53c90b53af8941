"""Detection quality: recall at a review budget and average precision for a ranking of journals.

Why journals: an auditor reviews a voucher, so a hit anywhere in a labelled journal counts.
Why recall at 0.5/1/2 % of journals: that is the review budget a team has; AP summarises the
whole ranking.

Usage (the numbers in docs/models_scoring.md come from this)::

    .venv/bin/python -m bench.detection                  # demo ledger if present, else synthetic
    .venv/bin/python -m bench.detection --synthetic 20000 # synthetic ledger with N journals
    .venv/bin/python -m bench.detection --scale 1000000   # time + peak memory of models on 1M lines
    .venv/bin/python -m bench.detection --ledger /tmp/q99/ads   # another labelled export
        (/tmp/q99 from: python -m sample_data.generate --lines 50000 --seed 99 --out /tmp/q99
         --formats parquet,ads; labels default to DIR/../labels.csv)
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

JOURNAL = ["entity", "fiscal_year", "journal_id"]
BUDGETS = (0.005, 0.01, 0.02)


# --------------------------------------------------------------------------- metrics

def _ap(scores: np.ndarray, positive: np.ndarray) -> float:
    """Average precision; journals without a score (-inf) are never retrieved."""
    n_pos = int(positive.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    pos = positive[order]
    retrieved = np.isfinite(scores[order])
    hits = np.cumsum(pos)
    precision = hits / np.arange(1, len(pos) + 1)
    return float((precision * (pos & retrieved)).sum() / n_pos)


def evaluate(ranking: pl.DataFrame, labels: pl.DataFrame, journals: pl.DataFrame,
             score: str = "score", budgets: tuple[float, ...] = BUDGETS) -> pl.DataFrame:
    """Recall at each budget (share of all journals) and AP, overall and per scenario.

    ``ranking``: JOURNAL + ``score`` (higher = review first; journals absent = not flagged).
    ``labels``: JOURNAL + ``scenario``. ``journals``: JOURNAL of every journal in the ledger
    (the denominator of the budget). Ties are broken by journal key so results are stable.
    Per scenario, the other scenarios' journals are left out of the AP (neither hit nor miss).
    Returns one row per scenario plus ``overall``: n, recall@<b>, ap.
    """
    base = (journals.select(JOURNAL).unique()
            .join(ranking.select(JOURNAL + [score]).group_by(JOURNAL).agg(pl.col(score).max()),
                  on=JOURNAL, how="left")
            .join(labels.select(JOURNAL + ["scenario"]).unique(JOURNAL), on=JOURNAL, how="left")
            .with_columns(pl.col(score).cast(pl.Float64).fill_null(-math.inf))
            .sort([score] + JOURNAL, descending=[True, False, False, False]))
    n = base.height
    scenario = base.get_column("scenario")
    s = base.get_column(score).to_numpy()
    ranked = np.isfinite(s)
    rows = []
    groups = [("overall", scenario.is_not_null().to_numpy(), np.ones(n, bool))]
    for name in sorted(scenario.drop_nulls().unique().to_list()):
        is_it = (scenario == name).fill_null(False).to_numpy()
        groups.append((name, is_it, is_it | scenario.is_null().to_numpy()))
    for name, pos, keep in groups:
        row: dict[str, object] = {"scenario": name, "n": int(pos.sum())}
        for b in budgets:
            k = max(1, math.ceil(b * n))
            top = np.zeros(n, bool)
            top[:k] = True
            top &= ranked
            row[f"recall@{b * 100:g}%"] = float((pos & top).sum() / max(pos.sum(), 1))
        row["ap"] = _ap(s[keep], pos[keep])
        rows.append(row)
    return pl.DataFrame(rows)


# --------------------------------------------------------------------------- synthetic ledger

SCENARIOS = ["amount_outlier", "night_posting", "weekend_posting", "outside_usual_accounts",
             "rare_account_pair", "new_vendor_payment", "one_off_bank_account", "ends_in_nines",
             "round_amount_new_vendor", "backdated", "rare_user"]


def synthetic_ledger(n_journals: int = 20_000, seed: int = 0, anomaly_share: float = 0.01,
                     entity: str = "Synthstadt",
                     year: int = 2025) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A two-line-per-journal municipal ledger with labelled injected anomalies (numpy only).

    Invoices debit an expense account and credit payables (160000); payments debit payables and
    credit the bank (180000) with the vendor's IBAN. Each user books on a few usual accounts,
    each vendor on one or two. Returns (bookings in BOOKING_SCHEMA, labels).
    """
    from detect.schema import BOOKING_SCHEMA

    rng = np.random.default_rng(seed)
    n_acct, n_user, n_vendor = 60, 25, 400
    accounts = np.array([f"5{i:05d}" for i in range(n_acct)])
    acct_mu = rng.uniform(4.0, 8.5, n_acct)       # ln of the typical amount
    acct_w = rng.dirichlet(np.ones(n_acct) * 0.7)
    user_acc = [rng.choice(n_acct, 6, replace=False, p=acct_w) for _ in range(n_user)]
    vend_acc = rng.choice(n_acct, (n_vendor, 2), p=acct_w)
    vend_bank = np.array([f"DE{v:020d}" for v in range(n_vendor)])
    users = np.array([f"USER{u:02d}" for u in range(n_user)])
    user_w = rng.dirichlet(np.ones(n_user))

    n = n_journals
    is_pay = rng.random(n) < 0.4
    user = rng.choice(n_user, n, p=user_w)
    vendor = rng.integers(0, n_vendor, n)
    slot = rng.integers(0, 6, n)
    acct = np.stack(user_acc)[user, slot]
    # vendors mostly book on their own accounts
    own = rng.random(n) < 0.7
    acct = np.where(own, vend_acc[vendor, rng.integers(0, 2, n)], acct)
    amount = np.round(np.exp(acct_mu[acct] + rng.normal(0, 0.6, n)), 2)
    workdays = np.array([d for d in range(365) if (date(year, 1, 1) + timedelta(d)).weekday() < 5
                         and not (date(year, 1, 1) + timedelta(d)).strftime("%m-%d") in
                         {"01-01", "05-01", "10-03", "12-25", "12-26"}])
    day = rng.choice(workdays, n)
    hour = rng.normal(11, 2.2, n).clip(6.5, 19.5)
    doc_lag = rng.integers(0, 15, n)
    post_lag = np.zeros(n, dtype=np.int64)
    bank = vend_bank[vendor].astype(object)
    new_vendor = np.full(n, -1)

    labels = np.full(n, None, dtype=object)
    n_anom = max(len(SCENARIOS), int(n * anomaly_share))
    idx = rng.choice(np.arange(n // 5, n), n_anom, replace=False)   # not at history start
    for i, j in enumerate(idx):
        sc = SCENARIOS[i % len(SCENARIOS)]
        labels[j] = sc
        if sc == "amount_outlier":
            amount[j] = round(amount[j] * 20, 2)
        elif sc == "night_posting":
            hour[j] = rng.uniform(1, 4)
        elif sc == "weekend_posting":
            d = day[j] - (date(year, 1, 1) + timedelta(int(day[j]))).weekday() + 5
            day[j] = min(max(d, 5), 363)
        elif sc == "outside_usual_accounts":
            acct[j] = rng.choice(np.setdiff1d(np.arange(n_acct), user_acc[user[j]]))
        elif sc == "rare_account_pair":
            is_pay[j] = False
            acct[j] = -1                                   # expense against the bank, see below
        elif sc in ("new_vendor_payment", "round_amount_new_vendor"):
            new_vendor[j] = n_vendor + i
            is_pay[j] = True
            if sc == "round_amount_new_vendor":
                amount[j] = float(rng.choice([5000, 10000, 20000, 25000]))
        elif sc == "one_off_bank_account":
            is_pay[j] = True
            bank[j] = f"DE9{j:019d}"
        elif sc == "ends_in_nines":
            amount[j] = float(rng.choice([999.0, 4999.0, 9999.99, 2999.0, 24999.0]))
        elif sc == "backdated":
            post_lag[j] = -int(rng.integers(45, 120))
        elif sc == "rare_user":
            user[j] = n_user                               # a user who books once
    users = np.append(users, "AUSHILFE_X")

    base = datetime(year, 1, 1)
    entered = np.array([base + timedelta(days=int(d), hours=float(h)) for d, h in zip(day, hour)],
                       dtype="datetime64[us]")
    posting = (entered.astype("datetime64[D]") + post_lag.astype("timedelta64[D]"))
    document = posting - doc_lag.astype("timedelta64[D]")
    vend_ids = np.where(new_vendor >= 0, np.char.add("V", new_vendor.astype(str)),
                        np.char.add("V", vendor.astype(str)))
    bank = np.where(new_vendor >= 0, np.char.add("DE8", new_vendor.astype(str)), bank.astype(str))
    exp_acct = np.where(acct >= 0, accounts[np.maximum(acct, 0)], "180000")
    debit_acct = np.where(is_pay, "160000", exp_acct)
    credit_acct = np.where(is_pay, "180000", np.where(acct >= 0, "160000", "520077"))
    jid = np.char.add("J", np.arange(n).astype(str))
    lines = pl.DataFrame({
        "journal_id": np.repeat(jid, 2),
        "line_no": np.tile([1, 2], n).astype(np.int32),
        "gl_account": np.stack([debit_acct, credit_acct], 1).ravel(),
        "amount": np.stack([amount, -amount], 1).ravel(),
        "posting_date": np.repeat(posting, 2),
        "document_date": np.repeat(document, 2),
        "entered_at": np.repeat(entered, 2),
        "entered_by": np.repeat(users[user], 2),
        "vendor_id": np.repeat(vend_ids, 2),
        "bank_account": np.repeat(np.where(is_pay, bank, None), 2),
    })
    bookings = lines.with_columns(
        pl.lit(entity).alias("entity"), pl.lit(year, pl.Int32).alias("fiscal_year"),
        pl.col("posting_date").dt.month().cast(pl.Int32).alias("period"),
        pl.col("amount").cast(pl.Decimal(18, 2)),
        pl.lit("synthetic").alias("source_file"),
        (pl.int_range(pl.len()) + 2).cast(pl.Int64).alias("source_line"),
    )
    bookings = bookings.select([
        (pl.col(c) if c in bookings.columns else pl.lit(None)).cast(t).alias(c)
        for c, t in BOOKING_SCHEMA.items()])
    lab = pl.DataFrame({"journal_id": jid, "scenario": labels.tolist()},
                       schema={"journal_id": pl.String, "scenario": pl.String}
                       ).drop_nulls("scenario").with_columns(
        pl.lit(entity).alias("entity"), pl.lit(year, pl.Int32).alias("fiscal_year"))
    return bookings, lab.select(JOURNAL + ["scenario"])


# --------------------------------------------------------------------------- runners

def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _fmt(table: pl.DataFrame) -> str:
    return str(table.with_columns(pl.selectors.float().round(3)))


DEMO = Path(__file__).resolve().parents[1] / "sample_data"


def _run_demo(tmp: Path, ledger: Path | None = None, fmt: str = "ads",
              entity: str = "Musterstadt") -> tuple[Path, str]:
    """Run the real pipeline (ingest, validate, history, rules, models, scoring) on the demo
    or on another labelled export (``ledger``, e.g. a generator run with another seed)."""
    from detect.config import load_settings
    from detect.pipeline import run_delivery
    from detect.runlog import StepLog

    settings = load_settings(None, entity=entity)
    source = ledger or DEMO / "demo"
    summary = run_delivery([source], fmt=fmt, settings=settings, data_dir=tmp / "var",
                           log=StepLog(quiet=True))
    name = "demo ledger sample_data/demo" if ledger is None else f"ledger {source}"
    return summary.run_dir, f"{name} ({fmt.upper()}) through `belegwacht run`"


def demo_rankings(tmp: Path) -> tuple[dict[str, pl.DataFrame], pl.DataFrame, pl.DataFrame]:
    """Rules only / models only / combined rankings on the demo, without the GX validation step.

    Ingest -> canonical bookings -> rules -> models -> scoring, as the pipeline does (the demo is
    clean, so validation would pass every row). Returns (rankings with a ``score`` column,
    labels, journals). Used by tests/test_detection_quality.py.
    """
    import copy

    from detect import rules, scoring
    from detect.config import Settings
    from detect.ingest import ingest
    from detect.models import fit_and_score
    from detect.schema import conform

    settings = Settings(entity="Musterstadt")
    result = ingest([DEMO / "demo"], "ads", settings, tmp / "work")
    bookings = conform(result.bookings).collect()
    bookings.write_parquet(tmp / "bookings.parquet")
    (tmp / "master").mkdir(exist_ok=True)
    for name, frame in result.master.items():
        frame.write_parquet(tmp / "master" / f"{name}.parquet")
    ctx = _ctx(tmp, settings)
    hits = rules.run_rules(rules.connect(ctx, tmp / "bookings.parquet"), ctx).hits
    scores, _, _ = fit_and_score(bookings.lazy(), settings, vendors=result.master.get("vendors"))
    rules_only = copy.deepcopy(settings)
    rules_only.scoring.model_weight = 0.0
    rules_only.scoring.model_bonus = 0.0
    rules_only.scoring.model_tail_share = 0.0
    rankings = {
        "rules only": scoring.rank_items(bookings.lazy(), hits, None, _ctx(tmp, rules_only))
        .pipe(queue_order),
        "models only": _journal_max(scores),
        "combined": scoring.rank_items(bookings.lazy(), hits, scores, ctx)
        .pipe(queue_order),
    }
    labels = pl.read_csv(DEMO / "demo_labels.csv", schema_overrides={
        "fiscal_year": pl.Int32, "journal_id": pl.String})
    return rankings, labels, bookings.select(JOURNAL).unique()


def _ctx(run_dir: Path, settings: object) -> object:
    from types import SimpleNamespace

    from detect.runlog import StepLog
    return SimpleNamespace(run_dir=run_dir, run_id="bench", entity=getattr(settings, "entity"),
                           settings=settings, log=StepLog(quiet=True), rescore_history=False,
                           data_dir=run_dir)


def queue_order(items: pl.DataFrame) -> pl.DataFrame:
    """A findings frame as a ranking: ``score`` follows the queue's ``rank`` (risk score, then
    number of rules, then model score), i.e. the order a reviewer works through. The risk score
    alone is rounded to 0.01 and ties at the review budget would be broken by journal number."""
    return items.with_columns((pl.len() - pl.col("rank") + 1).cast(pl.Float64).alias("score"))


def _journal_max(scores: pl.DataFrame, col: str = "model_score") -> pl.DataFrame:
    return scores.group_by(JOURNAL).agg(pl.col(col).max().alias("score"))


def quality(synthetic: int, seed: int, json_out: Path | None, ledger: Path | None = None,
            labels_csv: Path | None = None, fmt: str = "ads") -> int:
    """Rules only / models only / combined, and each detector alone vs the ensemble."""
    import copy
    import shutil
    import tempfile

    from detect import rules, scoring
    from detect.config import Settings
    from detect.features import DIRECTIONS, active_features, build_features, to_matrix
    from detect.models import BookingOutlierEnsemble, fit_and_score

    tmp = Path(tempfile.mkdtemp(prefix="bw-bench-"))
    try:
        labels_csv = labels_csv or DEMO / "demo_labels.csv"
        if ledger is not None or (not synthetic and labels_csv.exists()
                                  and (DEMO / "demo").is_dir()):
            labels = pl.read_csv(labels_csv, schema_overrides={
                "fiscal_year": pl.Int32, "journal_id": pl.String, "entity": pl.String})
            entity = labels.get_column("entity")[0] if labels.height else "Musterstadt"
            run_dir, what = _run_demo(tmp, ledger, fmt, entity)
            ctx = _ctx(run_dir, Settings(entity=entity))
            bookings = pl.read_parquet(run_dir / "bookings.parquet")
            hits = pl.read_parquet(run_dir / "rule_hits.parquet")
            scores = pl.read_parquet(run_dir / "model_scores.parquet")
            combined = pl.read_parquet(run_dir / "findings.parquet")
            meta = json.loads((run_dir / "models" / "ensemble.json").read_text("utf-8"))
            manifest = json.loads((run_dir / "manifest.json").read_text("utf-8"))
            t_rules, t_models = manifest["durations"]["rules"], manifest["durations"]["models"]
        else:
            bookings, labels = synthetic_ledger(synthetic or 20_000, seed)
            what = f"synthetic ledger ({synthetic or 20_000} journals, seed {seed})"
            settings = Settings(entity="Synthstadt")
            ctx = _ctx(tmp, settings)
            bookings.write_parquet(tmp / "bookings.parquet")
            t = time.perf_counter()
            con = rules.connect(ctx, tmp / "bookings.parquet")
            hits = rules.run_rules(con, ctx).hits
            t_rules = time.perf_counter() - t
            t = time.perf_counter()
            scores, _, meta = fit_and_score(bookings.lazy(), settings)
            t_models = time.perf_counter() - t
            combined = scoring.rank_items(bookings.lazy(), hits, scores, ctx)
        settings = ctx.settings
        journals = bookings.select(JOURNAL).unique()
        print(f"# {what}: {bookings.height} lines, {journals.height} journals, "
              f"{labels.height} labelled", flush=True)
        rules_only = copy.deepcopy(settings)
        rules_only.scoring.model_weight = 0.0
        rules_only.scoring.model_bonus = 0.0
        rules_only.scoring.model_tail_share = 0.0
        r_items = scoring.rank_items(bookings.lazy(), hits, None,
                                     _ctx(Path(ctx.run_dir), rules_only))
        results: dict[str, pl.DataFrame] = {
            "rules only": evaluate(queue_order(r_items), labels, journals),
            "models only": evaluate(_journal_max(scores), labels, journals),
            "combined": evaluate(queue_order(combined), labels, journals),
        }
        print(f"rules {t_rules:.1f} s ({hits.height} hits), models {t_models:.1f} s, "
              f"items {combined.height}, features used {len(meta['features'])}, "
              f"dropped {meta['dropped_features']}")
        vendors = pl.read_parquet(Path(ctx.run_dir) / "master" / "vendors.parquet") \
            if (Path(ctx.run_dir) / "master" / "vendors.parquet").exists() else None
        # detectors alone vs the ensemble, on the same features and fit sample
        ff = build_features(bookings.lazy(), settings, vendors).frame
        used, _ = active_features(ff)
        X = to_matrix(ff, used)
        fit = ff.sample(n=min(settings.models.fit_sample, ff.height), seed=settings.models.seed) \
            if ff.height > settings.models.fit_sample else ff
        Xf = to_matrix(fit, used)
        variants = {"iforest": ("iforest",), "hbos": ("hbos",), "ecod": ("ecod",),
                    "ecod (sum, as PyOD)": ("ecod",),
                    "iforest+hbos+ecod": ("iforest", "hbos", "ecod"),
                    "hbos+ecod": ("hbos", "ecod"), "iforest+ecod": ("iforest", "ecod")}
        timing, all_scores = [], {}
        for name, dets in variants.items():
            t = time.perf_counter()
            est = BookingOutlierEnsemble(detectors=dets, random_state=settings.models.seed,
                                         directions=tuple(DIRECTIONS[n] for n in used),
                                         ecod_aggregate="sum" if "sum" in name else "max"
                                         ).fit(Xf)
            t_fit = time.perf_counter() - t
            t = time.perf_counter()
            s = est.decision_function(X)
            t_score = time.perf_counter() - t
            m = evaluate(_journal_max(ff.select(JOURNAL).with_columns(pl.Series("model_score", s))),
                         labels, journals).filter(pl.col("scenario") == "overall")
            all_scores[name] = s
            timing.append({"detectors": name, "fit_s": round(t_fit, 2),
                           "score_s": round(t_score, 2),
                           **m.drop("scenario", "n").row(0, named=True)})
        detectors = pl.DataFrame(timing)
        # the ensemble's percentiles combined by max instead of mean, for comparison
        for combo, fn in (("max(iforest,ecod)", np.maximum),):
            s = fn(all_scores["iforest"], all_scores["ecod"])
            m = evaluate(_journal_max(ff.select(JOURNAL).with_columns(pl.Series("model_score", s))),
                         labels, journals).filter(pl.col("scenario") == "overall")
            detectors = pl.concat([detectors, pl.DataFrame([{
                "detectors": combo, "fit_s": None, "score_s": None,
                **m.drop("scenario", "n").row(0, named=True)}], schema=detectors.schema)])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    overall = pl.concat([r.filter(pl.col("scenario") == "overall").with_columns(
        pl.lit(k).alias("ranking")) for k, r in results.items()]).drop("scenario")
    print("\n## overall\n" + _fmt(overall.select("ranking", pl.exclude("ranking"))))
    per = None
    for k, r in results.items():
        r = r.filter(pl.col("scenario") != "overall").select(
            "scenario", "n", pl.col("recall@1%").alias(f"{k} r@1%"), pl.col("ap").alias(f"{k} ap"))
        per = r if per is None else per.join(r.drop("n"), on="scenario")
    assert per is not None
    with pl.Config(tbl_rows=60):
        print("\n## per scenario (recall at 1 % of journals, AP)\n" + _fmt(per))
    print("\n## detectors (models only, same features)\n" + _fmt(detectors))
    if json_out:
        json_out.write_text(json.dumps({"ledger": what, **{k: v.to_dicts() for k, v in
                                        results.items()}, "detectors": detectors.to_dicts()},
                                       indent=1), "utf-8")
    return 0


def scale(n_lines: int, seed: int) -> int:
    """Time and peak memory of features + fit + scoring + explanations on ``n_lines`` lines."""
    from detect.config import Settings
    from detect.models import fit_and_score

    t = time.perf_counter()
    bookings, _ = synthetic_ledger(n_lines // 2, seed, anomaly_share=0.001)
    t_gen = time.perf_counter() - t
    base = _peak_mb()
    t, cpu = time.perf_counter(), time.process_time()
    scores, _, meta = fit_and_score(bookings.lazy(), Settings(entity="Synthstadt"))
    took = time.perf_counter() - t
    print(f"{bookings.height} lines (generated in {t_gen:.1f} s, peak {base:.0f} MB before "
          f"models): features + fit on {meta['fit_lines']} + score + explain all lines "
          f"in {took:.1f} s wall ({meta['seconds']}); CPU {time.process_time() - cpu:.1f} s; "
          f"peak RSS {_peak_mb():.0f} MB; {scores.height} scores")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--synthetic", type=int, default=0, help="journals in a synthetic ledger")
    parser.add_argument("--scale", type=int, default=0, help="time the models on N lines")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the metrics as JSON")
    parser.add_argument("--ledger", type=Path,
                        help="another labelled export instead of the demo (e.g. a generator run "
                             "with another seed: sample_data.generate --out DIR --formats ads)")
    parser.add_argument("--labels", type=Path, help="its labels.csv (default: DIR/../labels.csv)")
    parser.add_argument("--format", default="ads", help="format of --ledger (default ads)")
    args = parser.parse_args(argv)
    if args.scale:
        return scale(args.scale, args.seed)
    labels = args.labels
    if args.ledger is not None and labels is None:
        labels = args.ledger.resolve().parent / "labels.csv"
    return quality(args.synthetic, args.seed, args.json, args.ledger, labels, args.format)


if __name__ == "__main__":
    sys.exit(main())
