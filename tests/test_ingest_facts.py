"""What the ingest counts on its way through the delivery (``detect.ingest.Facts``) must equal
what validation would query itself, and is only used for the frame it describes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import polars as pl
import pytest

from detect import history, validate
from detect.ingest import Facts, ingest
from detect.ingest.textio import file_identity
from validate_support import context, settings, validated_both_ways

HEADER = "Journal_ID,Journal_ID_Line_Number,Effective_Date,Fiscal_Year,GL_Account_Number,Amount\n"


def _cfg():
    return dataclasses.replace(settings(data_docs=False), entity="default")


def _frame(files: list[str], lines: list[int]) -> pl.DataFrame:
    return pl.DataFrame({"source_file": files, "source_line": lines,
                         "x": [None, 1, None, 2][:len(lines)]},
                        schema_overrides={"source_line": pl.Int64, "x": pl.Int32})


def test_facts_count_rows_nulls_and_order_across_batches():
    facts = Facts()
    facts.add(_frame(["a", "a"], [2, 3]))
    facts.add(_frame(["a", "b"], [4, 2]))
    assert (facts.rows, facts.nulls["x"], facts.in_order) == (4, 2, True)
    facts.add(_frame(["b", "b"], [1, 5]))   # goes back across the batch boundary
    assert not facts.in_order
    inside = Facts()
    inside.add(_frame(["a", "a", "a"], [2, 5, 3]))
    assert not inside.in_order
    nulls = Facts()
    nulls.add(pl.DataFrame({"source_file": ["a", None], "source_line": [1, 2]}))
    assert not nulls.in_order


def test_ingest_facts_equal_queries_and_validation_uses_them(tmp_path: Path):
    (tmp_path / "in").mkdir()
    rows = [f"{j},{n},2024-03-0{j},2024,5250000,{'x' if j == 2 and n == 1 else '10.00'}"
            for j in (1, 2, 3) for n in (1, 2)]
    (tmp_path / "in" / "GL.csv").write_text(HEADER + "\n".join(rows) + "\n", "utf-8")
    result = ingest([tmp_path / "in"], "ads", _cfg(), tmp_path / "work")
    facts = result.facts_of(result.bookings)
    assert facts is not None and facts.rows == 6 and facts.in_order
    expected = result.bookings.select(pl.all().null_count()).collect().row(0, named=True)
    assert {c: facts.nulls[c] for c in expected} == expected
    assert facts.nulls["ingest_issue"] == 5
    # a replaced frame gets no facts
    assert result.facts_of(result.bookings.head(2)) is None
    ctx = context(tmp_path / "data", _cfg())
    checked = validate.validate(result, ctx)
    assert (checked.rows_in, checked.rows_quarantined) == (6, 1)
    # no duplicate keys: the history merge is told so and does not count them again
    assert history._UNIQUE_KEYS.get(file_identity(checked.clean_path))
    assert not history._may_have_duplicate_keys(checked.clean_path)


def test_a_repeated_key_is_not_reported_unique_to_the_history(tmp_path: Path):
    (tmp_path / "in").mkdir()
    rows = ["1,1,2024-03-01,2024,5250000,10.00", "1,1,2024-03-01,2024,1810000,-10.00"]
    (tmp_path / "in" / "GL.csv").write_text(HEADER + "\n".join(rows) + "\n", "utf-8")
    result = ingest([tmp_path / "in"], "ads", _cfg(), tmp_path / "work")
    checked = validate.validate(result, context(tmp_path / "data", _cfg()))
    assert checked.rows_quarantined == 1
    assert not history._UNIQUE_KEYS.get(file_identity(checked.clean_path))


def test_gl_stats_of_batches_equal_the_query_on_the_whole_file():
    from detect.ingest.ads import PLACEHOLDER_FLAG, UNIT_GIVEN, GLStats, _adjacent_units

    frame = pl.DataFrame({
        "source_file": ["a"] * 6 + ["b"] * 4,
        "journal_id": ["1", "1", "2", "2", "2", None, None, "1", "1", "2"],
        "entity": ["X", "X", "X", "Y", "Y", "Z", "Z", "X", "X", "X"],
        UNIT_GIVEN: [True, True, True, True, False, True, True, True, True, True],
        PLACEHOLDER_FLAG: [True, False, False, True, False, False, False, True, True, False]})
    unit = frame.with_columns(pl.when(pl.col(UNIT_GIVEN)).then(pl.col("entity")).alias("entity"))
    expected = _adjacent_units(unit.lazy(), ["source_file", "journal_id"]).collect()
    for cuts in ([], [1], [3], [2, 4], [6], [7], [1, 2, 3, 4, 5, 6, 7, 8, 9]):
        stats = GLStats(units=True)
        bounds = [0, *cuts, frame.height]
        for lo, hi in zip(bounds, bounds[1:], strict=False):
            stats(frame.slice(lo, hi - lo))
        assert stats.adjacent().equals(expected, null_equal=True), cuts
        assert stats.counts == {"a": [6, 2], "b": [4, 2]}
    # the same journal naming one unit everywhere: no difference found
    same = frame.with_columns(pl.lit("X").alias("entity"), pl.lit(True).alias(UNIT_GIVEN))
    stats = GLStats(units=True)
    stats(same.slice(0, 3))
    stats(same.slice(3))
    assert not stats.adjacent()["differs"][0]


def test_gl_stats_hash_a_key_alike_in_batches_of_one_file_and_of_several():
    """A key hashed in a batch of one file (the file's hash as one scalar) and in a batch of
    several files (per row) must count once: twice would make a repeated key look distinct."""
    from detect.ingest.ads import PLACEHOLDER_FLAG, UNIT_GIVEN, GLStats, _adjacent_units

    frame = pl.DataFrame({"source_file": ["a", "a", "b", "a", "a"],
                          "journal_id": ["1", "2", "1", "1", "2"], "entity": ["X"] * 5,
                          UNIT_GIVEN: [True] * 5, PLACEHOLDER_FLAG: [False] * 5})
    expected = _adjacent_units(frame.lazy(), ["source_file", "journal_id"]).collect()
    assert expected["distinct"][0] == 3 and expected["runs"][0] == 5
    for cuts in ([3], [2], [1, 3], [4]):
        stats = GLStats(units=True)
        bounds = [0, *cuts, frame.height]
        for lo, hi in zip(bounds, bounds[1:], strict=False):
            stats(frame.slice(lo, hi - lo))
        assert stats.adjacent().equals(expected, null_equal=True), cuts


def test_facts_order_of_one_file_batches_and_mixed_ones():
    one = Facts()
    one.add(_frame(["a", "a", "a"], [2, 2, 3]))   # equal lines are in order
    one.add(_frame(["a", "a"], [3, 9]))
    assert one.in_order and one.rows == 5
    back = Facts()
    back.add(_frame(["a", "a", "a"], [2, 3, 4]))
    back.add(_frame(["a", "a"], [3, 9]))          # one file, back across the boundary
    assert not back.in_order
    mixed = Facts()
    mixed.add(_frame(["a", "b", "a"], [2, 1, 3]))  # a file name goes back inside a batch
    assert not mixed.in_order


def test_whitespace_list_is_what_strip_chars_removes():
    from detect.ingest.parsing import WHITESPACE

    every = pl.Series([chr(i) for i in range(0x110000) if not 0xD800 <= i <= 0xDFFF])
    assert set(every.filter(every.str.strip_chars() == "").to_list()) == set(WHITESPACE)


def test_text_state_never_misses_a_value_to_trim():
    import random

    from detect.ingest.parsing import WHITESPACE, finish_text, strip_or_null, text_state

    rng = random.Random(7)
    letters = ["a", "Z", "0", "ß", "Ä", "€", "–", "x y", ",", '"']
    for _ in range(300):
        values = []
        for _ in range(rng.randint(1, 40)):
            core = "".join(rng.choice(letters) for _ in range(rng.randint(0, 20)))
            pad = rng.random() < 0.05
            text = (rng.choice(WHITESPACE) if pad and rng.random() < 0.5 else "") + core \
                + (rng.choice(WHITESPACE) if pad and rng.random() < 0.5 else "")
            values.append(None if rng.random() < 0.1 else text)
        series = pl.Series("t", values, dtype=pl.String)
        cut = rng.randint(0, len(values))
        chunked = pl.concat([series.slice(0, cut), series.slice(cut)], rechunk=False)
        for s in (series, chunked, series.slice(1)):
            untrimmed, empty = text_state(s)
            present = s.drop_nulls()
            needs = (present != present.str.strip_chars()).any()
            assert untrimmed or not needs
            assert untrimmed or empty == bool((s.drop_nulls() == "").any())
            frame = s.to_frame()
            trimmed = frame.select(strip_or_null(pl.col("t")).alias("t"))
            assert finish_text(frame, ["t"]).equals(trimmed)


def test_ads_text_fields_are_trimmed_where_padded(tmp_path: Path):
    (tmp_path / "in").mkdir()
    header = HEADER.strip() + ",JE_Line_Description,Reference_Number,Cost_Center\n"
    rows = ["1,1,2024-03-01,2024,5250000,10.00,Miete Büro,R1,  ",
            '1,2,2024-03-01,2024, 1810000,-10.00," Miete\u00a0",R2\u3000,""',
            "2,1,2024-03-02,2024,5250000,5.00,Strom,,KST1"]
    (tmp_path / "in" / "GL.csv").write_text(header + "\n".join(rows) + "\n", "utf-8")
    got = ingest([tmp_path / "in"], "ads", _cfg(), tmp_path / "work").bookings.collect()
    assert got["description"].to_list() == ["Miete Büro", "Miete", "Strom"]
    assert got["reference"].to_list() == ["R1", "R2", None]
    assert got["cost_center"].to_list() == [None, None, "KST1"]
    assert got["gl_account"].to_list() == ["5250000", "1810000", "5250000"]


@pytest.mark.parametrize("layout", ["runs", "split_journal", "repeated_line", "null_ids"])
def test_journal_runs_give_the_queries_results(tmp_path: Path, layout: str):
    """Validation with the ingest's journal runs (unbalanced journals, duplicate keys, journal
    ids, GX's sample) equals validation by its own queries, also when the runs are no
    journals (a journal split in two, a repeated line number, journals without an id)."""
    header = HEADER.strip() + ",Amount_Currency\n"
    rows = []
    for j in range(1, 13):
        amount = 10 + j
        rows += [f"{j},1,2024-03-0{1 + j % 9},2024,5250000,{amount}.00,EUR",
                 f"{j},2,2024-03-0{1 + j % 9},2024,1810000,-{amount}.00,EUR"]
    rows[5] = rows[5].replace("-13.00", "-12.00")          # journal 3 does not balance
    rows[7] = rows[7].replace(",EUR", ",EURO")             # journal 4: a quarantined line
    if layout == "split_journal":
        rows.insert(12, rows.pop(1))                       # journal 1's second line later
    if layout == "repeated_line":
        rows[9] = rows[9].replace("5,2,", "5,1,")          # journal 5 repeats line 1
    if layout == "null_ids":
        rows[20] = "," + rows[20].split(",", 1)[1]
        rows[22] = "," + rows[22].split(",", 1)[1]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "GL.csv").write_text(header + "\n".join(rows) + "\n", "utf-8")
    runs = ingest([tmp_path / "in"], "ads", _cfg(), tmp_path / "probe").facts.journals
    assert runs.distinct == (layout in ("runs", "repeated_line"))
    assert runs.lines_increase == (layout != "repeated_line")
    for gx_rows in (0, 6):
        fast = validated_both_ways(tmp_path / "in", tmp_path / f"a{gx_rows}", use_facts=True,
                          gx_rows=gx_rows)
        slow = validated_both_ways(tmp_path / "in", tmp_path / f"b{gx_rows}", use_facts=False,
                          gx_rows=gx_rows)
        for name in ("bookings", "quarantine", "findings"):
            assert fast[name].equals(slow[name]), (name, gx_rows)
        assert fast["report"] == slow["report"]
        assert fast["findings"].height >= 1


def test_ingest_pseudonymises_master_ibans_as_validation_would(tmp_path: Path):
    from detect.privacy import pseudonymise_master

    (tmp_path / "in").mkdir()
    rows = ["1,1,2024-03-01,2024,5250000,10.00,DE89370400440532013000",
            "1,2,2024-03-01,2024,1810000,-10.00,"]
    (tmp_path / "in" / "GL.csv").write_text(
        HEADER.strip() + ",Bank_Account\n" + "\n".join(rows) + "\n", "utf-8")
    (tmp_path / "in" / "Supplier_Listing.csv").write_text(
        "Supplier_Account_ID,Supplier_Account_Name,Supplier_Bank_Account\n"
        "K1,Alpha,de89 3704 0044 0532 0130 00\nK2,Beta,DE02120300000000202051\nK3,Gamma,\n",
        "utf-8")
    (tmp_path / "in" / "Vendor_Change_Log.csv").write_text(
        "Supplier_Account_ID,Changed_At,Field,Old_Value,New_Value,Changed_By\n"
        "K1,2024-02-01 10:00:00,Bank_Account,DE02120300000000202051,DE89370400440532013000,U1\n"
        "K2,2024-01-01 09:00:00,Name,Bet,Beta,U2\n", "utf-8")
    key = b"k" * 32
    keyed = ingest([tmp_path / "in"], "ads", _cfg(), tmp_path / "a", pseudonym_key=key)
    plain = ingest([tmp_path / "in"], "ads", _cfg(), tmp_path / "b")
    assert keyed.master_key == key and plain.master_key is None
    assert sorted(pseudonymise_master(plain.master, key)) == ["vendor_changes", "vendors"]
    for name in ("vendors", "vendor_changes"):
        assert keyed.master[name].equals(plain.master[name]), name
    assert "#" in keyed.master["vendors"]["bank_account"][0]
