"""The vectorised row checks mean exactly what Great Expectations means by the same suite."""

from __future__ import annotations

import json
from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest

from detect.config import Settings
from detect.validation import masks, prepare
from detect.validation.gxrun import ROW, GxRunner
from detect.validation.suites import BUNDLED_DIR, Check, load_suite, master_suite_names


def _messy_frame(n: int = 400, seed: int = 3) -> pl.DataFrame:
    """Booking-like rows with nulls, duplicates and out-of-range values in every checked column."""
    rng = np.random.default_rng(seed)
    start = date(2023, 11, 1)
    days = rng.integers(0, 500, n)
    frame = pl.DataFrame({
        ROW: np.arange(n, dtype=np.int64),
        "entity": rng.choice(["A", "B", None], n, p=[0.6, 0.35, 0.05]).tolist(),
        "fiscal_year": pl.Series(rng.choice([2024, 2023, 1980, None], n, p=[.8, .1, .05, .05]).tolist(),
                                 dtype=pl.Int32),
        "period": pl.Series(rng.choice([1, 3, 12, 13, 17, None], n).tolist(), dtype=pl.Int32),
        "journal_id": rng.integers(1, 60, n).astype(str),
        "line_no": pl.Series(rng.integers(1, 4, n), dtype=pl.Int32),
        "posting_date": [start + timedelta(days=int(d)) if d % 23 else None for d in days],
        "document_date": [date(1985, 1, 1) if d % 31 == 0 else
                          start + timedelta(days=int(d) + (400 if d % 37 == 0 else -3))
                          for d in days],
        "gl_account": rng.choice(["4000", "1800", "9999", None], n,
                                 p=[.45, .45, .05, .05]).tolist(),
        "amount": pl.Series(rng.choice([1.5, -1.5, None], n, p=[.48, .48, .04]).tolist()),
        "currency": rng.choice(["EUR", "USD", "EURO", None], n, p=[.8, .1, .05, .05]).tolist(),
        "ingest_issue": rng.choice([None, "amount: 'x' is not a valid amount"], n,
                                   p=[.97, .03]).tolist(),
        "source_file": ["f.csv"] * n,
        "source_line": np.arange(2, n + 2, dtype=np.int64),
    }).with_columns(pl.col("amount").cast(pl.Decimal(18, 2)))
    return prepare.add_derived(frame, Settings(), set())


@pytest.fixture(scope="module")
def runner() -> GxRunner:
    return GxRunner(None, "mask test")


def test_every_row_check_flags_the_same_rows_as_gx(runner: GxRunner) -> None:
    suite = load_suite("bookings", BUNDLED_DIR)
    frame = _messy_frame()
    params = {"min_document_date": date(1990, 1, 1), "chart_of_accounts": ["4000", "1800"]}
    results = runner.validate(suite, frame, params, batch_rows=10**6, result_format="COMPLETE")
    row_checks = [c for c in suite.checks if masks.row_level(c)]
    assert len(row_checks) == len(suite.checks)  # the booking suite is row-level throughout
    failing_somewhere = 0
    for check, gx_result in zip(suite.checks, results):
        assert gx_result.key == check.key
        ours = frame.filter(masks.fails(check, params, frame.schema).fill_null(False))[ROW]
        assert sorted(ours.to_list()) == sorted(gx_result.rows), check.key
        assert gx_result.unexpected_count == len(ours)
        failing_somewhere += bool(len(ours))
    assert failing_somewhere >= 12  # the messy frame really exercises the checks


def test_pair_ignore_rules_and_strict_bounds() -> None:
    frame = pl.DataFrame({"a": [1, None, 3, None], "b": [2, 2, None, None], "x": [0, 5, 10, None]})
    pair = Check("p", "expect_column_pair_values_a_to_be_greater_than_b",
                 {"column_A": "a", "column_B": "b"}, "critical", "r")
    both = frame.select(masks.fails(pair, {}, frame.schema))[:, 0].to_list()
    assert both == [True, True, True, False]  # GX default: only rows missing both are skipped
    between = Check("b", "expect_column_values_to_be_between",
                    {"column": "x", "min_value": 0, "max_value": {"$PARAMETER": "hi"},
                     "strict_min": True}, "critical", "r")
    assert frame.select(masks.fails(between, {"hi": 5}, frame.schema))[:, 0].to_list() == [
        True, False, True, False]
    table = Check("t", "expect_table_row_count_to_be_between", {"min_value": 1}, "warning", "r")
    assert not masks.row_level(table)


def test_suites_load_and_name_their_checks() -> None:
    suite = load_suite("bookings", BUNDLED_DIR)
    keys = [c.key for c in suite.checks]
    assert len(keys) == len(set(keys)) >= 15
    assert {c.severity for c in suite.checks} == {"critical", "warning"}
    assert [c.key for c in suite.checks if c.requires] == ["account_not_in_chart"]
    assert set(master_suite_names(BUNDLED_DIR)) == {"accounts", "vendors", "users",
                                                    "cost_centers"}
    for name in master_suite_names(BUNDLED_DIR).values():
        assert all(c.severity == "warning" for c in load_suite(name, BUNDLED_DIR).checks)


def test_currency_list_is_iso_4217() -> None:
    raw = json.loads((BUNDLED_DIR / "bookings.json").read_text("utf-8"))
    (currency,) = [e for e in raw["expectations"] if e["meta"]["key"] == "currency_not_iso4217"]
    codes = currency["kwargs"]["value_set"]
    assert {"EUR", "USD", "CHF", "GBP", "JPY"} <= set(codes) and "EURO" not in codes
    pycountry = pytest.importorskip("pycountry")
    assert set(codes) == {c.alpha_3 for c in pycountry.currencies}


def test_uniqueness_ignores_rows_missing_every_key_like_gx(runner: GxRunner) -> None:
    suite = load_suite("bookings", BUNDLED_DIR)
    suite = suite.without({c.key for c in suite.checks if c.key != "duplicate_line"})
    frame = pl.DataFrame({
        ROW: [0, 1, 2, 3, 4, 5],
        "entity": ["A", "A", None, None, "A", None],
        "fiscal_year": pl.Series([2024, 2024, None, None, None, None], dtype=pl.Int32),
        "journal_id": ["1", "1", None, None, "2", None],
        "line_no": pl.Series([1, 1, None, None, 1, 1], dtype=pl.Int32),
    })
    (gx_result,) = runner.validate(suite, frame, {}, batch_rows=100, result_format="COMPLETE")
    ours = frame.filter(masks.fails(suite.checks[0], {}, frame.schema))[ROW].to_list()
    assert sorted(gx_result.rows) == ours == [0, 1]


def test_row_conditions_are_left_to_gx() -> None:
    conditional = Check("c", "expect_column_values_to_not_be_null",
                        {"column": "x", "row_condition": 'y=="a"'}, "critical", "r")
    assert not masks.row_level(conditional)


def test_month_start_days_equal_pl_date_for_every_year_and_month():
    from detect.validation.prepare import month_start_days

    years = pl.DataFrame({"y": list(range(1000, 10000))}, schema={"y": pl.Int32})
    for month in range(1, 13):
        ours = years.select(month_start_days(pl.col("y"), month).cast(pl.Date)).to_series()
        assert ours.equals(years.select(pl.date(pl.col("y"), month, 1)).to_series()), month


def test_number_ranges_of_sorted_ids_equal_the_grouped_ranges():
    import random

    from detect.validation.journals import _number_ranges_grouped, number_ranges

    rng = random.Random(3)
    for _ in range(200):
        n = rng.randint(0, 60)
        nums = [rng.choice([rng.randint(1, 50), rng.randint(1000, 1100), rng.randint(5000, 9000)])
                for _ in range(n)]
        ids = (pl.DataFrame({"fiscal_year": [rng.choice([2023, 2024]) for _ in range(n)],
                             "journal_id": [str(x) for x in nums], "num": nums},
                            schema={"fiscal_year": pl.Int32, "journal_id": pl.String,
                                    "num": pl.Int64})
               .unique().sort("num").sort("fiscal_year", maintain_order=True))
        gap_max = rng.choice([0, 1, 10, 1000])
        assert number_ranges(ids, gap_max).equals(_number_ranges_grouped(ids, gap_max))
        shuffled = ids.sample(fraction=1.0, shuffle=True, seed=1)
        assert number_ranges(shuffled, gap_max).equals(_number_ranges_grouped(shuffled, gap_max))


def test_fiscal_year_bounds_equal_date_arithmetic_for_odd_starts_and_leap_years():
    """``add_derived``'s day-number bounds against the date arithmetic they replaced, for every
    start month, leap and edge years, years outside 1000..9998, closing periods."""
    import dataclasses
    from datetime import date

    from detect.config import Settings, ValidationSettings
    from detect.validation.prepare import add_derived

    years = [None, 999, 1000, 1900, 2000, 2023, 2024, 2100, 9998, 9999, -4]
    frame = pl.DataFrame({"fiscal_year": years * 2, "period": [12] * len(years) + [13] * len(years),
                          "posting_date": [date(2024, 2, 29)] * (2 * len(years)),
                          "document_date": [None] * (2 * len(years))},
                         schema_overrides={"fiscal_year": pl.Int32, "period": pl.Int32,
                                           "document_date": pl.Date})
    for start in range(1, 13):
        for tol, closing in ((0, 0), (3, 30), (400, 1)):
            vs = dataclasses.replace(ValidationSettings(), fiscal_year_tolerance_days=tol,
                                     closing_period_days=closing)
            cfg = Settings(fiscal_year_start_month=start, validation=vs)
            got = add_derived(frame, cfg, set()).select("v_fy_first_day", "v_fy_last_day")
            fy = pl.when(pl.col("fiscal_year").is_between(1000, 9998)).then(pl.col("fiscal_year"))
            extra = pl.when(pl.col("period") >= 13).then(pl.duration(days=closing)) \
                .otherwise(pl.duration(days=0))
            want = frame.select(
                (pl.date(fy, start, 1) - pl.duration(days=tol)).alias("v_fy_first_day"),
                (pl.date(fy + 1, start, 1).dt.offset_by("-1d") + pl.duration(days=tol) + extra)
                .alias("v_fy_last_day"))
            assert got.equals(want), (start, tol, closing)


def test_lower_bound_of_latest_document_date_never_exceeds_offset_by() -> None:
    """The query's cheap ``v_document_date_latest`` (``add_derived(bound=True)``) lies at or below
    the exact one for every day 1996..2032 (leap days included) and several year offsets, so
    its failing rows are a superset of the exact check's."""
    days = pl.date_range(date(1996, 1, 1), date(2032, 12, 31), eager=True)
    frame = pl.DataFrame({"fiscal_year": pl.Series([2000] * days.len(), dtype=pl.Int32),
                          "period": pl.Series([1] * days.len(), dtype=pl.Int32),
                          "posting_date": days, "document_date": days})
    for years in (-2, -1, 0, 1, 2, 4):
        cfg = Settings()
        cfg.validation.document_date_max_years_after_posting = years
        exact = prepare.add_derived(frame, cfg, set())[prepare.LATEST]
        bound = prepare.add_derived(frame, cfg, set(), bound=True)[prepare.LATEST]
        assert (bound <= exact).all(), years
        assert ((exact - bound).dt.total_days() <= 3 * abs(years) + 2).all(), years


def test_null_checks_known_to_pass_from_the_ingests_null_counts() -> None:
    """``rowchecks.can_fail``: the ingest's null counts settle (not-)null checks; a constant
    mask (keys known unique) never fails; everything else is queried."""
    from detect.validation import rowchecks

    suite = load_suite("bookings", BUNDLED_DIR)
    by_key = {c.key: c for c in suite.checks}
    frame = _messy_frame().lazy()
    params = {"min_document_date": date(1990, 1, 1), "chart_of_accounts": ["4000", "1800"]}
    exprs, _ = rowchecks.mask_exprs(frame, suite, params, [], ["entity", "fiscal_year",
                                                               "journal_id", "line_no"])
    nulls = {"entity": 0, "journal_id": 3, "ingest_issue": 10, "currency": 0}
    can = {k for k, e in exprs.items() if rowchecks.can_fail(by_key[k], e, nulls, 10)}
    assert "entity_missing" not in can and "journal_id_missing" in can
    assert "unreadable_value" not in can           # ingest_issue null in all 10 rows
    assert "duplicate_line" not in can             # over the known-unique key
    assert "currency_not_iso4217" in can           # a value check: always queried
    assert "amount_missing" in can                 # no count known
    assert all(rowchecks.can_fail(by_key[k], e, None, 10) for k, e in exprs.items()
               if k != "duplicate_line")
    # every distinct currency known (the validation's currency counts): valid ones settle it
    check, expr = by_key["currency_not_iso4217"], exprs["currency_not_iso4217"]
    assert not rowchecks.can_fail(check, expr, None, 10,
                                  {"currency": pl.Series("currency", ["EUR", "USD"])})
    assert rowchecks.can_fail(check, expr, None, 10,
                              {"currency": pl.Series("currency", ["EUR", "EURO"])})
    assert rowchecks.can_fail(check, expr, None, 10, {"gl_account": pl.Series(["4000"])})


def test_failing_rows_and_sample_equal_masks_over_every_row() -> None:
    """``validate._collect_rows`` (a superset filter, then the masks on the kept rows) finds the
    same counts, quarantined rows and GX sample as the masks computed on every row, also for
    document dates around one year after posting (leap days) and known null counts."""
    from detect import validate
    from detect.validation import rowchecks

    raw = _messy_frame(600).drop(c for c in _messy_frame(1).columns if c.startswith("v_"))
    posting = raw["posting_date"]
    edge = pl.Series([date(2024, 2, 29), date(2025, 2, 28), date(2025, 3, 1), date(2023, 3, 1),
                      date(2024, 3, 1), date(2024, 3, 2)] * 100)
    raw = raw.with_columns(
        pl.when(pl.col(ROW) % 5 == 0).then(pl.lit(date(2024, 2, 29))).otherwise(posting)
        .alias("posting_date"),
        pl.when(pl.col(ROW) % 5 == 0).then(edge).otherwise(pl.col("document_date"))
        .alias("document_date"))
    suite = load_suite("bookings", BUNDLED_DIR)
    params = {"min_document_date": date(1990, 1, 1), "chart_of_accounts": ["4000", "1800"]}
    cfg = Settings()

    def derive(rows, bound):
        return prepare.add_derived(rows, cfg, set(), bound=bound)

    lazy = raw.lazy()
    exprs, flags = rowchecks.mask_exprs(derive(lazy, False), suite, params)
    nulls = dict(zip(raw.columns, raw.null_count().row(0)))
    currencies = {"currency": raw["currency"].drop_nulls().unique()}
    for gx_rows, values in ((0, None), (50, None), (50, currencies)):
        totals, bad, sample = validate._collect_rows(lazy, derive, suite, exprs, flags,
                                                     raw.height, gx_rows, None, nulls, values)
        full = derive(raw, False).with_columns(exprs.values())
        assert totals == rowchecks.flag_counts(full, flags)
        assert totals["document_date_after_posting"] > 0
        quarantining = [flags[c.key] for c in suite.checks if c.quarantines]
        assert bad.equals(full.filter(pl.any_horizontal(quarantining)).sort(ROW))
        pick = validate._sample_pick(raw.height, gx_rows, None)
        columns = [c for c in dict.fromkeys([*suite.columns(), *validate.JOURNAL])]
        expected = full.filter(pick if pick is not None else pl.lit(True)) \
            .select(ROW, *flags.values(), *columns)
        assert sample.equals(expected)
