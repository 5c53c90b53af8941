"""Monthly report: figures are checked against the review store and the bookings, not just 'a file exists'."""

from __future__ import annotations

import shutil
import subprocess
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from detect.pipeline import current_run_dir
from detect.report import build_report, collect
from detect.store import ReviewStore

MONTH = "2025-03"


def _month_items(data_dir: Path) -> pl.DataFrame:
    findings = pl.read_parquet(current_run_dir(data_dir) / "findings.parquet")
    return findings.filter(pl.col("posting_date").cast(pl.Date).dt.strftime("%Y-%m") == MONTH)


@pytest.fixture
def decided(demo_data_dir: Path) -> tuple[Path, ReviewStore, dict[str, list[str]]]:
    """The demo run with simulated decisions on items of March."""
    store = ReviewStore.for_data_dir(demo_data_dir)
    items = _month_items(demo_data_dir).sort("rank")
    ids = items["item_id"].to_list()
    assert len(ids) >= 8, "the sample should flag several journals in March"
    groups = {"confirmed": ids[:3], "no_finding": ids[3:6], "clarify": ids[6:7]}
    for status, chosen in groups.items():
        for item in chosen:
            store.record_decision(item, status, f"Prüfung {status}", "pruefer1")
    # a correction: the first 'no finding' is later confirmed after all
    store.record_decision(groups["no_finding"][0], "confirmed", "doch bestätigt", "pruefer2")
    groups["confirmed"].append(groups["no_finding"].pop(0))
    return demo_data_dir, store, groups


def test_figures_agree_with_store_and_bookings(decided) -> None:
    data_dir, store, groups = decided
    data = collect(data_dir, MONTH, store=store)
    month_items = _month_items(data_dir)

    bookings = pl.read_parquet(current_run_dir(data_dir) / "bookings.parquet").filter(
        pl.col("posting_date").dt.strftime("%Y-%m") == MONTH)
    assert data.volume["lines"] == bookings.height
    assert data.volume["journals"] == bookings.select(pl.struct("fiscal_year", "journal_id")
                                                      .n_unique()).item()
    debit = bookings.filter(pl.col("amount") > 0)["amount"].sum()
    assert data.volume["debit"] == pytest.approx(float(debit), abs=0.01)

    assert data.flagged_total == month_items.height
    assert data.status_counts["confirmed"] == len(groups["confirmed"]) == 4
    assert data.status_counts["no_finding"] == len(groups["no_finding"]) == 2
    assert data.status_counts["clarify"] == 1
    assert data.status_counts["open"] == month_items.height - 7
    assert sum(r["count"] for r in data.by_severity) == month_items.height
    # every flagged item counts once per family it was flagged by, at least once overall
    assert sum(r["count"] for r in data.by_family) >= month_items.height

    confirmed = month_items.filter(pl.col("item_id").is_in(groups["confirmed"]))
    assert {r["journal_id"] for r in data.top_confirmed} == set(confirmed["journal_id"])
    amounts = [r["amount"] for r in data.top_confirmed]
    assert amounts == sorted(amounts, key=abs, reverse=True)

    # backlog: open + clarify items of all months up to the report month
    all_items = pl.read_parquet(current_run_dir(data_dir) / "findings.parquet").filter(
        pl.col("posting_date").cast(pl.Date) <= date(2025, 3, 31))
    decided_ids = groups["confirmed"] + groups["no_finding"]
    assert sum(b["count"] for b in data.backlog_by_age) == \
        all_items.filter(~pl.col("item_id").is_in(decided_ids)).height

    march = next(r for r in data.trend if r["month"] == MONTH)
    assert (march["flagged"], march["confirmed"], march["no_finding"]) == \
        (month_items.height, 4, 2)
    assert data.quality["runs"] == 0  # the demo run was made in 2026, not in March 2025

    # precision per rule over decided items: confirmed / decided
    for row in data.rule_precision:
        decided_rule = month_items.filter(
            pl.col("item_id").is_in(decided_ids)
            & pl.col("rule_ids").str.split(",").list.contains(row["rule_id"]))
        assert row["decided"] == decided_rule.height
    assert data.rule_precision == sorted(data.rule_precision,
                                         key=lambda r: (r["precision"], -r["decided"]))


def test_html_is_self_contained_german(decided, tmp_path: Path) -> None:
    data_dir, store, _ = decided
    out = build_report(data_dir, MONTH, output=tmp_path / "r.html", store=store)
    html = out.read_text(encoding="utf-8")
    assert "Monatsbericht" in html and "März 2025" in html
    assert "<svg" in html                      # charts inline
    assert "http://" not in html.replace("http://www.w3.org", "")  # nothing fetched
    data = collect(data_dir, MONTH, store=store)
    lines = f"{data.volume['lines']:,}".replace(",", ".")
    assert lines in html                       # German thousands separator
    assert "pruefer1" not in html              # no user names


def test_english_and_pdf_renders(decided, tmp_path: Path) -> None:
    data_dir, store, _ = decided
    html = build_report(data_dir, MONTH, output=tmp_path / "r.html", store=store, lang="en")
    assert "Monthly booking review summary" in html.read_text(encoding="utf-8")
    pdf = build_report(data_dir, MONTH, output=tmp_path / "r.pdf", store=store)
    assert pdf.read_bytes().startswith(b"%PDF")
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm (poppler-utils) not installed")
    subprocess.run(["pdftoppm", "-png", "-r", "40", "-f", "1", "-l", "1", str(pdf),
                    str(tmp_path / "page")], check=True)
    assert list(tmp_path.glob("page*.png"))


def test_bad_month_is_a_user_error(demo_data_dir: Path) -> None:
    from detect.errors import UserError

    with pytest.raises(UserError, match="2025-03"):
        build_report(demo_data_dir, "March 2025")
