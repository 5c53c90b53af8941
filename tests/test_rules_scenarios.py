"""On the labelled sample ledger, the rules meant for a scenario catch its journals.

Runs the whole catalog over the generator's canonical bookings (with master data) and reports,
per scenario, the share of labelled journals hit by a rule that lists the scenario. Run with
``-s`` to see the report.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pytest

from detect.config import Settings
from detect.rules import SCENARIOS, load_catalog
from detect.rules.runner import _parquet_source, run_catalog, setup_views

generate = pytest.importorskip("sample_data.generate", reason="sample_data generator not available")


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ledger")
    generate.generate(lines=20_000, seed=2025, out=out, formats=["parquet"])
    return out


def scenario_report(ledger: Path) -> pl.DataFrame:
    con = duckdb.connect()
    source = _parquet_source(ledger / "bookings.parquet")
    masters = {p.stem: _parquet_source(p) for p in (ledger / "master").glob("*.parquet")}
    settings = Settings(state="NW")
    setup_views(con, source, source, masters, settings)
    catalog = load_catalog()
    result = run_catalog(con, settings, catalog, delivery_only=False)
    assert not result.failed and not result.skipped, (result.failed, result.skipped)
    meant = pl.DataFrame([(r.id, s) for r in catalog for s in r.scenarios],
                         schema=["rule_id", "scenario"], orient="row")
    labels = pl.read_csv(ledger / "labels.csv", schema_overrides={"journal_id": pl.String,
                                                                   "entity": pl.String})
    caught = (result.hits.select("entity", "fiscal_year", "journal_id", "rule_id").unique()
              .join(meant, on="rule_id")
              .join(labels, on=["entity", "fiscal_year", "journal_id", "scenario"])
              .group_by("scenario").agg(caught=pl.col("journal_id").n_unique(),
                                        by=pl.col("rule_id").unique().sort().str.join(",")))
    return (labels.group_by("scenario").agg(labelled=pl.len())
            .join(caught, on="scenario", how="left")
            .with_columns(pl.col("caught").fill_null(0))
            .with_columns(share=pl.col("caught") / pl.col("labelled"))
            .sort("scenario"))


@pytest.mark.slow
def test_rules_catch_the_labelled_scenarios(ledger: Path) -> None:
    report = scenario_report(ledger)
    with pl.Config(tbl_rows=40):
        print("\n", report)
    assert set(report["scenario"]) == set(SCENARIOS)
    assert report["share"].min() >= 0.5, report.filter(pl.col("share") < 0.5)
    good = report.filter(pl.col("share") >= 0.9).height
    assert good >= 0.9 * report.height, report.filter(pl.col("share") < 0.9)
    assert report["caught"].sum() / report["labelled"].sum() >= 0.9
