"""The real nightly scenario: a year arrives as monthly deltas through the inbox, then once more
as a full re-export. Runs `python -m detect run --inbox` in a subprocess, as cron would.

Ledger: ``sample_data.generate.generate(6000, 11, ...)`` (ADS, 2,579 journals) plus one
constructed duplicate invoice whose first booking is in an earlier delivery. Deliveries:
months 1-9 (initial load), 10, 11, 12; then the whole year again (``--rescore-history``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from detect.scoring import rank_items
from detect.store import ReviewStore

ROOT = Path(__file__).resolve().parents[1]
GL = "GL_Detail_20250101_20251231.csv"
ENTITY = "Musterstadt"
DUP_ID = "1999999901"
DELIVERIES = {"d1_2025-01-09": range(1, 10), "d2_2025-10": [10], "d3_2025-11": [11],
              "d4_2025-12": [12]}

pytestmark = pytest.mark.slow


def belegwacht(*args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "detect", *args], capture_output=True,
                            text=True, cwd=ROOT, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _with_duplicate(gl: pl.DataFrame) -> tuple[pl.DataFrame, str]:
    """Copy one September invoice (unique vendor/reference/amount) into October as a new
    journal: PAY001 must find it in the October delta, with its first booking in delivery 1."""
    vendor_lines = gl.filter(pl.col("Period") == "9", pl.col("Document_Type") == "KR",
                             pl.col("Supplier_Account_ID").fill_null("") != "",
                             pl.col("Reference_Number").fill_null("") != "")
    key = ["Supplier_Account_ID", "Reference_Number", "GL_Account_Number", "Amount",
           "Amount_Credit_Debit_Indicator"]
    unique = gl.group_by(key).len().filter(pl.col("len") == 1).drop("len")
    original = (vendor_lines.join(unique, on=key, how="semi").sort("Journal_ID")
                .get_column("Journal_ID").first())
    copy = gl.filter(pl.col("Journal_ID") == original).with_columns(
        pl.lit(DUP_ID).alias("Journal_ID"), pl.lit("10").alias("Period"),
        pl.lit("20251007").alias("Effective_Date"), pl.lit("20251007").alias("Entered_Date"))
    return pl.concat([gl, copy]), str(original)


def _delivery(folder: Path, source: Path, gl: pl.DataFrame, mtime: float) -> Path:
    """A delivery folder: the GL lines plus every master listing, with a fixed mtime (the inbox
    processes oldest first)."""
    folder.mkdir(parents=True)
    for listing in source.glob("*.csv"):
        if listing.name != GL:
            shutil.copy(listing, folder / listing.name)
    gl.write_csv(folder / GL)
    os.utime(folder, (mtime, mtime))
    return folder


def _findings(data_dir: Path, run_id: str) -> pl.DataFrame:
    return pl.read_parquet(data_dir / "runs" / run_id / "findings.parquet")


@dataclass
class Scenario:
    data_dir: Path
    gl: pl.DataFrame
    original: str
    decided: dict[str, Any] = field(default_factory=dict)
    before_reexport: pl.DataFrame | None = None
    decisions_before: int = 0
    full_run: str = ""

    def store(self) -> ReviewStore:
        return ReviewStore.for_data_dir(self.data_dir)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    from sample_data.generate import generate

    tmp = tmp_path_factory.mktemp("nightly")
    generate(6000, 11, tmp / "ledger", ["ads"])
    source = tmp / "ledger" / "ads"
    gl, original = _with_duplicate(pl.read_csv(source / GL, infer_schema=False))
    data_dir, inbox = tmp / "var", tmp / "inbox"
    inbox.mkdir()
    s = Scenario(data_dir, gl, original)
    base = 1_700_000_000.0
    parts = {name: gl.filter(pl.col("Period").cast(pl.Int32).is_in(list(months)))
             for name, months in DELIVERIES.items()}

    # night 1: the initial load, then an auditor decides on the top item
    _delivery(inbox / "d1_2025-01-09", source, parts["d1_2025-01-09"], base)
    out = belegwacht("run", "--inbox", str(inbox), "--data-dir", str(data_dir),
                     "--entity", ENTITY, "-q")
    assert "1 processed" in out.stdout, out.stdout
    store = s.store()
    first = store.items(ENTITY).sort("rank").row(0, named=True)
    store.record_decision(first["item_id"], "confirmed", "Beleg geprüft, Rückforderung läuft",
                          "pruefer")
    s.decided = store.get_item(first["item_id"]) or {}

    # nights 2-4: monthly deltas (one inbox call, each folder its own run)
    for i, name in enumerate(list(DELIVERIES)[1:], start=1):
        _delivery(inbox / name, source, parts[name], base + i * 100)
    out = belegwacht("run", "--inbox", str(inbox), "--data-dir", str(data_dir),
                     "--entity", ENTITY, "-q")
    assert "3 processed, 1 already processed" in out.stdout, out.stdout
    s.before_reexport = store.items(ENTITY, include_unflagged=True)
    s.decisions_before = store.decision_log().height

    # month end: the whole year once more, re-scoring the history
    inbox2 = tmp / "inbox_full"
    inbox2.mkdir()
    _delivery(inbox2 / "full_2025", source, gl, base + 1000)
    belegwacht("run", "--inbox", str(inbox2), "--data-dir", str(data_dir), "--entity", ENTITY,
               "--rescore-history", "-q")
    s.full_run = (data_dir / "CURRENT").read_text().strip()
    s.parts = parts  # type: ignore[attr-defined]
    return s


def _runs_by_delivery(s: Scenario) -> dict[str, dict[str, Any]]:
    """Published runs keyed by their delivery folder name (from the run's manifest inputs)."""
    import json

    out = {}
    for run in s.store().list_runs(ENTITY):
        if run["outcome"] != "published":
            continue
        manifest = json.loads((s.data_dir / "runs" / run["id"] / "manifest.json")
                              .read_text("utf-8"))
        folder = Path(manifest["inputs"][0]["path"]).parent.name
        out[folder] = {"run_id": run["id"], "manifest": manifest}
    return out


def test_each_delivery_is_its_own_published_run(scenario: Scenario) -> None:
    runs = _runs_by_delivery(scenario)
    assert sorted(runs) == sorted([*DELIVERIES, "full_2025"])
    parts: dict[str, pl.DataFrame] = scenario.parts  # type: ignore[attr-defined]
    for name, part in parts.items():
        lines = sum(i["lines"] for i in runs[name]["manifest"]["per_input"])
        assert lines == part.height, name
    hashes = {r["manifest"]["delivery"]["sha256"] for r in runs.values()}
    assert len(hashes) == 5


def test_items_only_for_the_deliverys_journals(scenario: Scenario) -> None:
    runs = _runs_by_delivery(scenario)
    parts: dict[str, pl.DataFrame] = scenario.parts  # type: ignore[attr-defined]
    for name, part in parts.items():
        found = _findings(scenario.data_dir, runs[name]["run_id"])
        delivered = set(part.get_column("Journal_ID").unique().to_list())
        assert found.height > 0, name
        assert set(found.get_column("journal_id").to_list()) <= delivered, name


def test_duplicate_across_deliveries_is_found_in_the_later_one(scenario: Scenario) -> None:
    runs = _runs_by_delivery(scenario)
    october = _findings(scenario.data_dir, runs["d2_2025-10"]["run_id"])
    dup = october.filter(pl.col("journal_id") == DUP_ID)
    assert dup.height == 1
    assert "PAY001" in dup.item(0, "rule_ids").split(",")
    assert f"Beleg {scenario.original}" in dup.item(0, "reasons")
    # the original (delivery 1) is not re-reported by the October run
    assert scenario.original not in october.get_column("journal_id").to_list()


def test_decision_survives_deltas_and_full_reexport(scenario: Scenario) -> None:
    store = scenario.store()
    decided = scenario.decided
    now = store.get_item(decided["item_id"]) or {}
    assert now["status"] == "confirmed"
    assert now["last_decision_id"] == decided["last_decision_id"]
    assert now["journal_id"] == decided["journal_id"]
    assert store.decision_log().height == scenario.decisions_before == 1
    assert store.verify_log().ok
    # the deltas never touched the decided journal (it is not in their deliveries)
    before = scenario.before_reexport
    assert before is not None
    row = before.filter(pl.col("item_id") == decided["item_id"]).row(0, named=True)
    assert row["status"] == "confirmed" and row["changed_since_decision"] is False
    assert row["last_run"] == decided["last_run"]


def test_full_reexport_replaces_keys_and_adds_no_duplicate_items(scenario: Scenario) -> None:
    store = scenario.store()
    before = scenario.before_reexport
    assert before is not None
    after = store.items(ENTITY, include_unflagged=True)
    # one item per journal; every item of the deltas is still the same item (same id)
    assert after.select("entity", "fiscal_year", "journal_id").is_duplicated().sum() == 0
    assert set(before.get_column("item_id").to_list()) <= set(after.get_column("item_id")
                                                              .to_list())
    full = _findings(scenario.data_dir, scenario.full_run)
    assert after.height == len(set(before.get_column("item_id").to_list())
                               | set(full.get_column("item_id").to_list()))
    # the history holds each booking key once (lines replaced, not added)
    history = pl.read_parquet(scenario.data_dir / "history" / ENTITY / "**" / "*.parquet")
    assert history.height == scenario.gl.height
    assert history.select("journal_id", "line_no").is_duplicated().sum() == 0


def test_risk_score_does_not_depend_on_delivery_size(scenario: Scenario) -> None:
    """December scored in a 1-month delta vs in the full re-export: same history, so the same
    score (rule specificity comes from history hit rates, not the delivery's)."""
    runs = _runs_by_delivery(scenario)
    delta = _findings(scenario.data_dir, runs["d4_2025-12"]["run_id"])
    full = _findings(scenario.data_dir, scenario.full_run)
    both = delta.join(full, on="journal_id", suffix="_full").select(
        "journal_id", "risk_score", "risk_score_full",
        (pl.col("risk_score") - pl.col("risk_score_full")).abs().alias("diff"))
    assert both.height >= 0.9 * delta.height
    assert both.get_column("diff").max() <= 0.5, both.sort("diff").tail(5)
    # delivery 1 (9 months, history = 9 months) moves only a little when the year is complete
    d1 = _findings(scenario.data_dir, runs["d1_2025-01-09"]["run_id"]).join(
        full, on="journal_id", suffix="_full").filter(pl.col("rule_ids") == pl.col("rule_ids_full"))
    d1_diff = (d1.get_column("risk_score") - d1.get_column("risk_score_full")).abs()
    assert d1_diff.median() <= 5, d1_diff.describe()


def test_delivery_rates_alone_would_make_the_score_depend_on_size(scenario: Scenario) -> None:
    """The gap this guards against: scoring December's delta without the history rates."""
    import types

    from detect.config import Settings

    runs = _runs_by_delivery(scenario)
    run_dir = scenario.data_dir / "runs" / runs["d4_2025-12"]["run_id"]
    hits = pl.read_parquet(run_dir / "rule_hits.parquet")
    manifest = runs["d4_2025-12"]["manifest"]["rules"]
    ctx = types.SimpleNamespace(run_dir=run_dir, rescore_history=False,
                                settings=Settings(entity=ENTITY))
    bookings = pl.scan_parquet(scenario.data_dir / "history" / ENTITY / "**" / "*.parquet")
    population = manifest["history_population"]
    rates = {k: v / population for k, v in manifest["history_journals"].items()}
    with_history = rank_items(bookings, hits, None, ctx, history_rates=rates,
                              history_journals=population)
    delivery_only = rank_items(bookings, hits, None, ctx)
    both = with_history.join(delivery_only, on="journal_id", suffix="_d")
    diff = (both.get_column("risk_score") - both.get_column("risk_score_d")).abs()
    assert population == scenario.gl.select("Journal_ID").n_unique()
    assert diff.max() > 1.0   # the delta alone would score differently
