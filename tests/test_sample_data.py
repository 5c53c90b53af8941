"""The sample ledger generator: determinism, balance, realistic normal data, and that every
labelled scenario really has the shape its name promises."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import holidays
import numpy as np
import polars as pl
import pytest
from schwifty import IBAN

from detect.config import Settings
from sample_data import anomalies
from sample_data.workcal import Calendar
from sample_data.generate import DEMO_DIR, DEMO_LABELS, DEMO_LINES, DEMO_SEED, SCENARIOS, \
    generate, main

LINES, SEED = 12_000, 5


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("ledger")
    summary = generate(LINES, SEED, out, ["parquet"])
    book = pl.read_parquet(out / "bookings.parquet")
    labels = pl.read_csv(out / "labels.csv", schema_overrides={"journal_id": pl.String})
    master = {p.stem: pl.read_parquet(p) for p in (out / "master").glob("*.parquet")}
    book = book.join(labels.select("journal_id", "scenario"), on="journal_id", how="left")
    journals = book.group_by("journal_id").agg(
        pl.col("amount").sum().alias("balance"),
        pl.col("amount").filter(pl.col("amount") > 0).sum().alias("total"),
        pl.len().alias("n_lines"),
        *[pl.first(c) for c in ("scenario", "entered_by", "approved_by", "entered_at",
                                "posting_date", "document_date", "source", "reference",
                                "document_type", "reversal_of", "period", "header_description")],
        pl.col("vendor_id").drop_nulls().first(),
        pl.col("bank_account").drop_nulls().first(),
        pl.col("gl_account").alias("accounts"),
    )
    return {"out": out, "summary": summary, "book": book, "labels": labels, "master": master,
            "journals": journals}


def _of(ledger: dict, scenario: str) -> pl.DataFrame:
    j = ledger["journals"].filter(pl.col("scenario") == scenario)
    assert j.height >= 1, f"no journal labelled {scenario}"
    return j


def _normal(ledger: dict) -> pl.DataFrame:
    return ledger["journals"].filter(pl.col("scenario").is_null())


def _people(ledger: dict) -> pl.Series:
    u = ledger["master"]["users"]
    return u.filter(~pl.col("is_service"))["user_id"]


def _limit(ledger: dict) -> dict[str, float]:
    u = ledger["master"]["users"].drop_nulls("approval_limit")
    return dict(zip(u["user_id"], u["approval_limit"].cast(pl.Float64), strict=True))


# --- the whole ledger --------------------------------------------------------------------------

def test_size_schema_and_summary(ledger: dict) -> None:
    book, s = ledger["book"], ledger["summary"]
    assert 0.9 * LINES < book.height < 1.1 * LINES
    assert s["lines"] == book.height
    assert s["journals"] == book["journal_id"].n_unique()
    assert book["amount"].dtype == pl.Decimal(18, 2)
    assert book["fiscal_year"].unique().to_list() == [2025]
    assert book["entity"].unique().to_list() == ["Musterstadt"]
    assert book["posting_date"].min() >= date(2025, 1, 1)
    assert book["posting_date"].max() <= date(2025, 12, 31)
    assert (book["period"] == book["posting_date"].dt.month()).all()
    assert book.filter(pl.col("document_date") > pl.col("posting_date")).height == 0
    assert book.select(pl.struct("journal_id", "line_no").is_unique().all()).item()
    assert float(book.filter(pl.col("amount") > 0)["amount"].sum()) == pytest.approx(s["debit"])


def test_every_journal_balances_except_the_unbalanced_scenario(ledger: dict) -> None:
    j = ledger["journals"]
    off = j.filter(pl.col("balance") != 0)
    assert off["scenario"].unique().to_list() == ["unbalanced_journal"]
    assert off.height == j.filter(pl.col("scenario") == "unbalanced_journal").height


def test_every_scenario_is_labelled_once_per_journal(ledger: dict) -> None:
    labels = ledger["labels"]
    assert set(labels["scenario"]) == set(SCENARIOS) == set(anomalies.SCENARIOS)
    assert len(SCENARIOS) == 28
    assert labels["journal_id"].is_unique().all()
    assert labels.columns == ["entity", "fiscal_year", "journal_id", "scenario"]
    assert set(labels["journal_id"]) <= set(ledger["book"]["journal_id"])


def test_anomaly_share_is_realistic_on_the_demo() -> None:
    labels = pl.read_csv(DEMO_LABELS)
    gl = pl.read_csv(DEMO_DIR / "GL_Detail_20250101_20251231.csv",
                     columns=["Journal_ID"], schema_overrides={"Journal_ID": pl.String})
    share = labels.height / gl["Journal_ID"].n_unique()
    assert 0.005 <= share <= 0.01


def test_people_never_book_on_weekends_holidays_or_at_night_in_normal_data(ledger: dict) -> None:
    hol = list(holidays.country_holidays("DE", subdiv="NW", years=[2024, 2025, 2026]))
    normal = _normal(ledger).filter(pl.col("entered_by").is_in(_people(ledger).implode()))
    assert normal.height > 1000
    for col in ("posting_date", "entered_at"):
        day = pl.col(col).cast(pl.Date)
        assert normal.filter((day.dt.weekday() > 5) | day.is_in(hol)).height == 0, col
    hour = pl.col("entered_at").dt.hour()
    assert normal.filter((hour < 7) | (hour >= 18)).height == 0


def test_confounders_exist_in_normal_data(ledger: dict) -> None:
    """Detection must not be trivial: normal data has the innocent look-alikes."""
    n = _normal(ledger)
    service = n.filter(pl.col("entered_by").str.starts_with("SVC_"))
    # interfaces run at night and on weekends
    assert service.filter(pl.col("entered_at").dt.weekday() > 5).height > 10
    assert service.filter(pl.col("entered_at").dt.hour() < 5).height > 100
    # rent and energy instalments: same vendor, same round amount, every month
    rent = n.filter(pl.col("document_type").is_in(["DA", "DL"]))
    per = rent.group_by("vendor_id").agg(pl.col("total").n_unique(), pl.len())
    assert (per["total"] == 1).all() and (per["len"] == 12).all()
    assert (rent["total"].cast(pl.Float64) % 10 == 0).all()
    # legitimate reversals, manual payments, bank changes, month-end accruals entered later
    assert n.filter(pl.col("reversal_of").is_not_null()).height > 5
    assert n.filter((pl.col("document_type") == "KZ") & (pl.col("source") == "manual")).height > 5
    assert ledger["master"]["vendor_changes"].height > 3
    late = n.filter(pl.col("entered_at").cast(pl.Date) - pl.col("posting_date")
                    > timedelta(days=3))
    assert late.height > 10
    # descriptions with keywords that a naive text rule flags ("Storno", "Barkasse")
    kw = "|".join(Settings().description_keywords)
    assert n.filter(pl.col("header_description").str.to_lowercase().str.contains(kw)).height > 10


def test_four_eyes_and_limits_hold_in_normal_data(ledger: dict) -> None:
    limit = _limit(ledger)
    n = _normal(ledger).filter(pl.col("source") == "manual")
    assert n.filter(pl.col("approved_by") == pl.col("entered_by")).height == 0
    assert n["approved_by"].null_count() == 0
    amounts = n["total"].cast(pl.Float64).to_numpy()
    for who in ("entered_by", "approved_by"):
        lim = np.array([limit.get(u, np.inf) for u in n[who]])
        assert (amounts <= lim).all(), who


def test_invoices_are_paid_later_to_the_iban_on_file(ledger: dict) -> None:
    book = ledger["book"]
    inv = book.filter((pl.col("document_type") == "KR") & (pl.col("gl_account") == "351000")
                      & pl.col("reversal_of").is_null())
    pay = book.filter((pl.col("document_type") == "ZP") & (pl.col("gl_account") == "181000"))
    assert inv.select(pl.struct("vendor_id", "reference").is_unique().all()).item()
    both = inv.join(pay, on=["vendor_id", "reference"], suffix="_pay")
    assert both.height > 0.8 * pay.height
    lag = (both["posting_date_pay"] - both["posting_date"]).dt.total_days()
    assert lag.min() >= 10 and lag.max() <= 45
    assert (both["amount"] == both["amount_pay"]).all()  # both are credits
    vendors = ledger["master"]["vendors"]
    ibans = set(vendors["bank_account"]) | set(ledger["master"]["vendor_changes"]["old_value"])
    normal_pay = pay.join(ledger["labels"], on="journal_id", how="anti")
    assert set(normal_pay["bank_account"]) <= ibans
    for iban in vendors["bank_account"].head(50):
        IBAN(iban)  # raises on a bad checksum
    assert vendors["created_at"].max() <= date(2025, 12, 31)


def test_same_seed_same_bytes_other_seed_other_data(tmp_path: Path) -> None:
    a = generate(2500, 3, tmp_path / "a", ["parquet", "ads", "datev", "sap"])
    generate(2500, 3, tmp_path / "b", ["parquet", "ads", "datev", "sap"])
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*")
                   if p.is_file())
    assert len(files) > 20
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    c = generate(2500, 4, tmp_path / "c", ["ads"])
    assert c["debit"] != a["debit"]


def test_committed_demo_is_what_the_generator_writes(tmp_path: Path) -> None:
    generate(DEMO_LINES, DEMO_SEED, tmp_path, ["ads"])
    committed = sorted(p.name for p in DEMO_DIR.iterdir())
    assert committed == sorted(p.name for p in (tmp_path / "ads").iterdir())
    for name in committed:
        assert (DEMO_DIR / name).read_bytes() == (tmp_path / "ads" / name).read_bytes(), name
    assert DEMO_LABELS.read_bytes() == (tmp_path / "labels.csv").read_bytes()
    size = sum(p.stat().st_size for p in DEMO_DIR.iterdir()) + DEMO_LABELS.stat().st_size
    assert size < 5_000_000


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--lines", "1500", "--seed", "9", "--out", str(tmp_path),
                 "--formats", "parquet"]) == 0
    assert "lines" in capsys.readouterr().out
    assert (tmp_path / "bookings.parquet").exists() and (tmp_path / "labels.csv").exists()
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path), "--formats", "excel"])
    assert exc.value.code == 2
    assert "unknown format" in capsys.readouterr().err


# --- each scenario has its shape ----------------------------------------------------------------

def _payments(ledger: dict) -> pl.DataFrame:
    return ledger["journals"].filter(pl.col("document_type").is_in(["ZP", "KZ"])
                                     & pl.col("bank_account").is_not_null())


def test_duplicate_payment_repeats_vendor_reference_amount(ledger: dict) -> None:
    pays = _payments(ledger)
    for row in _of(ledger, "duplicate_payment").iter_rows(named=True):
        earlier = pays.filter((pl.col("vendor_id") == row["vendor_id"])
                              & (pl.col("reference") == row["reference"])
                              & (pl.col("total") == row["total"])
                              & (pl.col("posting_date") < row["posting_date"]))
        assert earlier.height == 1
        assert (row["posting_date"] - earlier["posting_date"][0]).days <= 14


def test_near_duplicate_payment_same_vendor_amount_other_reference(ledger: dict) -> None:
    pays = _payments(ledger)
    for row in _of(ledger, "near_duplicate_payment").iter_rows(named=True):
        earlier = pays.filter((pl.col("vendor_id") == row["vendor_id"])
                              & (pl.col("total") == row["total"])
                              & (pl.col("reference") != row["reference"])
                              & (pl.col("posting_date") <= row["posting_date"]))
        # the original: its reference is contained in the altered one, paid days before
        orig = earlier.filter(pl.lit(row["reference"]).str.contains(pl.col("reference"),
                                                                     literal=True))
        assert orig.height >= 1
        assert (row["posting_date"] - orig["posting_date"].max()).days <= 14


def test_split_invoice_parts_stay_below_a_threshold_together_above(ledger: dict) -> None:
    thresholds = Settings().thresholds.procurement
    split = _of(ledger, "split_invoice").sort("posting_date")
    for vendor, parts in split.group_by("vendor_id"):
        assert 2 <= parts.height <= 3, vendor
        amounts = parts["total"].cast(pl.Float64)
        assert any(amounts.max() < t < amounts.sum() for t in thresholds)
        assert (parts["posting_date"].max() - parts["posting_date"].min()).days <= 7
        assert parts["entered_by"].n_unique() == 1
        assert parts["reference"].n_unique() == parts.height


def test_time_scenarios(ledger: dict) -> None:
    hol = set(holidays.country_holidays("DE", subdiv="NW", years=2025))
    people = set(_people(ledger))
    for row in _of(ledger, "weekend_posting").iter_rows(named=True):
        assert row["posting_date"].isoweekday() >= 6 and row["entered_by"] in people
    for row in _of(ledger, "holiday_posting").iter_rows(named=True):
        assert row["posting_date"] in hol and row["posting_date"].isoweekday() <= 5
    for row in _of(ledger, "night_posting").iter_rows(named=True):
        assert row["entered_at"].hour >= 22 or row["entered_at"].hour < 5
        assert row["entered_by"] in people
    for row in _of(ledger, "backdated").iter_rows(named=True):
        assert (row["entered_at"].date() - row["posting_date"]).days >= 20
    for row in _of(ledger, "forward_posting").iter_rows(named=True):
        assert (row["posting_date"] - row["entered_at"].date()).days >= 20
    cal = Calendar(2025, "NW")
    for row in _of(ledger, "closed_period_posting").iter_rows(named=True):
        close = cal.period_close(row["posting_date"].month).astype(date)
        assert row["entered_at"].date() > close


def test_approval_scenarios(ledger: dict) -> None:
    limit = _limit(ledger)
    for row in _of(ledger, "self_approval").iter_rows(named=True):
        assert row["approved_by"] == row["entered_by"]
    for row in _of(ledger, "above_approval_limit").iter_rows(named=True):
        assert float(row["total"]) > limit[row["entered_by"]]
    for row in _of(ledger, "just_below_approval_limit").iter_rows(named=True):
        assert 0.95 * limit[row["entered_by"]] <= float(row["total"]) < limit[row["entered_by"]]
    thresholds = Settings().thresholds.procurement
    for row in _of(ledger, "just_below_procurement_threshold").iter_rows(named=True):
        assert any(0.97 * t <= float(row["total"]) < t for t in thresholds)


def test_vendor_scenarios(ledger: dict) -> None:
    vendors = ledger["master"]["vendors"]
    created = dict(zip(vendors["vendor_id"], vendors["created_at"], strict=True))
    for row in _of(ledger, "round_amount_new_vendor").iter_rows(named=True):
        assert float(row["total"]) % 500 == 0
        assert 0 <= (row["posting_date"] - created[row["vendor_id"]]).days <= 30
    for row in _of(ledger, "new_vendor_payment").iter_rows(named=True):
        assert row["bank_account"] is not None
        assert 0 <= (row["posting_date"] - created[row["vendor_id"]]).days <= 15
    book = ledger["book"]
    changes = ledger["master"]["vendor_changes"]
    known = set(vendors["bank_account"]) | set(changes["old_value"]) | set(changes["new_value"])
    for row in _of(ledger, "one_off_bank_account").iter_rows(named=True):
        assert row["bank_account"] not in known
        assert book.filter(pl.col("bank_account") == row["bank_account"])["journal_id"] \
            .n_unique() == 1
    for row in _of(ledger, "vendor_bank_change").iter_rows(named=True):
        log = changes.filter((pl.col("vendor_id") == row["vendor_id"])
                             & (pl.col("new_value") == row["bank_account"]))
        assert log.height == 1
        assert 0 <= (row["posting_date"] - log["changed_at"][0].date()).days <= 10
        back = changes.filter((pl.col("vendor_id") == row["vendor_id"])
                              & (pl.col("old_value") == row["bank_account"]))
        assert back.height == 1 and back["changed_at"][0] > log["changed_at"][0]


def test_account_and_amount_scenarios(ledger: dict) -> None:
    book = ledger["book"]
    normal = book.filter(pl.col("scenario").is_null())
    median = normal.filter(pl.col("amount") > 0).group_by("gl_account").agg(
        pl.col("amount").cast(pl.Float64).median().alias("median"))
    med = dict(zip(median["gl_account"], median["median"], strict=True))
    for row in _of(ledger, "amount_outlier").iter_rows(named=True):
        debit = book.filter((pl.col("journal_id") == row["journal_id"]) & (pl.col("amount") > 0))
        assert float(debit["amount"][0]) > 10 * med[debit["gl_account"][0]]
    pairs = normal.group_by("journal_id").agg(pl.col("gl_account").sort().alias("p")) \
        .with_columns(pl.col("p").list.join("|"))
    seen = set(pairs["p"])
    for row in _of(ledger, "rare_account_pair").iter_rows(named=True):
        assert "|".join(sorted(row["accounts"])) not in seen
    for row in _of(ledger, "manual_cash").iter_rows(named=True):
        assert "181100" in row["accounts"] and row["source"] == "manual"
        assert float(row["total"]) > 1000
    normal_cash = normal.filter(pl.col("gl_account") == "181100")
    assert normal_cash.filter(pl.col("amount").abs() > 1000)["entered_by"].str.starts_with(
        "SVC_").sum() == 0
    for row in _of(ledger, "ends_in_nines").iter_rows(named=True):
        assert f"{float(row['total']):.2f}".replace(".", "").rstrip("0").endswith("99")
    for row in _of(ledger, "unbalanced_journal").iter_rows(named=True):
        assert row["balance"] != 0


def test_user_scenarios(ledger: dict) -> None:
    users = ledger["master"]["users"]
    dept = dict(zip(users["user_id"], users["department"], strict=True))
    service = set(users.filter(pl.col("is_service"))["user_id"])
    book = ledger["book"]
    counts = book.group_by("entered_by").agg(pl.col("journal_id").n_unique())
    n_of = dict(zip(counts["entered_by"], counts["journal_id"], strict=True))
    for row in _of(ledger, "rare_user").iter_rows(named=True):
        assert n_of[row["entered_by"]] <= 2
    for row in _of(ledger, "service_user_manual").iter_rows(named=True):
        assert row["entered_by"] in service and row["source"] == "manual"
    normal = book.filter(pl.col("scenario").is_null())
    usual = normal.with_columns(d=pl.col("entered_by").replace_strict(dept, default=None)) \
        .select("d", "gl_account").unique()
    usual = set(zip(usual["d"], usual["gl_account"], strict=True))
    for row in _of(ledger, "outside_usual_accounts").iter_rows(named=True):
        expense = [a for a in row["accounts"] if a[0] in "05" and a not in ("351000", "352000")]
        assert expense and all((dept[row["entered_by"]], a) not in usual for a in expense)
    kw = Settings().description_keywords
    for row in _of(ledger, "suspicious_description").iter_rows(named=True):
        assert any(k in row["header_description"].lower() for k in kw)


def test_repeated_same_amount_and_late_reversals(ledger: dict) -> None:
    rep = _of(ledger, "repeated_same_amount")
    per = rep.group_by("entered_by", "total").agg(pl.len(), pl.col("vendor_id").n_unique())
    assert (per["len"] >= 3).all()
    cal = Calendar(2025, "NW")
    j = ledger["journals"]
    assert j["reversal_of"].drop_nulls().is_unique().all()  # nothing is reversed twice
    for row in _of(ledger, "reversal_after_period_end").iter_rows(named=True):
        orig = j.filter(pl.col("journal_id") == row["reversal_of"])
        assert orig.height == 1 and orig["scenario"][0] is None
        assert orig["total"][0] == row["total"]
        close = cal.period_close(orig["posting_date"][0].month).astype(date)
        assert row["posting_date"] > close


def test_datev_batches_written_in_slices_are_identical(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from sample_data.writers import datev

    generate(1500, 8, tmp_path / "whole", ["datev"])
    monkeypatch.setattr(datev, "SLICE_JOURNALS", 37)
    generate(1500, 8, tmp_path / "sliced", ["datev"])
    files = sorted((tmp_path / "whole" / "datev").iterdir())
    assert len(files) == 14
    for f in files:
        assert f.read_bytes() == (tmp_path / "sliced" / "datev" / f.name).read_bytes(), f.name
