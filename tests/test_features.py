"""Per-line features: values on small generated ledgers (also provides ``tiny_ledger``)."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from detect.config import Settings
from detect.features import FEATURE_NAMES, active_features, build_features
from detect.schema import BOOKING_SCHEMA


def tiny_ledger(n: int = 1500, seed: int = 1) -> pl.DataFrame:
    """n two-line journals: 8 users each on 3 expense accounts, weekdays 8-17h, vs payables."""
    rng = np.random.default_rng(seed)
    accounts = np.array([f"5{i:05d}" for i in range(12)])
    mu = np.linspace(4.0, 8.0, 12)
    user = rng.integers(0, 8, n)
    acct = (user * 3 + rng.integers(0, 3, n)) % 12
    amount = np.round(np.exp(mu[acct] + rng.normal(0, 0.3, n)), 2)
    workdays = [d for d in range(364) if (date(2025, 1, 1) + timedelta(d)).weekday() < 5
                and (date(2025, 1, 1) + timedelta(d)) not in
                {date(2025, 1, 1), date(2025, 4, 18), date(2025, 4, 21), date(2025, 5, 1),
                 date(2025, 5, 29), date(2025, 6, 9), date(2025, 6, 19), date(2025, 10, 3),
                 date(2025, 11, 1), date(2025, 12, 25), date(2025, 12, 26)}]
    day = rng.choice(workdays, n)
    entered = [datetime(2025, 1, 1) + timedelta(days=int(d), hours=float(h))
               for d, h in zip(day, rng.uniform(8, 17, n))]
    jid = [f"J{i:05d}" for i in range(n)]
    vendor = rng.integers(0, 30, n)
    frame = pl.DataFrame({
        "journal_id": np.repeat(jid, 2),
        "line_no": np.tile([1, 2], n),
        "gl_account": np.stack([accounts[acct], np.full(n, "160000")], 1).ravel(),
        "amount": np.stack([amount, -amount], 1).ravel(),
        "entered_at": np.repeat(np.array(entered, dtype="datetime64[us]"), 2),
        "entered_by": np.repeat(np.char.add("USER", user.astype(str)), 2),
        "vendor_id": np.repeat(np.char.add("V", vendor.astype(str)), 2),
    }).with_columns(
        pl.lit("Testdorf").alias("entity"), pl.lit(2025).alias("fiscal_year"),
        pl.col("entered_at").dt.date().alias("posting_date"),
        (pl.col("entered_at").dt.date() - pl.duration(days=3)).alias("document_date"),
        pl.lit("t.csv").alias("source_file"), pl.int_range(pl.len()).alias("source_line"))
    return frame.select([(pl.col(c) if c in frame.columns else pl.lit(None)).cast(t).alias(c)
                         for c, t in BOOKING_SCHEMA.items()])


def set_line(frame: pl.DataFrame, journal_id: str, line_no: int | None,
             **values: object) -> pl.DataFrame:
    """Overwrite columns of one line (or all lines of a journal when line_no is None)."""
    hit = pl.col("journal_id") == journal_id
    if line_no is not None:
        hit = hit & (pl.col("line_no") == line_no)
    return frame.with_columns([pl.when(hit).then(pl.lit(v)).otherwise(pl.col(k))
                               .cast(frame.schema[k]).alias(k) for k, v in values.items()])


def _row(ff: pl.DataFrame, jid: str, line: int) -> dict:
    return ff.filter((pl.col("journal_id") == jid) & (pl.col("line_no") == line)).row(0, named=True)


@pytest.fixture(scope="module")
def ledger() -> pl.DataFrame:
    return tiny_ledger(600)


def test_feature_values_on_manipulated_lines(ledger: pl.DataFrame) -> None:
    base_amount = float(ledger.filter((pl.col("journal_id") == "J00010") & (pl.col("line_no") == 1))
                        .get_column("amount")[0])
    f = set_line(ledger, "J00010", 1, amount=round(base_amount * 20, 2))
    f = set_line(f, "J00011", None, entered_at=datetime(2025, 3, 4, 3, 0))
    f = set_line(f, "J00012", 1, amount=5000.00)
    f = set_line(f, "J00013", 1, amount=4999.00)
    f = set_line(f, "J00014", None, entered_at=datetime(2025, 3, 8, 10, 0),   # a Saturday
                 posting_date=date(2025, 3, 8))
    f = set_line(f, "J00015", None, entered_by="NEWBIE")
    ff = build_features(f.lazy(), Settings()).frame
    assert ff.height == f.height
    assert ff.columns[:4] == ["entity", "fiscal_year", "journal_id", "line_no"]
    r = _row(ff, "J00010", 1)
    assert r["amount_z_account"] > 5                    # 20x = +1.3 in log10 units
    # the largest amount on the account: above all other lines of it
    assert r["amount_pct_account"] == pytest.approx((r["account_lines"] - 1) / r["account_lines"])
    assert _row(ff, "J00011", 1)["off_hours"] == pytest.approx(3.0)
    assert _row(ff, "J00011", 1)["entry_time"] == "03:00"
    assert _row(ff, "J00012", 1)["round_zeros"] == 5   # 500000 cents
    assert _row(ff, "J00013", 1)["trailing_nines"] == 3
    assert _row(ff, "J00014", 1)["non_workday"] == 1.0
    assert _row(ff, "J00020", 1)["non_workday"] == 0.0
    newbie = _row(ff, "J00015", 1)
    assert newbie["ua_other"] == 0 and newbie["user_lines"] == 2
    assert newbie["user_rarity"] == pytest.approx(-np.log10(2 / f.height))
    # the contra account of an expense line is payables, and vice versa
    assert _row(ff, "J00010", 1)["contra_account"] == "160000"
    assert _row(ff, "J00010", 2)["contra_account"] == _row(ff, "J00010", 1)["gl_account"]
    assert _row(ff, "J00010", 1)["doc_post"] == 3


def test_missing_columns_give_constant_features_that_are_dropped(ledger: pl.DataFrame) -> None:
    f = ledger.with_columns(pl.lit(None, pl.Datetime("us")).alias("entered_at"),
                            pl.lit(None, pl.String).alias("vendor_id"),
                            pl.lit(None, pl.Date).alias("document_date"))
    ff = build_features(f.lazy(), Settings())
    assert any("entered_at" in n and "vendor_id" in n for n in ff.notes)
    used, dropped = active_features(ff.frame)
    assert {"off_hours", "entry_post_days", "doc_post_days", "vendor_new", "bank_rarity",
            "vendor_account_rarity", "user_day_z"} <= set(dropped)
    assert "amount_z_account" in used and set(used) | set(dropped) == set(FEATURE_NAMES)
    assert ff.frame.select(FEATURE_NAMES).null_count().sum_horizontal().item() == 0


def test_features_are_deterministic_whatever_the_input_order(ledger: pl.DataFrame) -> None:
    a = build_features(ledger.lazy(), Settings()).frame
    b = build_features(ledger.reverse().lazy(), Settings()).frame
    assert a.equals(b)


def test_feature_frame_knows_where_its_lines_were_read(ledger: pl.DataFrame) -> None:
    """``FeatureFrame.order``: row i of the (key-sorted) frame is line ``order[i]`` of the
    input, so the model stage can compare a delivery in the input's order with the frame."""
    from detect.features import KEY

    keys = ledger.select(KEY).with_columns(pl.col("fiscal_year").cast(pl.Int32),
                                           pl.col("line_no").cast(pl.Int32))
    sorted_ff = build_features(ledger.sort(KEY).lazy(), Settings())
    assert sorted_ff.order is None
    shuffled = ledger.sample(fraction=1.0, shuffle=True, seed=3)
    ff = build_features(shuffled.lazy(), Settings())
    assert ff.order is not None and sorted(ff.order.tolist()) == list(range(ledger.height))
    assert shuffled.select(KEY).with_columns(
        pl.col("fiscal_year").cast(pl.Int32), pl.col("line_no").cast(pl.Int32)
    )[ff.order].equals(ff.frame.select(KEY))
    assert keys.sort(KEY).equals(ff.frame.select(KEY))


def test_vendor_master_creation_date_sets_the_vendor_age() -> None:
    f = tiny_ledger(300)
    first = f.filter(pl.col("vendor_id") == "V1")["posting_date"].min()
    vendors = pl.DataFrame({"vendor_id": ["V1", "V1", None, "V_UNUSED"],
                            "created_at": [first - timedelta(days=10), first, first, first]})
    frame = build_features(f.lazy(), Settings(), vendors).frame
    v1 = frame.filter((pl.col("vendor_j") == "V1") & (pl.col("day") == first))
    assert v1.height > 0 and v1["vendor_age_days"].unique().to_list() == [10]
    assert v1["vendor_new"].unique().to_list() == [pytest.approx(1 - 10 / 90)]
    # a vendor without a master entry, first seen at the start of the history: age unknown
    assert frame.filter(pl.col("vendor_j") == "V2")["vendor_age_days"].null_count() > 0


def test_vendor_first_seen_late_counts_from_its_first_line() -> None:
    """Without master data a vendor first booked 90 days or more after the history starts is
    new from its first line (age 0 there); one seen earlier has no age; a line without
    posting date has none either."""
    f = tiny_ledger(600)
    late = f.with_columns(pl.when(pl.col("vendor_id") == "V5")
                          .then(pl.col("posting_date") + pl.duration(days=400))
                          .otherwise(pl.col("posting_date")).alias("posting_date"))
    late = set_line(late, "J00007", None, posting_date=None)
    frame = build_features(late.lazy(), Settings()).frame
    v5 = frame.filter(pl.col("vendor_j") == "V5").sort("day")
    first = late.filter(pl.col("vendor_id") == "V5")["posting_date"].min()
    assert v5["vendor_age_days"].null_count() == 0 and v5["vendor_age_days"].min() == 0
    posted = v5.select(pl.col("day") + pl.duration(days=pl.col("entry_post")))  # no posting
    days = posted.to_series() - first                                    # date in the frame
    assert (v5["vendor_age_days"].to_numpy() == days.dt.total_days().to_numpy()).all()
    assert frame.filter(pl.col("vendor_j") == "V1")["vendor_age_days"].null_count() > 0
    assert frame.filter(pl.col("journal_id") == "J00007")["vendor_age_days"].is_null().all()


def test_lines_without_user_or_vendor_are_counted_as_their_own_group(ledger: pl.DataFrame) -> None:
    """The per-group tables keep null keys as one group (as a window expression did): lines
    without a user share the counts and the median of the other user-less lines."""
    blank = ledger.with_columns(
        pl.when(pl.col("journal_id") < "J00010").then(None).otherwise(pl.col("entered_by"))
        .alias("entered_by"),
        pl.when(pl.col("journal_id") < "J00004").then(None).otherwise(pl.col("vendor_id"))
        .alias("vendor_id"))
    ff = build_features(blank.lazy(), Settings(entity="Testdorf")).frame
    no_user = ff.filter(pl.col("entered_by").is_null())
    assert no_user.height == 20
    assert no_user.get_column("user_lines").unique().to_list() == [20]
    assert no_user.get_column("user_rarity").unique().to_list() == [0.0]   # null user: no rarity
    assert no_user.get_column("user_day_z").unique().to_list() == [0.0]
    no_vendor = ff.filter(pl.col("vendor_j").is_null())
    assert no_vendor.height == 8
    assert no_vendor.get_column("vendor_account_rarity").unique().to_list() == [0.0]
    user0 = ff.filter(pl.col("entered_by") == "USER0")
    expected = blank.filter(pl.col("entered_by") == "USER0").height
    assert user0.get_column("user_lines").unique().to_list() == [expected]


def test_amount_percentiles_equal_the_ranks_over_all_lines(ledger: pl.DataFrame) -> None:
    """``percentiles=False`` leaves the two rank columns out; ``amount_percentiles`` gives the
    same values for any subset of lines (ties and a null account included)."""
    from detect.features import amount_percentiles

    amount = pl.col("amount").cast(pl.Float64)
    f = ledger.with_columns(pl.when(pl.col("line_no") == 2).then((amount / 100).round(0) * 100)
                            .otherwise(amount).alias("amount"))  # many ties
    f = f.with_columns(pl.when(pl.col("journal_id") == "J00007").then(None)
                       .otherwise(pl.col("gl_account")).alias("gl_account"))
    full = build_features(f.lazy(), Settings()).frame
    lean = build_features(f.lazy(), Settings(), percentiles=False).frame
    assert "amount_pct_all" not in lean.columns
    rows = np.r_[np.arange(0, lean.height, 7), np.flatnonzero(
        lean.get_column("journal_id").to_numpy() == "J00007")]
    got = amount_percentiles(lean, rows)
    want = full[rows].select("amount_pct_account", "amount_pct_all")
    assert got.equals(want)
    # the frame's sorted amounts are kept for its next call (the worker's second pass) ...
    import detect.features as features

    assert features._amount_cache is not None and features._amount_cache[0]() is lean
    assert amount_percentiles(lean, rows[::-1]).equals(want.reverse())
    # ... and not used for another frame, nor kept once the frame is gone
    other = lean.with_columns(pl.col("amount_f") * 2)
    assert amount_percentiles(other, rows).equals(want)  # doubling keeps every rank
    assert features._amount_cache[0]() is other
    del other
    import gc

    gc.collect()
    assert features._amount_cache is None


def test_key_order_uses_journal_runs_and_falls_back_to_the_line_sort(ledger: pl.DataFrame) -> None:
    from detect.features import KEY, _key_order

    keys = ledger.select(KEY).with_columns(pl.col("fiscal_year").cast(pl.Int32),
                                           pl.col("line_no").cast(pl.Int32))
    by_journal = keys.with_columns(pl.col("journal_id").rank("dense").alias("_r")) \
        .with_columns(((pl.col("_r") * 7919) % keys.height).alias("_s")) \
        .sort("_s", "line_no").drop("_r", "_s")               # journals shuffled, lines in order
    split = pl.concat([keys.slice(1, 50), keys.slice(0, 1), keys.slice(51, 9)])  # a split journal
    two_years = by_journal.with_columns(  # a varying key column before the journal id
        pl.when(pl.col("journal_id") < "J00300").then(2026).otherwise(2025)
        .cast(pl.Int32).alias("fiscal_year"))
    for frame in (by_journal, split, keys.reverse(), keys, two_years):
        want = frame.select(pl.arg_sort_by(KEY)).to_series().to_numpy()
        order, journal = _key_order(frame)
        np.testing.assert_array_equal(np.arange(frame.height) if order is None else order, want)
        if journal is not None:  # the journal number of each sorted line: its run, counted
            runs = frame[want].select(pl.any_horizontal(
                pl.col(c).ne_missing(pl.col(c).shift()) for c in KEY[:3]).cum_sum())
            np.testing.assert_array_equal(journal, runs.to_series().to_numpy())
    assert _key_order(keys)[0] is None  # already sorted: no gather


def test_trailing_digits_as_the_amount_is_written() -> None:
    """The numeric count equals counting in the amount's digits as written (euros, then the
    two cent digits unless they are 00)."""
    from detect.features import _amount_digits

    rng = np.random.default_rng(5)
    cents = np.r_[[0, 5, 100, 499900, 499999, 99, 1000000000, 9990, 123456789999, 909, 199,
                   9999, 999999999999, 90, 10, 1099, 100000000000],
                  rng.integers(0, 10**7, 2000),                    # and random ones, among
                  rng.integers(0, 10**5, 500) * 100,               # them whole euros,
                  rng.integers(0, 10**5, 500) * 100 + 99,          # ... ,99
                  rng.integers(1, 10**4, 500) * 10**rng.integers(0, 9, 500)]  # and round ones
    got = _amount_digits(cents)
    written = [str(c // 100) + (f"{c % 100:02d}" if c % 100 else "") for c in cents]
    assert got["trailing_nines"].to_list() == [len(w) - len(w.rstrip("9")) for w in written]
    zeros = [min(len(str(c)) - len(str(c).rstrip("0")), 8) if c else 0 for c in cents]
    assert got["round_zeros"].to_list() == zeros


def test_off_hours_per_minute_equal_the_expression_per_line(ledger: pl.DataFrame) -> None:
    """``off_hours`` comes from a table over the minutes of the day the lines use: equal to
    the hours outside office hours of each line's own stamp; a line without stamp: 0."""
    from detect.config import OfficeHours

    settings = Settings(office_hours=OfficeHours(start_hour=7, end_hour=18))
    stamps = [datetime(2025, 3, 4, h, m) for h, m in
              [(0, 0), (3, 12), (6, 59), (7, 0), (12, 30), (18, 0), (18, 1), (23, 59)]]
    f = ledger
    for i, stamp in enumerate(stamps):
        f = set_line(f, f"J{100 + i:05d}", None, entered_at=stamp)
    f = set_line(f, "J00200", None, entered_at=None)
    frame = build_features(f.lazy(), settings).frame
    hours = frame.select(pl.col("entry_time").str.slice(0, 2).cast(pl.Float64)
                         + pl.col("entry_time").str.slice(3, 2).cast(pl.Float64) / 60.0)
    outside = np.maximum.reduce([7.0 - hours.to_series().to_numpy(),
                                 hours.to_series().to_numpy() - 18.0,
                                 np.zeros(frame.height)])
    want = np.round(np.nan_to_num(outside) * (1.0 - frame["user_off_share"].to_numpy()), 1)
    np.testing.assert_allclose(frame["off_hours"].to_numpy(), want, atol=1e-6)
    got = {j: frame.filter(pl.col("journal_id") == j)["off_hours"][0]
           for j in ("J00100", "J00101", "J00103", "J00107", "J00200")}
    assert got["J00101"] > 3.5 and got["J00103"] == 0 and got["J00200"] == 0
    assert got["J00100"] > got["J00101"] > 0 and got["J00107"] > 5


@pytest.mark.parametrize("longest", [33, 34])  # row pairs up to 32 back / the hash fallback
def test_distinct_journals_per_group_equal_a_group_by(longest: int) -> None:
    """``Codes.journals`` counts each (journal, group) once wherever in the journal its lines
    are, null as a group of its own, for short journals and with a long one."""
    from detect.features import Codes

    rng = np.random.default_rng(longest)
    sizes = np.r_[rng.integers(1, 9, 400), longest]
    rng.shuffle(sizes)
    n = int(sizes.sum())
    df = pl.DataFrame({"_jk": np.repeat(np.arange(1, len(sizes) + 1), sizes),
                       "g": rng.integers(0, 5, n), "h": rng.integers(0, 3, n)}).with_columns(
        pl.col("_jk").cast(pl.UInt32),
        pl.when(pl.col("g") == 4).then(None).otherwise(pl.col("g").cast(pl.String)).alias("g"))
    for cols in (["g"], ["g", "h"]):
        want = df.join(df.group_by(cols).agg(pl.col("_jk").n_unique().alias("want")), on=cols,
                       how="left", nulls_equal=True, maintain_order="left").get_column("want")
        np.testing.assert_array_equal(Codes(df).journals(*cols), want.to_numpy())
    # a column that is the same on all lines of a journal (the journal's vendor): its pairs
    # with "g" are counted from the first lines of (journal, g), found once for both counts
    df = df.with_columns((pl.col("_jk") % 7).alias("v"))
    want = df.join(df.group_by("v", "g").agg(pl.col("_jk").n_unique().alias("want")),
                   on=["v", "g"], how="left", nulls_equal=True, maintain_order="left")
    codes = Codes(df)
    codes.journals("g")
    np.testing.assert_array_equal(codes.journals("v", "g", same_in_journal=("v",)),
                                  want.get_column("want").to_numpy())
    assert list(codes._firsts) == [("g",)]  # no scan of the journals for ("v", "g")


@pytest.mark.parametrize("journals", [300, 3000])  # 3,000^2 pairs: counted by a hash
def test_journal_columns_counted_on_first_lines_equal_a_group_by(journals: int,
                                                                 monkeypatch) -> None:
    """``Codes.journals(..., per_journal=True)``: columns of the journal (vendor, bank account)
    counted once per journal, with and without ``where``; a narrow combination by bincount,
    a wide one (more possible pairs than 4x the journals and 1M) by a hash of the codes."""
    from detect.features import Codes

    rng = np.random.default_rng(journals)
    sizes = rng.integers(1, 4, journals)
    jk = np.repeat(np.arange(1, journals + 1), sizes)
    df = pl.DataFrame({"_jk": jk.astype(np.uint32), "v": np.repeat(np.arange(journals), sizes),
                       "b": np.repeat(rng.permutation(journals) // 2, sizes),
                       "w": np.repeat(rng.random(journals) < 0.7, sizes)})
    ranks = []
    monkeypatch.setattr(pl.Series, "rank", lambda *a, **k: ranks.append(1) or 1 / 0)
    heads = df.unique("_jk", keep="first")
    for where in (None, "w"):
        counted = heads if where is None else heads.filter(pl.col(where))
        want = df.join(counted.group_by("v", "b").agg(pl.len().alias("want")),
                       on=["v", "b"], how="left").get_column("want").fill_null(0)
        got = Codes(df).journals("v", "b", per_journal=True,
                                 where=None if where is None else df["w"].to_numpy())
        np.testing.assert_array_equal(got, want.to_numpy())
    assert not ranks  # no dense renumbering (a sort) of the wide combination


@pytest.mark.parametrize("longest", [7, 40])  # row pairs / run maxima for a long journal
def test_journal_picks_take_the_first_largest_line(longest: int) -> None:
    """``_Journals.pick``: per journal the row of the largest |amount| among the ``ok`` lines,
    the first on ties, -1 without any; the same by row pairs (short journals) and by run
    maxima (a journal longer than ``MAX_PAIR_DISTANCE + 1`` lines)."""
    from detect.features import _Journals

    rng = np.random.default_rng(longest)
    sizes = np.r_[rng.integers(1, 8, 3000), longest]
    rng.shuffle(sizes)
    n = int(sizes.sum())
    jk = np.repeat(np.arange(1, len(sizes) + 1), sizes)
    amount = rng.choice([0.0, 1.0, 2.0, 2.5, -1.0, -2.0, -2.5, 7.0], n)
    runs = _Journals(pl.DataFrame({"_jk": jk.astype(np.uint32), "amount_f": amount}))
    assert (runs.pairs is None) == (longest > _Journals.MAX_PAIR_DISTANCE + 1)
    for ok in (amount > 0, amount < 0, rng.random(n) < 0.3, np.zeros(n, dtype=bool)):
        frame = pl.DataFrame({"j": jk, "row": np.arange(n), "size": np.abs(amount), "ok": ok})
        best = frame.filter("ok").sort("j", "size", "row", descending=[False, True, False]) \
            .unique("j", keep="first").select("j", pl.col("row").alias("want"))
        want = frame.join(best, on="j", how="left", maintain_order="left") \
            .get_column("want").fill_null(-1).to_numpy()
        np.testing.assert_array_equal(runs.pick(ok), want)


def test_final_select_falls_back_when_the_stream_reorders(ledger: pl.DataFrame,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The features are selected on the streaming engine (``_sliced``); should its result ever
    come back in another row order, the journal numbers show it and the slice is selected
    on the in-memory engine: the frame stays the same."""
    whole = build_features(ledger.lazy(), Settings()).frame
    collect = pl.LazyFrame.collect
    streamed = []

    def shuffled(self: pl.LazyFrame, *args: object, **kwargs: object) -> pl.DataFrame:
        got = collect(self, *args, **kwargs)
        if kwargs.get("engine") == "streaming" and "_sliced_check" in got.columns:
            streamed.append(got.height)
            return got.reverse()
        return got

    monkeypatch.setattr(pl.LazyFrame, "collect", shuffled)
    assert build_features(ledger.lazy(), Settings()).frame.equals(whole) and streamed


def test_features_sliced_into_small_slices_are_the_same(ledger: pl.DataFrame,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The final select runs slice by slice: with slices much shorter than the ledger (the
    tests' ledgers are one slice otherwise) the frame is bit-identical, so no feature depends
    on the slice (e.g. a count of its lines instead of all lines)."""
    import detect.features as features

    whole = build_features(ledger.lazy(), Settings()).frame
    monkeypatch.setattr(features, "SLICE_LINES", 97)
    assert ledger.height > 2 * 97 and ledger.height % 97  # a short last slice too
    sliced = build_features(ledger.lazy(), Settings()).frame
    assert sliced.equals(whole)
