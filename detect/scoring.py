"""Rule hits + model scores -> one ranked list of review items (one per journal).

Why journals: an auditor reviews a voucher, not a line. Why this formula: a journal that
several *independent* signals point at (two rule families, or a rule and the model) is far more
likely to be worth a look than one that trips the same rule five times, so

    rule points  = sum over rules of severity_points[severity] * (1 + d + d^2 + ... ) (n hits)
    model points = 100 * clip((model_score - model_floor) / (1 - model_floor), 0, 1)
    points       = rule_weight * rule points + model_weight * model points
                   + family_bonus * (rule families - 1)
                   + model_bonus  * [has rule hits]
                     * clip((model_score - model_bonus_floor) / (1 - model_bonus_floor), 0, 1)
    risk_score   = 100 * (1 - exp(-points / score_scale))        (0..100, diminishing returns)

Rule points are weighted by the rule's specificity, from its hit rate over the entity's whole
history (``RuleRunResult.history_rates``), so a journal scores the same in a nightly delta as in
a full re-export. All constants live in ``[scoring]`` (``detect.config.ScoringSettings``).
A journal with only a model score becomes an item only if it is in the top ``model_tail_share``
of this delivery's journals by model score and above ``model_floor``; otherwise the queue floods.

Cost: only journals with a signal (rule hits, or the model's top tail) are looked at line by
line; their lines are fetched from the history by a hashed-key filter, the model's tail is found
among the top-scoring lines (see ``_model_journals``), the delivery's journals are its line runs
made distinct by hash (see ``_delivery_journals``). 1M lines, in the job: ~0.45 CPU s after the
rules (0.52 before the list joins and the warmed ``item_ids``; 0.69 before the hashed delivery
journals and the scan filter; 3.0 originally), plus ~0.2 in ``prepare`` while the rules run.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from detect.background import in_background
from detect.explain import fmt_pct
from detect.schema import key_hash

JOURNAL = ["entity", "fiscal_year", "journal_id"]
KEY = JOURNAL + ["line_no"]
SEVERITY_ORDER = {"low": 1, "medium": 2, "high": 3, "critical": 4}
LINE_COLS = ["posting_date", "period", "gl_account", "amount", "cost_center", "entered_by",
             "vendor_id", "document_type", "description"]
FINDINGS_COLUMNS = [
    "item_id", "entity", "fiscal_year", "journal_id", "line_no", "posting_date", "period",
    "gl_account", "amount", "journal_amount", "risk_score", "rank", "rule_ids", "severity",
    "model_score", "reasons", "reasons_en", "cost_center", "entered_by", "vendor_id",
    "document_type", "description", "above_capacity", "n_rules", "n_lines",
]
SEVERITY_DE = {"low": "niedrig", "medium": "mittel", "high": "hoch", "critical": "kritisch"}


_HASHER: dict[int, duckdb.DuckDBPyConnection] = {}  # pid -> in-memory DuckDB for item_ids
_HASHER_LOCK = threading.Lock()


def _hasher() -> duckdb.DuckDBPyConnection:
    """The process's DuckDB connection for ``item_ids``, opened on first use (per process: a
    connection must not cross a fork). Why kept: opening and closing one cost ~0.03 CPU s per
    call (0.08 for the process's first DuckDB), more than hashing the 28k keys of a 1M-line
    delivery; ``prepare`` opens and warms it while the rules run."""
    pid = os.getpid()
    with _HASHER_LOCK:
        if pid not in _HASHER:
            _HASHER.clear()
            _HASHER[pid] = duckdb.connect()
        return _HASHER[pid]


def item_ids(frame: pl.DataFrame) -> pl.Series:
    """sha1(entity|fiscal_year|journal_id)[:16], computed in DuckDB (vectorised)."""
    keys = frame.select(pl.concat_str([pl.col("entity"), pl.col("fiscal_year").cast(pl.String),
                                       pl.col("journal_id")], separator="|").alias("k"))
    con = _hasher().cursor()  # a cursor: its own registered names, safe beside other threads
    try:
        con.register("keys", keys.unique().to_arrow())
        hashed = pl.from_arrow(con.sql(
            "SELECT k, substr(sha1(k), 1, 16) AS item_id FROM keys").to_arrow_table())
    finally:
        con.close()
    assert isinstance(hashed, pl.DataFrame)
    return keys.join(hashed, on="k", how="left", maintain_order="left").get_column("item_id")


def _delivery_journals(ctx: Any, bookings: pl.LazyFrame) -> pl.DataFrame:
    """The journals this run scores, with their ``_jh`` = ``key_hash(JOURNAL)``: the
    delivery's (``run_dir/bookings.parquet``), or every journal of ``bookings`` (the history)
    when rescoring or without a delivery file.

    Why not ``unique()`` on the key: hashing two string columns per line cost 0.1 CPU s per 1M
    lines. A journal's lines are adjacent in a delivery, so repeats of the line before are
    dropped first; the rest are made distinct by their 64-bit hash. Exactly: a row whose hash
    was seen before must carry that row's key (always so without a collision), else the exact
    ``unique`` is taken."""
    path = Path(ctx.run_dir) / "bookings.parquet"
    source = (bookings if getattr(ctx, "rescore_history", False) or not path.exists()
              else pl.scan_parquet(path))
    runs = (source.select(JOURNAL).with_columns(pl.col("fiscal_year").cast(pl.Int32))
            .filter(pl.any_horizontal(pl.col(c).ne_missing(pl.col(c).shift()) for c in JOURNAL)
                    | (pl.int_range(pl.len()) == 0))  # the first line even with a null key
            .with_columns(key_hash(JOURNAL).alias("_jh")).collect())
    first = runs.get_column("_jh").is_first_distinct()
    journals = runs.filter(first)
    again = runs.filter(~first)
    if again.height:  # e.g. a journal split over two places of the file: same key, same hash
        seen = again.join(journals, on="_jh", how="left", suffix="_first")
        same = seen.select(pl.all_horizontal(pl.col(c).eq_missing(pl.col(f"{c}_first"))
                                             for c in JOURNAL).all()).item()
        if not same:  # a hash collision: distinct by the key itself
            journals = runs.unique(JOURNAL, keep="first", maintain_order=True)
    return journals


def _rows_of(frame: pl.DataFrame | pl.LazyFrame, journals: pl.DataFrame) -> pl.DataFrame:
    """The rows of ``frame`` (``fiscal_year`` as Int32) whose journal is in ``journals``
    (optionally with its ``_jh`` = ``key_hash(JOURNAL)`` column, computed once by the caller).

    Why not one semi join: on the three key columns (two strings) it costs ~0.3 s per 1M rows
    on the probe side and builds a table of all ``journals`` (5M delivery journals at 10M
    lines: ~3 s). 64-bit hashes of the key narrow both sides first (the rows whose hash is a
    journal's, the journals whose hash is one of those rows'), then the exact semi join runs
    on the few left, so a hash collision cannot let a stray row through. Row order is not kept
    (callers sort). A lazy ``frame`` (the history scan) is filtered by the hash expression
    itself, so the filter reaches the scan (1M lines: 0.10 instead of 0.15 CPU s); an eager
    one gets the hash as a column, which is reused for the journals."""
    jh = (journals.get_column("_jh") if "_jh" in journals.columns
          else journals.select(key_hash(JOURNAL)).to_series())
    if isinstance(frame, pl.LazyFrame):
        near = frame.filter(key_hash(JOURNAL).is_in(jh.implode())).collect()
        near_jh = near.select(key_hash(JOURNAL)).to_series()
    else:
        hashed = "_jh" in frame.columns  # e.g. the model scores (``_model_tail``)
        near = (frame if hashed else frame.with_columns(key_hash(JOURNAL).alias("_jh"))
                ).filter(pl.col("_jh").is_in(jh.implode()))
        near_jh = near.get_column("_jh")
        near = near if hashed else near.drop("_jh")
    maybe = journals.select(JOURNAL).filter(jh.is_in(near_jh.implode()))
    return near.join(maybe, on=JOURNAL, how="semi")


def _rule_table(hits: pl.DataFrame | None, journals: pl.DataFrame, cfg: Any,
                n_journals: int, history_rates: dict[str, float] | None = None,
                history_journals: int | None = None) -> pl.DataFrame:
    """One row per (journal, rule): points with diminishing returns and the rule's specificity
    (a rule that flags many journals says less about each), first explanation.

    With ``history_rates`` (share of the history's journals each rule flags, out of
    ``history_journals``) a rule's rate comes from the whole history, so a journal scores the
    same in a 300-journal nightly delta as in a full re-export; rules without a history rate
    (control-total findings) fall back to their rate in this delivery."""
    cols = ["rule_id", "family", "severity", "line_no", "explanation_de", "explanation_en"]
    if hits is None or hits.is_empty():
        return pl.DataFrame(schema={**{c: pl.String for c in JOURNAL}, "fiscal_year": pl.Int32,
                                    "rule_id": pl.String, "family": pl.String,
                                    "severity": pl.String, "line_no": pl.Int32,
                                    "explanation_de": pl.String, "explanation_en": pl.String,
                                    "hits": pl.UInt32, "points": pl.Float64,
                                    "sev_rank": pl.Int32, "specificity": pl.Float64})
    pts = pl.col("severity").replace_strict(cfg.severity_points, default=0.0,
                                            return_dtype=pl.Float64)
    d = min(max(cfg.repeat_decay, 0.0), 0.99)
    per_rule = (hits.select(JOURNAL + cols)
                .with_columns(pl.col("fiscal_year").cast(pl.Int32),
                              pl.col("line_no").cast(pl.Int32))
                .pipe(_rows_of, journals)
                .sort(JOURNAL + ["rule_id", "line_no"], nulls_last=False)
                .group_by(JOURNAL + ["rule_id"], maintain_order=True)
                .agg(pl.col("family").first(), pl.col("severity").first(),
                     pl.col("line_no").first(), pl.col("explanation_de").first(),
                     pl.col("explanation_en").first(), pl.len().alias("hits")))
    # smoothed towards rule_specific_share, so a small nightly delivery does not make every
    # rule look noisy (1 hit in 200 journals) and a big one measures the rate it sees
    prior = cfg.rule_rate_prior_journals
    rate = ((pl.len().over("rule_id").cast(pl.Float64) + cfg.rule_specific_share * prior)
            / (n_journals + prior))
    if history_rates and history_journals:
        known = pl.DataFrame({"rule_id": list(history_rates),
                              "_h_rate": list(history_rates.values())},
                             schema={"rule_id": pl.String, "_h_rate": pl.Float64})
        per_rule = per_rule.join(known, on="rule_id", how="left", maintain_order="left")
        h_rate = ((pl.col("_h_rate") * history_journals + cfg.rule_specific_share * prior)
                  / (history_journals + prior))
        rate = pl.when(pl.col("_h_rate").is_not_null()).then(h_rate).otherwise(rate)
    spec = ((cfg.rule_specific_share / rate) ** cfg.rule_specificity_power).clip(
        cfg.rule_specificity_floor, 1.0) if cfg.rule_specificity_power > 0 else pl.lit(1.0)
    return per_rule.with_columns(spec.alias("specificity")).drop(
        "_h_rate", strict=False).with_columns(
        (pts * (1 - d ** pl.col("hits").cast(pl.Float64)) / (1 - d) * pl.col("specificity"))
        .alias("points"),
        pl.col("severity").replace_strict(SEVERITY_ORDER, default=0, return_dtype=pl.Int32)
        .alias("sev_rank"))


def build_items(bookings: pl.LazyFrame, rule_hits: pl.DataFrame | None,
                model_scores: pl.DataFrame | None, ctx: Any, *,
                history_rates: dict[str, float] | None = None,
                history_journals: int | None = None,
                prepared: Prepared | None = None, write: bool = True) -> pl.DataFrame:
    """Pipeline stage: review items of this delivery, ranked; writes ``findings.parquet``.

    ``history_rates``/``history_journals``: ``RuleRunResult.history_rates()`` and
    ``.history_population`` (see ``_rule_table``); without them rates come from the delivery.
    ``prepared``: ``prepare(bookings, model_scores, ctx)``, made while the rules ran.
    ``write=False``: the caller writes the file itself (``write_findings``), e.g. in a thread
    beside the store's inserts (~0.035 CPU s at 1M lines, Polars, the GIL released)."""
    items = rank_items(bookings, rule_hits, model_scores, ctx, history_rates=history_rates,
                       history_journals=history_journals, prepared=prepared)
    if write:
        write_findings(items, ctx)
    cap = int(items.get_column("above_capacity").sum()) if items.height else 0
    ctx.log.info(f"{items.height} review items; {cap} within the review capacity, "
                 f"{items.height - cap} beyond it", items=items.height, within_capacity=cap,
                 beyond_capacity=items.height - cap)
    return items


def write_findings(items: pl.DataFrame, ctx: Any) -> Path:
    """``items`` (``build_items``) as the run's ``findings.parquet``."""
    path = Path(ctx.run_dir) / "findings.parquet"
    items.write_parquet(path)
    return path


@dataclass
class Prepared:
    """What ranking needs that does not depend on the rule hits (``prepare``)."""

    journals: pl.DataFrame          # the delivery's journals with their ``_jh``
    model: pl.DataFrame | None      # the model scores as ranking reads them, with ``_jh``
    tail: pl.DataFrame              # the model's top-tail journals (``_model_tail``)
    tail_k: int


def prepare(bookings: pl.LazyFrame, model_scores: pl.DataFrame | None, ctx: Any) -> Prepared:
    """The hit-independent part of ranking: the delivery's journals and the model's top tail
    (~0.2 CPU s of ~0.65 at 1M lines). The pipeline runs it in a thread while the rules run,
    as soon as the model worker has handed over its scores; ``rank_items`` does it itself
    when not given one."""
    cfg = ctx.settings.scoring
    journals = _delivery_journals(ctx, bookings)  # with the ``_jh`` that _rows_of uses
    # the DuckDB of ``item_ids`` opened and its first query run now, not after the rules:
    # ~0.05 CPU s of set-up that the one call on the critical path then does not pay
    item_ids(journals.head(1))
    # the delivery was merged into the history, so all its journals are in ``bookings``
    tail_k = (math.ceil(cfg.model_tail_share * journals.height) if cfg.model_tail_share > 0
              else 0)
    model, tail = _model_tail(model_scores, journals, tail_k)
    return Prepared(journals, model, tail, tail_k)


def rank_items(bookings: pl.LazyFrame, rule_hits: pl.DataFrame | None,
               model_scores: pl.DataFrame | None, ctx: Any, *,
               history_rates: dict[str, float] | None = None,
               history_journals: int | None = None,
               prepared: Prepared | None = None) -> pl.DataFrame:
    """Compute the findings frame (see module docstring) without writing it.

    ``prepared``: ``prepare(bookings, model_scores, ctx)`` of the same inputs, if made
    earlier."""
    cfg = ctx.settings.scoring
    schema = bookings.collect_schema()
    want = KEY + [c for c in LINE_COLS if c in schema]
    if prepared is None:
        prepared = prepare(bookings, model_scores, ctx)
    journals = prepared.journals
    n_journals = journals.height

    rules = _rule_table(rule_hits, journals, cfg, n_journals, history_rates, history_journals)
    floor = min(max(cfg.model_floor, 0.0), 0.999)
    # only journals with a signal can become items (rule hits, the model's tail at or above
    # the floor): their lines are read from the history in a thread (a Parquet scan, ~0.15
    # CPU s at 1M lines, the GIL released) while the rule and model tables are built here
    candidates = pl.concat([rules.select(JOURNAL), prepared.tail.filter(
        pl.col("model_score") >= floor).select(JOURNAL)]).unique()
    reading = in_background(_candidate_lines, bookings.select(want), candidates,
                            name="belegwacht-lines")
    families = (rules.group_by(JOURNAL + ["family"]).agg(pl.col("specificity").max())
                .group_by(JOURNAL).agg(pl.col("specificity").sum().alias("_fam_weight"),
                                       pl.col("specificity").max().alias("_fam_max")))
    rule_j = rules.group_by(JOURNAL).agg(
        pl.col("points").sum().alias("rule_points"),
        pl.col("rule_id").n_unique().alias("n_rules"),
        pl.col("family").n_unique().alias("n_families"),
        pl.col("rule_id").alias("rule_ids"),  # sorted and distinct per journal in ``rules``
        pl.col("severity").sort_by("sev_rank").last().alias("severity"),
        pl.col("line_no").sort_by("points").last().alias("rule_line"),
    ).with_columns(pl.col("rule_ids").list.join(","))

    model_j = _model_journals(prepared.model, prepared.tail, rule_j.select(JOURNAL))
    model_j = model_j.with_columns(
        (pl.col("model_tail") & (pl.col("model_score") >= floor)).alias("model_tail"),
        (100 * ((pl.col("model_score") - floor) / (1 - floor)).clip(0, 1)).alias("model_points"))

    lines, per_journal, biggest = reading.result()
    j = (per_journal.join(rule_j, on=JOURNAL, how="left").join(model_j, on=JOURNAL, how="left")
         .join(families, on=JOURNAL, how="left")
         .with_columns(pl.col("rule_points", "model_points", "_fam_weight", "_fam_max")
                       .fill_null(0.0),
                       pl.col("n_rules", "n_families").fill_null(0).cast(pl.Int64),
                       pl.col("model_tail").fill_null(False)))
    j = j.filter((pl.col("n_rules") > 0) | pl.col("model_tail"))
    points = (cfg.rule_weight * pl.col("rule_points") + cfg.model_weight * pl.col("model_points")
              + cfg.family_bonus * (pl.col("_fam_weight") - pl.col("_fam_max")).clip(0, None)
              + cfg.model_bonus * (pl.col("n_rules") > 0).cast(pl.Float64) * _corroboration(cfg))
    j = j.with_columns((100 * (1 - (-points / cfg.score_scale).exp())).round(2).alias("risk_score"))
    j = j.filter(pl.col("risk_score") >= cfg.min_risk)
    j = j.sort(["risk_score", "n_rules", "model_score"] + JOURNAL,
               descending=[True, True, True, False, False, False], nulls_last=True)
    j = j.with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("rank"))
    capacity = (math.ceil(cfg.review_capacity_share * n_journals)
                if cfg.review_capacity_share > 0 else cfg.review_capacity)
    j = j.with_columns((pl.col("rank") <= capacity).alias("above_capacity"))

    # the strongest line: the top rule's line, else the model's line; journal-level -> null
    j = j.with_columns(
        pl.when(pl.col("n_rules") > 0).then(pl.col("rule_line")).otherwise(pl.col("model_line"))
        .cast(pl.Int32).alias("line_no"),
        pl.coalesce(pl.when(pl.col("n_rules") > 0).then(pl.col("rule_line")),
                    pl.col("model_line")).cast(pl.Int32).alias("_detail_line"))
    j = j.join(biggest, on=JOURNAL, how="left").with_columns(
        pl.coalesce("_detail_line", "_big_line").alias("_detail_line"))
    detail = lines.select(KEY + LINE_COLS).rename({"line_no": "_detail_line"})
    j = j.join(detail, on=JOURNAL + ["_detail_line"], how="left")

    j = j.join(_reasons(rules, j, cfg), on=JOURNAL, how="left")
    j = j.with_columns(item_ids(j).alias("item_id"))
    return j.select(FINDINGS_COLUMNS).with_columns(
        pl.col("risk_score").cast(pl.Float64), pl.col("n_rules").cast(pl.Int32),
        pl.col("n_lines").cast(pl.Int32), pl.col("rank").cast(pl.Int32))


def _candidate_lines(bookings: pl.LazyFrame, candidates: pl.DataFrame
                     ) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The candidate journals' lines from the history (``LINE_COLS`` that it lacks as nulls),
    their count and positive amount per journal, and each journal's biggest line (the highest
    amount, then the lowest line number): what ranking needs of the lines."""
    lines = _rows_of(bookings.with_columns(pl.col("fiscal_year").cast(pl.Int32)), candidates)
    lines = lines.with_columns(pl.lit(None).alias(c) for c in LINE_COLS if c not in lines.columns)
    per_journal = lines.group_by(JOURNAL).agg(
        pl.len().alias("n_lines"),
        pl.col("amount").filter(pl.col("amount") > 0).sum().alias("journal_amount"))
    biggest = lines.group_by(JOURNAL).agg(  # a sort per journal: 0.006 vs 0.014 CPU s at 1M
        pl.col("line_no").sort_by(["amount", "line_no"], descending=[True, False]).first()
        .alias("_big_line"))
    return lines, per_journal, biggest


def _top_lines(scores: pl.DataFrame) -> pl.DataFrame:
    """One row per journal, sorted by journal: its highest-scoring line (ties: lowest line
    number; a null score sorts first, as ``sort`` puts nulls first)."""
    order = JOURNAL + ["model_score", "line_no"]
    return (scores.sort(order, descending=[False] * 3 + [True, False])
            .group_by(JOURNAL, maintain_order=True)
            .agg(pl.col("model_score").first(), pl.col("line_no").first().alias("model_line"),
                 pl.col("model_reasons_de").first(), pl.col("model_reasons_en").first()))


def _in_tail(per_journal: pl.DataFrame, tail_k: int) -> pl.DataFrame:
    """``model_tail``: among the top ``tail_k`` journals by score (``per_journal`` sorted by
    journal, so ties go to the lower journal key)."""
    return per_journal.with_columns(
        (pl.col("model_score").rank("ordinal", descending=True) <= tail_k).fill_null(False)
        .alias("model_tail"))


_EMPTY_MODEL = {"entity": pl.String, "fiscal_year": pl.Int32, "journal_id": pl.String,
                "model_score": pl.Float64, "model_line": pl.Int32,
                "model_reasons_de": pl.String, "model_reasons_en": pl.String,
                "model_tail": pl.Boolean}


def _model_tail(model_scores: pl.DataFrame | None, journals: pl.DataFrame, tail_k: int
                ) -> tuple[pl.DataFrame | None, pl.DataFrame]:
    """The model scores as ranking reads them (with ``_jh`` = ``key_hash(JOURNAL)``, so later
    lookups do not hash a million keys again; None without scores) and the top ``tail_k`` of
    the delivery's ``journals`` by their highest line score: one row per journal, the
    ``_top_lines`` columns.

    Why not group every journal: grouping a million scored lines by journal cost ~1 s. The top
    journals are found among the top-scoring lines instead: every journal whose best line
    beats the lowest of the top ``m`` lines is complete there, and once ``tail_k`` of them are
    found the tail is exact; otherwise ``m`` grows (up to all lines)."""
    empty = pl.DataFrame(schema=_EMPTY_MODEL).drop("model_tail")
    if model_scores is None or not model_scores.height:
        return None, empty
    ms = model_scores.select(
        *JOURNAL, "model_score", "line_no", "model_reasons_de", "model_reasons_en"
    ).with_columns(pl.col("fiscal_year").cast(pl.Int32), pl.col("line_no").cast(pl.Int32),
                   pl.col("model_score").cast(pl.Float64)).with_columns(
        key_hash(JOURNAL).alias("_jh"))
    if tail_k <= 0:
        return ms, empty
    score = ms.get_column("model_score")
    # a null or NaN score has no place in a cutoff: then every line is grouped
    m = ms.height if score.null_count() or score.is_nan().any() else max(8 * tail_k, 4096)
    while True:
        if m >= ms.height:
            top = _in_tail(_top_lines(_rows_of(ms, journals)), tail_k)
            break
        cutoff = score.top_k(m).min()  # the m-th highest line score
        best = ms.filter(pl.col("model_score") >= cutoff)
        sure = _top_lines(_rows_of(best, journals)).filter(pl.col("model_score") > cutoff)
        if sure.height >= tail_k:
            top = _in_tail(sure, tail_k)
            break
        m *= 4
    return ms, top.filter("model_tail").drop("model_tail")


def _model_journals(ms: pl.DataFrame | None, tail: pl.DataFrame,
                    rule_journals: pl.DataFrame) -> pl.DataFrame:
    """Model score, line and reasons of the journals that need them: those with rule hits and
    the model's top tail (``_model_tail``: ``ms`` and ``tail``), ``model_tail`` marking the
    latter."""
    if ms is None:
        return pl.DataFrame(schema=_EMPTY_MODEL)
    rows = (_top_lines(_rows_of(ms, rule_journals)) if rule_journals.height
            else tail.clear())
    rows = rows.join(tail.select(*JOURNAL, pl.lit(True).alias("model_tail")), on=JOURNAL,
                     how="left").with_columns(pl.col("model_tail").fill_null(False))
    return pl.concat([rows, tail.join(rows, on=JOURNAL, how="anti")
                      .with_columns(pl.lit(True).alias("model_tail"))],
                     how="vertical_relaxed")


def _corroboration(cfg: Any) -> pl.Expr:
    """0..1: how strongly the model backs a journal's rule hits (0 at ``model_bonus_floor``,
    1 at model score 1). Graded, so a rule hit on a line the model finds more unusual than
    99.5 % of lines gets most of the bonus even when the journal is not in the model's top tail."""
    lo = min(max(getattr(cfg, "model_bonus_floor", cfg.model_floor), 0.0), 0.999)
    return ((pl.col("model_score").fill_null(0.0) - lo) / (1 - lo)).clip(0, 1)


def _reasons(rules: pl.DataFrame, items: pl.DataFrame, cfg: Any) -> pl.DataFrame:
    """German and English reasons, one per line, heaviest first.

    The model's words are read only for journals at or above ``model_floor`` (model points, or
    a model-only item, which needs the floor): the model worker hands over the scores with
    just those texts before the rules end (``modelworker``), so this must stay so
    (``test_model_words_are_read_only_at_or_above_the_floor``)."""
    keys = items.select(JOURNAL)
    sev_de = pl.col("severity").replace_strict(SEVERITY_DE, default=pl.col("severity"))
    times = pl.when(pl.col("hits") > 1).then(
        pl.concat_str([pl.lit(" ("), pl.col("hits").cast(pl.String), pl.lit("×)")])
    ).otherwise(pl.lit(""))
    rule_rows = rules.join(keys, on=JOURNAL, how="semi").select(
        *JOURNAL,
        (cfg.rule_weight * pl.col("points")).alias("weight"),
        pl.concat_str([pl.col("rule_id"), pl.lit(" ("), sev_de, pl.lit("): "),
                       pl.col("explanation_de").fill_null(""), times]).alias("de"),
        pl.concat_str([pl.col("rule_id"), pl.lit(" ("), pl.col("severity"), pl.lit("): "),
                       pl.col("explanation_en").fill_null(""), times]).alias("en"))
    has_model = pl.col("model_score").is_not_null() & (
        (pl.col("model_points") > 0) | (pl.col("n_rules") == 0))
    model_rows = items.filter(has_model).select(
        *JOURNAL,
        (cfg.model_weight * pl.col("model_points")).alias("weight"),
        pl.concat_str([pl.lit("Modell (ungewöhnlicher als "), fmt_pct(pl.col("model_score"), "de"),
                       pl.lit(" der Zeilen): "), pl.col("model_reasons_de").fill_null("")])
        .alias("de"),
        pl.concat_str([pl.lit("model (more unusual than "), fmt_pct(pl.col("model_score"), "en"),
                       pl.lit(" of lines): "), pl.col("model_reasons_en").fill_null("")])
        .alias("en"))
    rows = pl.concat([rule_rows, model_rows.cast(rule_rows.schema)])
    # a group keeps its rows' order; lists joined afterwards: ``str.join`` as the aggregation
    # cost 0.045 instead of 0.012 CPU s for the 28k items of 1M lines
    return (rows.sort(JOURNAL + ["weight"], descending=[False] * 3 + [True])
            .group_by(JOURNAL, maintain_order=True)
            .agg(pl.col("de").alias("reasons"), pl.col("en").alias("reasons_en"))
            .with_columns(pl.col("reasons", "reasons_en").list.join("\n")))
