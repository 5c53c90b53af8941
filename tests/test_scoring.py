"""Review items: risk formula, independent signals first, model-only tail, capacity, contract."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest

from detect.config import Settings
from detect.runlog import StepLog
from detect.scoring import FINDINGS_COLUMNS, build_items, rank_items
from test_features import tiny_ledger

ENT, FY = "Testdorf", 2025


def hit(jid: str, rule: str, family: str, severity: str, line: int | None = 1) -> dict:
    return {"rule_id": rule, "family": family, "severity": severity, "entity": ENT,
            "fiscal_year": FY, "journal_id": jid, "line_no": line,
            "explanation_de": f"{rule} trifft {jid}", "explanation_en": f"{rule} hits {jid}",
            "evidence": "{}"}


def hits_frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"rule_id": pl.String, "family": pl.String,
                                      "severity": pl.String, "entity": pl.String,
                                      "fiscal_year": pl.Int32, "journal_id": pl.String,
                                      "line_no": pl.Int32, "explanation_de": pl.String,
                                      "explanation_en": pl.String, "evidence": pl.String})


def model_frame(ledger: pl.DataFrame, high: dict[str, float]) -> pl.DataFrame:
    """Every line scores 0.5 except the given journals (line 1)."""
    base = ledger.select("entity", "fiscal_year", "journal_id", "line_no")
    score = pl.lit(0.5)
    for jid, s in high.items():
        score = pl.when((pl.col("journal_id") == jid) & (pl.col("line_no") == 1)).then(s) \
            .otherwise(score)
    return base.with_columns(score.alias("model_score"),
                             pl.lit("Betrag auffällig").alias("model_reasons_de"),
                             pl.lit("amount unusual").alias("model_reasons_en"),
                             pl.lit("[]").alias("top_features"))


@pytest.fixture()
def ctx(tmp_path: Path) -> SimpleNamespace:
    return SimpleNamespace(run_dir=tmp_path, run_id="r1", entity=ENT, settings=Settings(),
                           log=StepLog(quiet=True), rescore_history=False)


@pytest.fixture(scope="module")
def ledger() -> pl.DataFrame:
    return tiny_ledger(400)


def test_risk_formula_and_independent_signals_rank_first(ledger, ctx) -> None:
    hits = hits_frame([
        hit("J00001", "PAY001", "payments", "high"),
        hit("J00001", "PAY001", "payments", "high", 2),          # same rule twice
        hit("J00002", "PAY001", "payments", "high"),
        hit("J00002", "TIM001", "timing", "medium", None),      # a second family
        hit("J00003", "PAY001", "payments", "high"),            # + model tail
        hit("J00004", "AMT001", "amounts", "low"),
    ])
    scores = model_frame(ledger, {"J00003": 0.999, "J00005": 0.9999})
    cfg = ctx.settings.scoring
    cfg.model_tail_share = 0.01                               # top 4 of 400 journals
    cfg.model_floor = 0.95
    items = rank_items(ledger.lazy(), hits, scores, ctx)
    assert items.columns == FINDINGS_COLUMNS
    by = {r["journal_id"]: r for r in items.iter_rows(named=True)}
    risk = lambda pts: round(100 * (1 - math.exp(-pts / cfg.score_scale)), 2)  # noqa: E731
    # specificity: hit rate smoothed with 2000 prior journals at 0.1 %
    spec = lambda n: min(1.0, 0.001 / ((n + 2.0) / 2400))     # noqa: E731
    pay, tim = spec(3), spec(1)                               # PAY001 hits 3 journals
    assert by["J00001"]["risk_score"] == pytest.approx(risk(0.7 * 45 * 1.5 * pay), abs=0.01)
    assert by["J00002"]["risk_score"] == pytest.approx(
        risk(0.7 * (45 * pay + 25 * tim) + 15 * pay), abs=0.01)    # + second family bonus
    model_pts = 100 * (0.999 - 0.95) / 0.05
    bonus = 10 * (0.999 - 0.99) / (1 - 0.99)                  # graded above model_bonus_floor
    assert by["J00003"]["risk_score"] == pytest.approx(
        risk(0.7 * 45 * pay + 0.05 * model_pts + bonus), abs=0.01)   # + model bonus
    assert by["J00004"]["risk_score"] == pytest.approx(risk(0.7 * 10 * tim), abs=0.01)
    # independent signals first: rule+model, two families, then one rule twice, then low
    order = items.sort("rank")["journal_id"].to_list()
    assert order.index("J00003") < order.index("J00001")
    assert order.index("J00002") < order.index("J00001") < order.index("J00004")
    assert by["J00001"]["rule_ids"] == "PAY001" and by["J00002"]["rule_ids"] == "PAY001,TIM001"
    assert by["J00002"]["severity"] == "high" and by["J00002"]["n_rules"] == 2
    assert by["J00001"]["reasons"] == "PAY001 (hoch): PAY001 trifft J00001 (2×)"
    # reasons heaviest first, one per line, both languages
    assert by["J00002"]["reasons"].split("\n") == ["PAY001 (hoch): PAY001 trifft J00002",
                                                   "TIM001 (mittel): TIM001 trifft J00002"]
    assert by["J00003"]["reasons_en"].split("\n")[1].startswith("model (more unusual than 99.9%")
    assert by["J00003"]["model_score"] == pytest.approx(0.999)
    assert items["rank"].to_list() == list(range(1, items.height + 1))


def test_model_bonus_is_graded_and_needs_no_tail(ledger, ctx) -> None:
    # a rule hit the model finds more unusual than 99.5 % of lines gets half the bonus, even
    # outside the model's top tail; at or below the bonus floor it gets none
    hits = hits_frame([hit("J00001", "PAY001", "payments", "high"),
                       hit("J00002", "PAY001", "payments", "high"),
                       hit("J00003", "PAY001", "payments", "high")])
    scores = model_frame(ledger, {"J00001": 0.995, "J00002": 0.99, "J00009": 0.9999})
    cfg = ctx.settings.scoring
    cfg.model_tail_share = 0.0025                             # 1 of 400: only J00009
    cfg.model_weight = 0.0
    assert cfg.model_bonus == 10 and cfg.model_bonus_floor == 0.99
    by = {r["journal_id"]: r for r in rank_items(ledger.lazy(), hits, scores, ctx)
          .iter_rows(named=True)}
    pts = lambda r: -cfg.score_scale * math.log(1 - r / 100)  # noqa: E731
    assert pts(by["J00001"]["risk_score"]) - pts(by["J00003"]["risk_score"]) == pytest.approx(
        5.0, abs=0.05)
    assert by["J00002"]["risk_score"] == by["J00003"]["risk_score"]


def test_model_only_items_need_the_top_tail(ledger, ctx) -> None:
    # 400 journals, tail 1 % -> 4 journals may enter on the model alone, if above the floor
    ctx.settings.scoring.model_tail_share = 0.01
    ctx.settings.scoring.model_floor = 0.95
    scores = model_frame(ledger, {f"J{i:05d}": 0.95 + i / 1000 for i in range(6)})
    items = rank_items(ledger.lazy(), hits_frame([]), scores, ctx)
    assert sorted(items["journal_id"]) == ["J00002", "J00003", "J00004", "J00005"]
    assert items.filter(pl.col("journal_id") == "J00005")["rank"].item() == 1
    assert (items["n_rules"] == 0).all() and items["rule_ids"].is_null().all()
    top = items.row(0, named=True)
    assert top["line_no"] == 1 and top["reasons"].startswith("Modell (ungewöhnlicher als 95,5 %")
    low = model_frame(ledger, {"J00001": 0.94})                  # top journal, but below floor
    assert rank_items(ledger.lazy(), None, low, ctx).height == 0


def test_capacity_item_id_line_details_and_file(ledger, ctx) -> None:
    hits = hits_frame([hit(f"J{i:05d}", "PAY001", "payments", "high", None) for i in range(10)]
                      + [hit("J00000", "TIM001", "timing", "medium", 2)])
    ctx.settings.scoring.review_capacity = 3
    items = build_items(ledger.lazy(), hits, None, ctx)
    assert items.height == 10 and items["above_capacity"].sum() == 3
    assert items.filter(pl.col("above_capacity"))["rank"].to_list() == [1, 2, 3]
    assert pl.read_parquet(Path(ctx.run_dir) / "findings.parquet").equals(items)
    top = items.row(0, named=True)
    assert top["journal_id"] == "J00000"
    assert top["item_id"] == hashlib.sha1(f"{ENT}|{FY}|J00000".encode()).hexdigest()[:16]
    # the rare TIM001 outweighs PAY001, which fires on 10 of 400 journals: its line is shown
    assert top["line_no"] == 2 and top["rule_ids"] == "PAY001,TIM001"
    src = ledger.filter(pl.col("journal_id") == "J00000")
    assert top["amount"] == src.filter(pl.col("line_no") == 2)["amount"].item()
    assert top["reasons"].split("\n")[0].startswith("TIM001 (mittel)")
    assert top["journal_amount"] == src.filter(pl.col("amount") > 0)["amount"].sum()
    assert top["n_lines"] == 2 and top["model_score"] is None
    # a journal-level hit: no line, details of the largest line
    second = items.filter(pl.col("journal_id") == "J00001").row(0, named=True)
    src = ledger.filter(pl.col("journal_id") == "J00001")
    assert second["line_no"] is None and second["amount"] == src["amount"].max()
    ctx.settings.scoring.review_capacity_share = 0.01       # 1 % of 400 journals = 4
    assert build_items(ledger.lazy(), hits, None, ctx)["above_capacity"].sum() == 4


def test_only_delivery_journals_become_items(ledger, ctx) -> None:
    delivery = ledger.filter(pl.col("journal_id") >= "J00390")
    delivery.write_parquet(Path(ctx.run_dir) / "bookings.parquet")
    hits = hits_frame([hit("J00001", "PAY001", "payments", "high"),
                       hit("J00395", "PAY001", "payments", "high")])
    items = rank_items(ledger.lazy(), hits, None, ctx)
    assert items["journal_id"].to_list() == ["J00395"]
    ctx.rescore_history = True
    assert rank_items(ledger.lazy(), hits, None, ctx).height == 2


def test_no_signals_no_items(ledger, ctx) -> None:
    items = rank_items(ledger.lazy(), None, None, ctx)
    assert items.height == 0 and items.columns == FINDINGS_COLUMNS


def test_model_words_come_from_the_top_line_when_other_lines_have_none(ledger, ctx) -> None:
    """``model_scores.parquet`` fills reason texts only on a journal's top line(s)."""
    scores = model_frame(ledger, {"J00005": 0.9999}).with_columns(
        pl.when(pl.col("model_score") > 0.99).then(pl.col(c)).otherwise(None).alias(c)
        for c in ("model_reasons_de", "model_reasons_en", "top_features"))
    assert scores["model_reasons_de"].null_count() == scores.height - 1
    cfg = ctx.settings.scoring
    cfg.model_tail_share, cfg.model_floor = 0.01, 0.95
    items = rank_items(ledger.lazy(), hits_frame([hit("J00001", "PAY001", "payments", "high")]),
                       scores, ctx)
    by = {r["journal_id"]: r for r in items.iter_rows(named=True)}
    assert by["J00005"]["reasons"].startswith("Modell (ungewöhnlicher als 99,9 % der Zeilen): "
                                              "Betrag auffällig")
    assert by["J00005"]["reasons_en"].endswith("of lines): amount unusual")
    assert by["J00005"]["line_no"] == 1
    assert "Modell" not in by["J00001"]["reasons"]   # 0.5 is below the floor: no model words


def test_model_words_are_read_only_at_or_above_the_floor(ledger, ctx) -> None:
    """The model worker hands over the scores before the rules end with texts only for the
    journals at or above ``model_floor`` (``modelworker._explain_ranked``); the hit journals'
    texts below it follow later. Ranking must not read those: same findings without them."""
    cfg = ctx.settings.scoring
    cfg.model_tail_share, cfg.model_floor, cfg.min_risk = 0.01, 0.95, 0.0
    scores = model_frame(ledger, {"J00001": 0.9, "J00002": 0.96, "J00005": 0.9999})
    hits = hits_frame([hit("J00001", "PAY001", "payments", "high"),
                       hit("J00002", "PAY001", "payments", "high")])
    shown = pl.col("model_score").max().over("entity", "fiscal_year", "journal_id") >= 0.95
    early = scores.with_columns(pl.when(shown).then(pl.col(c)).alias(c)
                                for c in ("model_reasons_de", "model_reasons_en",
                                          "top_features"))
    assert early["model_reasons_de"].null_count() > 0
    full = rank_items(ledger.lazy(), hits, scores, ctx)
    assert rank_items(ledger.lazy(), hits, early, ctx).equals(full)
    by = {r["journal_id"]: r for r in full.iter_rows(named=True)}
    assert "Modell" in by["J00002"]["reasons"] and "Modell" not in by["J00001"]["reasons"]


def test_ranking_prepared_while_the_rules_run_is_the_same(ledger, ctx) -> None:
    """``prepare`` (delivery journals, model tail: no rule hits needed) made before the hits
    exist gives the same items as ranking in one go."""
    from detect.scoring import prepare

    cfg = ctx.settings.scoring
    cfg.model_tail_share, cfg.model_floor = 0.01, 0.95
    scores = model_frame(ledger, {"J00001": 0.97, "J00005": 0.9999, "J00007": 0.96})
    prepared = prepare(ledger.lazy(), scores, ctx)
    hits = hits_frame([hit("J00001", "PAY001", "payments", "high"),
                       hit("J00003", "TIM001", "timing", "medium", 2)])
    items = rank_items(ledger.lazy(), hits, scores, ctx, prepared=prepared)
    assert items.equals(rank_items(ledger.lazy(), hits, scores, ctx))
    assert {"J00001", "J00003", "J00005"} <= set(items["journal_id"])
    assert rank_items(ledger.lazy(), hits, None, ctx,
                      prepared=prepare(ledger.lazy(), None, ctx)).equals(
        rank_items(ledger.lazy(), hits, None, ctx))


def test_model_tail_from_the_top_lines_equals_grouping_every_line() -> None:
    """The tail search over the top-scoring lines (``_model_tail``) must pick the same
    journals, lines and scores as grouping every scored line by journal; the frames here are
    big enough for the cutoff path (over 4,096 lines), with ties, journals outside the delivery,
    and ten journals whose many top lines fill the first cutoff (so it has to widen)."""
    import numpy as np

    from detect.scoring import _in_tail, _model_journals, _model_tail, _rows_of, _top_lines

    rng = np.random.default_rng(7)
    n = 30_000
    jid = rng.integers(0, 6_000, n)
    score = np.round(rng.random(n) * 0.98, 2)                           # many ties
    jid[:10_000], score[:10_000] = np.arange(10_000) % 10, 0.99          # 10 dense top journals
    ms = pl.DataFrame({"entity": ENT, "fiscal_year": FY,
                       "journal_id": [f"J{j:05d}" for j in jid],
                       "line_no": np.arange(n, dtype=np.int32), "model_score": score,
                       "model_reasons_de": "x", "model_reasons_en": "y"}).with_columns(
        pl.col("fiscal_year").cast(pl.Int32))
    journals = ms.select("entity", "fiscal_year", "journal_id").unique().filter(
        pl.col("journal_id").str.slice(1).cast(pl.Int32) % 7 != 3)     # some not delivered
    rules = journals.head(0)
    cols = ["entity", "fiscal_year", "journal_id", "model_score", "model_line"]
    for tail_k in (1, 10, 40, 700):
        got = _model_journals(*_model_tail(ms, journals, tail_k), rules).filter("model_tail")
        want = _in_tail(_top_lines(_rows_of(ms, journals)), tail_k).filter("model_tail")
        assert got.height == tail_k
        assert got.sort("journal_id").select(cols).equals(want.sort("journal_id").select(cols))


def test_delivery_journals_are_distinct_with_split_journals_and_hash_collisions(
        ledger, ctx, monkeypatch) -> None:
    """The delivery's journals come from its line runs made distinct by a 64-bit hash: a
    journal split over two places counts once, and a hash collision falls back to the key."""
    import detect.scoring as scoring

    split = pl.concat([ledger.slice(1, 40), ledger.slice(0, 1), ledger.slice(41, None)])
    split.write_parquet(Path(ctx.run_dir) / "bookings.parquet")
    want = ledger.select("entity", "fiscal_year", "journal_id").unique().height
    got = scoring._delivery_journals(ctx, split.lazy())
    assert got.height == want and got.select("entity", "fiscal_year", "journal_id").n_unique() == want
    monkeypatch.setattr(scoring, "key_hash", lambda cols: pl.lit(7, dtype=pl.UInt64))
    collided = scoring._delivery_journals(ctx, split.lazy())
    assert collided.height == want
    monkeypatch.undo()
    # a first line with a null key is a journal too, as ``unique`` counts it
    nulls = split.with_columns(pl.when(pl.int_range(pl.len()) > 0).then(pl.col(c)).alias(c)
                               for c in ("entity", "fiscal_year", "journal_id"))
    nulls.write_parquet(Path(ctx.run_dir) / "bookings.parquet")
    got = scoring._delivery_journals(ctx, nulls.lazy())
    assert got.height == nulls.select("entity", "fiscal_year", "journal_id").unique().height


def test_rule_ids_sorted_and_reasons_heaviest_first_whatever_the_hit_order(ledger, ctx) -> None:
    """``rule_ids`` are the journal's distinct rules sorted, and the reasons run heaviest
    first, however the hits arrive (ranking joins the per-journal lists it collects in the
    order of its sorted rule table; a regression guard for that order)."""
    hits = hits_frame([hit("J00010", "TIM001", "timing", "medium"),
                       hit("J00010", "AMT001", "amounts", "critical", 2),
                       hit("J00010", "PAY001", "payments", "low", 3),
                       hit("J00010", "TIM001", "timing", "medium", 4),
                       hit("J00011", "PAY001", "payments", "low"),
                       hit("J00011", "AMT001", "amounts", "critical")])
    items = rank_items(ledger.lazy(), hits, None, ctx)
    by = {r["journal_id"]: r for r in items.iter_rows(named=True)}
    assert by["J00010"]["rule_ids"] == "AMT001,PAY001,TIM001"
    assert by["J00011"]["rule_ids"] == "AMT001,PAY001"
    assert [r.split(" ")[0] for r in by["J00010"]["reasons"].split("\n")] == [
        "AMT001", "TIM001", "PAY001"]  # critical, medium (twice), low
    assert by["J00010"]["reasons_en"].split("\n")[1] == "TIM001 (medium): TIM001 hits J00010 (2×)"
    assert by["J00010"]["line_no"] == 2 and by["J00010"]["severity"] == "critical"
    want = hashlib.sha1(f"{ENT}|{FY}|J00011".encode()).hexdigest()[:16]
    assert by["J00011"]["item_id"] == want


def test_findings_file_written_by_the_caller_when_asked(ledger, ctx) -> None:
    """``build_items(write=False)`` leaves ``findings.parquet`` to ``write_findings`` (the
    pipeline can write it beside the store's inserts); the file is the same either way."""
    from detect.scoring import write_findings

    hits = hits_frame([hit("J00001", "PAY001", "payments", "high")])
    path = Path(ctx.run_dir) / "findings.parquet"
    items = build_items(ledger.lazy(), hits, None, ctx, write=False)
    assert not path.exists()
    assert write_findings(items, ctx) == path and pl.read_parquet(path).equals(items)
    assert build_items(ledger.lazy(), hits, None, ctx).equals(pl.read_parquet(path))
