"""A synthetic published run for app tests, screenshots and the render benchmark.

Why not the real pipeline: app tests must run in seconds and must not depend on every other
stage; the benchmark needs exactly N items. The files follow docs/CONTRACTS.md (findings, rule
hits, model scores, bookings, manifest, CURRENT) and the items are published through the real
``ReviewStore``, so the app sees what a nightly run would leave behind.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from detect.config import Settings
from detect.pipeline import RUNS, switch_current
from detect.schema import AMOUNT, BOOKING_SCHEMA, conform
from detect.store import ReviewStore, item_id

RULES = [("PAY001", "payments", "high"), ("TIM001", "timing", "medium"),
         ("USR001", "users", "high"), ("AMT001", "amounts", "low"), ("TXT001", "text", "medium")]
USERS = ["mmueller", "kschmidt", "aweber", "jfischer", "lwagner", "BATCH"]


@dataclass
class _Ctx:
    run_id: str
    run_dir: Path
    data_dir: Path
    entity: str
    settings: Settings
    rescore_history: bool = True


def build_run(data_dir: Path, n_items: int = 40, *, entity: str = "Musterstadt",
              run_id: str = "20250131T020000000000Z_Musterstadt", seed: int = 7,
              store: ReviewStore | None = None) -> dict[str, object]:
    """Write ``runs/<run_id>/`` with ``n_items`` flagged journals, publish, switch CURRENT."""
    rng = np.random.default_rng(seed)
    run_dir = data_dir / RUNS / run_id
    (run_dir / "data_docs").mkdir(parents=True, exist_ok=True)
    n_journals = max(n_items + n_items // 2, 4)
    j = np.arange(n_journals)
    journal_ids = np.char.add("B", np.char.zfill(j.astype(str), 6))
    start = date(2025, 1, 2)
    days = rng.integers(0, 28, n_journals)
    amounts = np.round(np.exp(rng.normal(6.5, 1.4, n_journals)), 2)
    amounts[1] = amounts[0]                                   # B000001 repeats B000000
    users = np.array(USERS)[rng.integers(0, len(USERS), n_journals)]
    hours = rng.integers(7, 18, n_journals)
    hours[0] = 23
    vendors = np.char.add("K", np.char.zfill((j % 37).astype(str), 5))
    vendors[1] = vendors[0]
    accounts = np.array(["5211", "5431", "4711", "7001", "5011"])[j % 5]
    cost_centers = np.array(["KST100", "KST200", "KST300", "KST400"])[j % 4]
    posting = [start + timedelta(days=int(d)) for d in days]
    entered = [datetime(p.year, p.month, p.day, int(h), 15) for p, h in zip(posting, hours,
                                                                             strict=True)]
    head = pl.DataFrame({
        "entity": entity, "fiscal_year": 2025, "period": 1, "journal_id": journal_ids,
        "posting_date": posting, "document_date": posting, "entered_at": entered,
        "entered_by": users, "approved_by": np.roll(users, 1), "vendor_id": vendors,
        "reference": np.char.add("RE-", (j % (n_journals - 1) + 1).astype(str)),
        "cost_center": cost_centers, "currency": "EUR", "document_type": "KR",
        "source": "manual", "description": np.char.add("Rechnung ", journal_ids),
        "amount": amounts, "gl_account": accounts,
        "bank_account": np.char.add("DE**", np.char.add((1000 + j % 50).astype(str),
                                                        "#a1b2c3d4e5")),
    })
    head = head.with_columns(pl.col("reference").fill_null("RE-0"))
    debit = head.with_columns(pl.lit(1).alias("line_no"))
    credit = head.with_columns(pl.lit(2).alias("line_no"), pl.lit("1600").alias("gl_account"),
                               (-pl.col("amount")).alias("amount"),
                               pl.lit(None, pl.String).alias("cost_center"))
    bookings = pl.concat([debit, credit]).with_columns(
        pl.col("amount").cast(AMOUNT), pl.lit("synthetic.csv").alias("source_file"),
        (pl.int_range(pl.len()) + 2).cast(pl.Int64).alias("source_line"))
    bookings = conform(bookings.lazy(), BOOKING_SCHEMA).collect().sort("journal_id", "line_no")
    bookings.write_parquet(run_dir / "bookings.parquet")

    flagged = head.head(n_items).with_row_index("i")
    rule_idx = (flagged["i"].to_numpy() % len(RULES))
    rule_ids = [RULES[k][0] for k in rule_idx]
    rule_ids[0] = rule_ids[1] = "PAY001"
    severities = [RULES[k][2] for k in rule_idx]
    severities[0] = severities[1] = "high"
    risk = np.sort(rng.uniform(5, 99, n_items))[::-1].round(1)
    reasons_de = [f"{r}: auffällige Buchung {jid}" for r, jid in zip(rule_ids,
                                                                     flagged["journal_id"],
                                                                     strict=True)]
    reasons_de[1] = ("PAY001: Zahlung an " + vendors[1] + " (Ref. RE-1) wurde schon gebucht"
                     "\nModell: Betrag ungewöhnlich hoch für das Konto")
    ids = [item_id(entity, 2025, str(jid)) for jid in journal_ids[:n_items]]  # fixture only
    findings = flagged.select(
        pl.Series("item_id", ids, dtype=pl.String),
        "entity", pl.col("fiscal_year").cast(pl.Int32), "journal_id",
        pl.lit(1, pl.Int32).alias("line_no"), "posting_date",
        pl.col("period").cast(pl.Int32), "gl_account", pl.col("amount").cast(AMOUNT),
        pl.col("amount").cast(AMOUNT).alias("journal_amount"),
    ).with_columns(
        pl.Series("risk_score", risk), pl.Series("rank", np.arange(1, n_items + 1)),
        pl.Series("rule_ids", rule_ids), pl.Series("severity", severities),
        pl.Series("model_score", rng.uniform(0, 1, n_items).round(3)),
        pl.Series("reasons", reasons_de),
        pl.Series("reasons_en", [r.replace("auffällige Buchung", "unusual entry")
                                 for r in reasons_de]),
        flagged["cost_center"], flagged["entered_by"], flagged["vendor_id"],
        flagged["document_type"], flagged["description"],
        pl.Series("above_capacity", np.arange(n_items) < 50),
        pl.lit(1).alias("n_rules"), pl.lit(2).alias("n_lines"),
    )
    findings.write_parquet(run_dir / "findings.parquet")

    hits = findings.select(
        pl.col("rule_ids").alias("rule_id"),
        pl.col("rule_ids").replace_strict({r: f for r, f, _ in RULES}).alias("family"),
        "severity", "entity", "fiscal_year", "journal_id", pl.lit(1, pl.Int32).alias("line_no"),
        pl.format("Regel {} hat Beleg {} markiert.", "rule_ids", "journal_id")
        .alias("explanation_de"),
        pl.format("Rule {} flagged journal {}.", "rule_ids", "journal_id")
        .alias("explanation_en"),
        pl.lit("{}").alias("evidence"))
    evidence = json.dumps({"first_journal_id": str(journal_ids[0]), "first_date":
                           str(posting[0]), "vendor_id": str(vendors[0])})
    hits = hits.with_columns(
        pl.when(pl.col("journal_id") == journal_ids[1]).then(pl.lit(evidence))
        .otherwise(pl.col("evidence")).alias("evidence"),
        pl.when(pl.col("journal_id") == journal_ids[1])
        .then(pl.lit(f"Zahlung an {vendors[1]} (Ref. RE-1) wurde schon am "
                     f"{posting[0]:%d.%m.%Y} gebucht."))
        .otherwise(pl.col("explanation_de")).alias("explanation_de"))
    hits.write_parquet(run_dir / "rule_hits.parquet")

    features = json.dumps([{"feature": "amount_vs_account", "value": "8,2 σ",
                            "contribution": 0.61},
                           {"feature": "hour_of_day", "value": "23", "contribution": 0.22}])
    findings.select(
        "entity", "fiscal_year", "journal_id", "line_no", "model_score",
        pl.lit("Betrag ungewöhnlich hoch für das Konto; Erfassung spät am Abend")
        .alias("model_reasons_de"),
        pl.lit("amount unusually high for the account; entered late in the evening")
        .alias("model_reasons_en"),
        pl.lit(features).alias("top_features"),
    ).write_parquet(run_dir / "model_scores.parquet")

    (run_dir / "data_docs" / "index.html").write_text(
        "<html><body><h1>Data Docs</h1><p>bookings suite: 12 expectations, all passed"
        "</p></body></html>", encoding="utf-8")
    manifest = {"run_id": run_id, "entity": entity, "format": "synthetic",
                "created_at": "2025-01-31T02:00:00+00:00", "outcome": "published",
                "validation": {"rows_in": bookings.height + 3, "rows_clean": bookings.height,
                               "rows_quarantined": 3, "warnings": ["entered_at missing in 0 %"]},
                "findings": {"items": n_items}}
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")

    store = store or ReviewStore.for_data_dir(data_dir)
    ctx = _Ctx(run_id, run_dir, data_dir, entity, Settings(entity=entity))
    counts = store.publish_run(ctx, findings)
    switch_current(data_dir, run_id)
    return {"run_dir": run_dir, "findings": findings, "counts": counts, "store": store}
