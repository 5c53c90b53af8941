"""The rule engine: loading and refusing rule files, rendering, running over history parquet."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl
import pytest

from detect.config import Settings
from detect.errors import UserError
from detect.rules import HIT_SCHEMA, RuleError, connect, find_rule, load_catalog, run_rules
from detect.rules.cases import case_bookings
from detect.rules.loader import load_rule
from detect.rules.render import template_sql
from detect.rules.runner import (_reads_all_columns, catalog_columns, delivery_is_whole_history,
                                 run_catalog, setup_views)
from detect.schema import BOOKING_SCHEMA, MASTER_SCHEMAS, conform

GOOD_RULE = """
id: TST001
name: big-amount
title: {de: Großer Betrag, en: Big amount}
severity: low
level: line
requires: [amount]
params:
  limit: {default: 1000, doc: "flag above this"}
why: Big amounts matter.
explain: {de: "Betrag {amount} über {limit}", en: "Amount {amount} above {limit}"}
falsepositives: [none]
query: |
  SELECT entity, fiscal_year, journal_id, line_no, amount FROM bookings WHERE amount > $limit
cases:
  - name: flags
    columns: [journal_id, amount]
    rows: [[J1, 5000.00]]
    expect: [[J1, 1]]
  - name: passes
    columns: [journal_id, amount]
    rows: [[J1, 50.00]]
    expect: []
"""


def write_rule(root: Path, family: str, rule_id: str, text: str) -> Path:
    path = root / family / f"{rule_id}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --- loading and validation ---------------------------------------------------------------------

def test_good_rule_loads_with_family_from_folder(tmp_path: Path) -> None:
    rule = load_rule(write_rule(tmp_path, "amounts", "TST001", GOOD_RULE))
    assert (rule.id, rule.family, rule.severity, rule.level) == ("TST001", "amounts", "low", "line")
    assert rule.defaults() == {"limit": 1000}
    assert [c.name for c in rule.cases] == ["flags", "passes"]
    assert rule.cases[0].expect == [("J1", 1)]


def test_broken_rule_is_refused_naming_file_and_every_problem(tmp_path: Path) -> None:
    broken = (GOOD_RULE.replace("severity: low", "severity: urgent")
              .replace("WHERE amount > $limit", "WHERE amount > $limit AND amount < $cap")
              .replace('en: "Amount {amount} above {limit}"', 'en: ""'))
    broken = broken[:broken.index("  - name: passes")]
    path = write_rule(tmp_path, "amounts", "TST001", broken)
    with pytest.raises(RuleError) as err:
        load_rule(path)
    text = str(err.value)
    assert str(path) in text
    assert "severity must be one of low, medium, high, critical" in text
    assert "undeclared parameter(s): $cap" in text
    assert "explain needs non-empty texts for both 'de' and 'en'" in text
    assert "at least one passing case" in text


def test_missing_keys_and_wrong_file_name(tmp_path: Path) -> None:
    path = write_rule(tmp_path, "x", "TST002", GOOD_RULE.replace("why: Big amounts matter.\n", ""))
    with pytest.raises(RuleError, match=r"missing key\(s\): why"):
        load_rule(path)
    path = write_rule(tmp_path, "x", "WRONG1", GOOD_RULE)
    with pytest.raises(RuleError, match="file name must be TST001.yaml"):
        load_rule(path)


def test_invalid_yaml_reports_line(tmp_path: Path) -> None:
    path = write_rule(tmp_path, "x", "TST001", "id: TST001\nname: [unclosed\n")
    with pytest.raises(RuleError) as err:
        load_rule(path)
    assert err.value.file == str(path) and err.value.line is not None


def test_unknown_columns_in_cases_are_refused(tmp_path: Path) -> None:
    text = GOOD_RULE.replace("columns: [journal_id, amount]\n    rows: [[J1, 5000.00]]",
                             "columns: [journal_id, amout]\n    rows: [[J1, 5000.00]]")
    with pytest.raises(RuleError, match="unknown column\\(s\\) amout"):
        load_rule(write_rule(tmp_path, "x", "TST001", text))


def test_duplicate_ids_across_files(tmp_path: Path) -> None:
    write_rule(tmp_path, "a", "TST001", GOOD_RULE)
    write_rule(tmp_path, "b", "TST001", GOOD_RULE.replace("big-amount", "other-name"))
    with pytest.raises(RuleError, match="duplicate rule id TST001"):
        load_catalog(tmp_path)


def test_find_rule_by_id_or_name_and_unknown() -> None:
    catalog = load_catalog()
    assert find_rule(catalog, "pay001").id == "PAY001"
    assert find_rule(catalog, "duplicate-payment").id == "PAY001"
    with pytest.raises(UserError, match="unknown rule 'XYZ999'"):
        find_rule(catalog, "XYZ999")


# --- rendering -----------------------------------------------------------------------------------

def test_templates_render_german_and_english_in_sql() -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE rel AS SELECT CAST(-1234567.5 AS DECIMAL(18,2)) AS amount, "
                "DATE '2025-03-31' AS d, 0.256::DOUBLE AS share, NULL::VARCHAR AS who, "
                "TIMESTAMP '2025-03-31 22:05:00' AS at")
    cols = {r[0]: str(r[1]) for r in con.execute("DESCRIBE rel").fetchall()}
    tpl = "{amount} am {d} ({share:pct}) von {who} um {at}, Grenze {limit}"
    de = con.execute(f"SELECT {template_sql(tpl, cols, {'limit': 25000.0}, 'de')} FROM rel"
                     ).fetchone()[0]
    en = con.execute(f"SELECT {template_sql(tpl, cols, {'limit': 25000.0}, 'en')} FROM rel"
                     ).fetchone()[0]
    assert de == "-1.234.567,50 € am 31.03.2025 (25,6 %) von – um 31.03.2025 22:05, Grenze 25.000"
    assert en == "-€1,234,567.50 am 2025-03-31 (25.6%) von – um 2025-03-31 22:05, Grenze 25,000"
    with pytest.raises(KeyError):
        template_sql("{nope}", cols, {}, "de")


def test_case_rows_get_defaults_and_keep_explicit_nulls() -> None:
    frame = case_bookings([{"journal_id": "J1", "amount": 10}, {"journal_id": "J1"},
                           {"journal_id": "J2", "description": None}])
    assert frame.schema == BOOKING_SCHEMA
    assert frame["line_no"].to_list() == [1, 2, 1]
    assert frame["amount"].to_list() == [Decimal("10.00"), Decimal("100.00"), Decimal("100.00")]
    assert frame["description"].to_list() == ["Rechnung Büromaterial"] * 2 + [None]
    assert frame["fiscal_year"].to_list() == [2024] * 3
    assert frame["entered_at"][0] == datetime(2024, 3, 14, 10, 0)


# --- running over parquet history -------------------------------------------------------------

@dataclass
class Ctx:
    run_dir: Path
    settings: Settings = field(default_factory=Settings)
    rescore_history: bool = False
    entity: str = "Musterstadt"
    log: object = None


def bookings(rows: list[dict]) -> pl.DataFrame:
    base = {"entity": "Musterstadt", "fiscal_year": 2025, "source_file": "t.csv", "source_line": 1,
            "gl_account": "351000", "entered_by": "MEIER", "approved_by": "SCHULZ",
            "source": "manual"}
    frame = pl.DataFrame([{**base, **r} for r in rows])
    frame = frame.with_columns(pl.col("amount").cast(pl.Decimal(18, 2)),
                               pl.col("posting_date").str.to_date())
    return conform(frame.lazy()).collect()


def write_history(tmp_path: Path) -> tuple[Path, Path]:
    """Two deliveries: an invoice paid in January, the same payment again in February."""
    first = bookings([
        dict(journal_id="100", line_no=1, vendor_id="V1", reference="RE-1", amount=1500,
             posting_date="2025-01-10"),
        dict(journal_id="100", line_no=2, gl_account="181000", vendor_id="V1", reference="RE-1",
             amount=-1500, posting_date="2025-01-10"),
        dict(journal_id="101", line_no=1, vendor_id="V2", reference="RE-9", amount=700,
             posting_date="2025-01-11"),
        dict(journal_id="101", line_no=2, gl_account="181000", amount=-600,
             posting_date="2025-01-11"),
    ])
    second = bookings([
        dict(journal_id="200", line_no=1, vendor_id="V1", reference="RE-1", amount=1500,
             posting_date="2025-02-03"),
        dict(journal_id="200", line_no=2, gl_account="181000", vendor_id="V1", reference="RE-1",
             amount=-1500, posting_date="2025-02-03"),
    ])
    hist = tmp_path / "history" / "Musterstadt"
    hist.mkdir(parents=True)
    first.write_parquet(hist / "d1.parquet")
    second.write_parquet(hist / "d2.parquet")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    second.write_parquet(run_dir / "bookings.parquet")
    return hist, run_dir


def test_run_rules_keeps_only_delivery_hits_but_sees_history(tmp_path: Path) -> None:
    hist, run_dir = write_history(tmp_path)
    ctx = Ctx(run_dir)
    result = run_rules(connect(ctx, str(hist / "*.parquet")), ctx)
    pay = result.hits.filter(pl.col("rule_id") == "PAY001")
    # journal 200 repeats journal 100 of the previous delivery: both lines flagged
    assert pay.select("journal_id", "line_no").rows() == [("200", 1), ("200", 2)]
    evidence = json.loads(pay["evidence"][0])
    assert evidence["first_journal"] == "100" and evidence["first_date"] == "2025-01-10"
    assert pay["explanation_de"][0] == ("1.500,00 € an Kreditor V1 (Ref. RE-1) wurde schon am "
                                        "10.01.2025 mit Beleg 100 gebucht.")
    # the unbalanced journal 101 belongs to the earlier delivery: not reported again
    assert result.hits.filter(pl.col("journal_id") == "101").is_empty()
    written = pl.read_parquet(run_dir / "rule_hits.parquet")
    assert written.schema == HIT_SCHEMA
    assert written.height == result.hits.height
    summary = result.summary()
    assert summary["hits_per_rule"]["PAY001"] == 2
    assert {"rule_id": "PAY003", "reason": "needs vendors"} in summary["skipped"]
    assert {"rule_id": "USR004", "reason": "needs users"} in summary["skipped"]
    assert any(s["reason"] == "needs column reversal_of (empty in the data)"
               for s in summary["skipped"])
    assert summary["headline"][0].startswith(f"rules: {len(summary['ran'])} run, "
                                             f"{len(summary['skipped'])} skipped (")
    assert json.dumps(summary)  # JSON-able for the manifest


def test_rescore_history_reports_old_journals_too(tmp_path: Path) -> None:
    hist, run_dir = write_history(tmp_path)
    ctx = Ctx(run_dir, rescore_history=True)
    result = run_rules(connect(ctx, [hist / "d1.parquet", hist / "d2.parquet"]), ctx)
    unbalanced = result.hits.filter(pl.col("rule_id") == "JRN001")
    assert unbalanced.select("journal_id", "line_no").rows() == [("101", None)]
    assert "Saldo 100,00 €" in unbalanced["explanation_de"][0]


def test_settings_switch_rules_off_and_override_params(tmp_path: Path) -> None:
    hist, run_dir = write_history(tmp_path)
    settings = Settings(rules={"PAY001": {"window_days": 10}, "JRN001": {"enabled": False}})
    ctx = Ctx(run_dir, settings=settings, rescore_history=True)
    result = run_rules(connect(ctx, str(hist / "*.parquet")), ctx)
    assert result.hits.filter(pl.col("rule_id").is_in(["PAY001", "JRN001"])).is_empty()
    assert {"rule_id": "JRN001", "reason": "disabled in belegwacht.toml"} in result.skipped


def test_misspelt_rule_parameter_is_a_config_error(tmp_path: Path) -> None:
    hist, run_dir = write_history(tmp_path)
    ctx = Ctx(run_dir, settings=Settings(rules={"PAY001": {"windw_days": 10}}))
    with pytest.raises(UserError, match=r"\[rules.PAY001\] has unknown parameter\(s\) windw_days"):
        run_rules(connect(ctx, str(hist / "*.parquet")), ctx)


def test_master_data_from_run_dir_enables_rules(tmp_path: Path) -> None:
    hist, run_dir = write_history(tmp_path)
    (run_dir / "master").mkdir()
    pl.DataFrame({"vendor_id": ["V1"], "created_at": [date(2025, 1, 20)]}).write_parquet(
        run_dir / "master" / "vendors.parquet")
    ctx = Ctx(run_dir)
    result = run_rules(connect(ctx, str(hist / "*.parquet")), ctx)
    assert "PAY003" in result.ran
    new_vendor = result.hits.filter(pl.col("rule_id") == "PAY003")
    assert new_vendor.select("journal_id", "line_no").rows() == [("200", 1), ("200", 2)]
    assert "14 Tage nach dessen Anlage am 20.01.2025" in new_vendor["explanation_de"][0]


def test_failing_rule_is_reported_and_others_still_run(tmp_path: Path) -> None:
    write_rule(tmp_path, "amounts", "TST001", GOOD_RULE)
    write_rule(tmp_path, "amounts", "TST002", GOOD_RULE.replace("TST001", "TST002")
               .replace("big-amount", "broken").replace("WHERE amount > $limit",
                                                        "WHERE amount > $limit AND no_such_col"))
    con = duckdb.connect()
    con.register("b", bookings([dict(journal_id="1", line_no=1, amount=5000,
                                     posting_date="2025-01-10")]))
    setup_views(con, "b", "b", {}, Settings())
    result = run_catalog(con, Settings(), load_catalog(tmp_path))
    assert result.ran == ["TST001"]
    assert result.failed[0]["rule_id"] == "TST002" and "no_such_col" in result.failed[0]["reason"]
    assert result.summary()["headline"][0] == "rules: 1 run, 1 FAILED, 1 hits on 1 journals"
    assert result.hits["explanation_en"].to_list() == ["Amount €5,000.00 above 1,000"]


def test_a_rule_flagging_most_journals_is_dropped_as_too_broad() -> None:
    rows = [dict(journal_id=str(i), line_no=n, amount=a, posting_date="2025-01-10",
                 description=None) for i in range(250) for n, a in ((1, 400), (2, -400))]
    con = duckdb.connect()
    con.register("b", bookings(rows))
    setup_views(con, "b", "b", {}, Settings())
    result = run_catalog(con, Settings(), load_catalog())
    assert result.hits.filter(pl.col("rule_id") == "TXT001").is_empty()
    assert {"rule_id": "TXT001", "reason": (
        "flagged 250 of 250 journals (100%) - a property of this data rather than an anomaly; "
        "hits dropped (max_hit_share 0.2)")} in result.noisy
    assert "TXT001" in result.summary()["headline"][0]
    assert "dropped as too broad for this data" in result.summary()["headline"][0]
    kept = run_catalog(con, Settings(rules={"TXT001": {"max_hit_share": 1.0}}), load_catalog())
    assert kept.hits.filter(pl.col("rule_id") == "TXT001").height == 500
    assert "TXT001" not in {n["rule_id"] for n in kept.noisy}


def test_only_columns_rules_name_are_copied_unless_a_rule_selects_star(tmp_path: Path) -> None:
    booking_cols, journal_cols = catalog_columns(load_catalog())
    assert booking_cols is not None and {"amount", "description", "reference"} <= booking_cols
    assert not {"source_file", "source_line", "cost_center"} & booking_cols
    assert journal_cols is not None and "n_lines" in journal_cols
    assert "description" not in journal_cols  # no rule reads the journal's first text
    write_rule(tmp_path, "amounts", "TST001", GOOD_RULE.replace(
        "SELECT entity, fiscal_year, journal_id, line_no, amount FROM bookings",
        "SELECT * FROM bookings"))
    star = load_catalog(tmp_path)
    assert catalog_columns(star)[0] is None
    # "--" inside a string literal starts no comment: the columns after it are still read
    dashes = tmp_path / "dashes"
    write_rule(dashes, "amounts", "TST001", GOOD_RULE.replace(
        "line_no, amount FROM", "line_no, amount, coalesce(reference, '--'), cost_center FROM"))
    assert {"reference", "cost_center"} <= catalog_columns(load_catalog(dashes))[0]
    con = duckdb.connect()
    con.register("b", bookings([dict(journal_id="1", line_no=1, amount=5000,
                                     posting_date="2025-01-10")]))
    setup_views(con, "b", "b", {}, Settings())
    result = run_catalog(con, Settings(), star)
    assert json.loads(result.hits["evidence"][0])["source_file"] == "t.csv"
    # a second run on the same connection copies from the source again, not from the copy
    narrow = run_catalog(con, Settings(), load_catalog())
    assert con.execute("SELECT source_file FROM bookings").fetchall() == [(None,)]
    again = run_catalog(con, Settings(), star)
    assert json.loads(again.hits["evidence"][0])["source_file"] == "t.csv"
    assert narrow.history_population == 1


def test_delivery_of_the_whole_history_gives_the_same_hits_without_the_filter(
        tmp_path: Path) -> None:
    hist, run_dir = write_history(tmp_path)
    pl.concat([pl.read_parquet(hist / "d1.parquet"), pl.read_parquet(hist / "d2.parquet")]
              ).write_parquet(run_dir / "bookings.parquet")
    ctx = Ctx(run_dir)
    con = connect(ctx, str(hist / "*.parquet"))
    whole = run_catalog(con, Settings(), load_catalog())
    assert delivery_is_whole_history(con)
    everything = run_catalog(con, Settings(), load_catalog(), delivery_only=False)
    assert whole.hits.equals(everything.hits)
    assert {"100", "101", "200"} <= set(whole.hits["journal_id"].to_list())
    # a nightly delta: only its journals are reported, as before
    (tmp_path / "run2").mkdir()
    pl.read_parquet(hist / "d2.parquet").write_parquet(tmp_path / "run2" / "bookings.parquet")
    con2 = connect(Ctx(tmp_path / "run2"), str(hist / "*.parquet"))
    partial = run_catalog(con2, Settings(), load_catalog())
    assert not delivery_is_whole_history(con2)
    assert set(partial.hits["journal_id"].to_list()) == {"200"}


def test_placeholder_dates_are_unknown_to_the_rules() -> None:
    con = duckdb.connect()
    con.register("b", bookings([dict(journal_id="1", line_no=1, amount=1,
                                     posting_date="1900-01-01")]))
    setup_views(con, "b", "b", {}, Settings())
    assert con.execute("SELECT posting_date FROM bookings").fetchall() == [(None,)]


def test_holidays_follow_the_state() -> None:
    con = duckdb.connect()
    con.register("b", bookings([dict(journal_id="1", line_no=1, amount=1,
                                     posting_date="2025-06-19")]))
    setup_views(con, "b", "b", {}, Settings(state="NW"))
    nw = con.execute("SELECT name FROM holidays WHERE date = DATE '2025-06-19'").fetchall()
    setup_views(con, "b", "b", {}, Settings(state="BE"))
    be = con.execute("SELECT name FROM holidays WHERE date = DATE '2025-06-19'").fetchall()
    assert nw == [("Fronleichnam",)] and be == []
    years = con.execute("SELECT DISTINCT year(date) FROM holidays ORDER BY 1").fetchall()
    assert years == [(2024,), (2025,), (2026,)]


def test_bad_state_is_a_config_error() -> None:
    con = duckdb.connect()
    con.register("b", bookings([dict(journal_id="1", line_no=1, amount=1,
                                     posting_date="2025-06-19")]))
    with pytest.raises(UserError, match="public holidays"):
        setup_views(con, "b", "b", {}, Settings(state="XX"))


HOLIDAY_CASES = """
import sys
from detect.errors import UserError
from detect.rules import runner

CASES = [("DE", "NW", "de"), ("DE", "BY", "en"), ("DE", "", "de"), ("DEU", "BE", "de"),
         ("AT", "", "de"), ("US", "CA", "en"), ("CH", "ZH", "fr"), ("DE", "NW", "xx"),
         ("XX", "", "de"), ("DE", "XX", "de")]


def calendars():
    out = []
    for country, state, language in CASES:
        try:
            out.append(runner._holidays(country, state, language, (2024, 2025)).rows())
        except UserError as exc:
            out.append(str(exc))
    return out


own = calendars()
assert "holidays.countries" not in sys.modules, "the package of all countries was imported"
runner._holidays.cache_clear()
import holidays.countries  # noqa: E402,F401 - from now on the library's own way

assert runner._holiday_class("DE") is None
assert calendars() == own, (calendars(), own)
print(len(own[0]), own[-2:])
"""


def test_holidays_load_only_the_country_module_and_equal_the_librarys_way() -> None:
    """``_holiday_class`` loads one country's module instead of the package that imports all
    279 (~0,045 CPU s per run): the same calendars, names, fallbacks and errors as
    ``holidays.country_holidays`` (a fresh process: this one may have imported the package)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", HOLIDAY_CASES], capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parents[1], check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("22 ")  # NW 2024 and 2025
    assert "Country XX not available" in done.stdout and "subdivision XX" in done.stdout


def test_empty_master_views_have_the_master_schema() -> None:
    con = duckdb.connect()
    con.register("b", bookings([dict(journal_id="1", line_no=1, amount=1,
                                     posting_date="2025-06-19")]))
    setup_views(con, "b", "b", {}, Settings())
    for name, schema in MASTER_SCHEMAS.items():
        assert [r[0] for r in con.execute(f"DESCRIBE {name}").fetchall()] == schema.names()
        assert con.execute(f"SELECT count(*) FROM {name}").fetchone() == (0,)


def test_star_anywhere_in_a_select_list_reads_all_columns() -> None:
    # decided on DuckDB's parse tree: a star that is not first, COLUMNS(*), an alias's star or
    # the row as a struct would otherwise turn the columns no rule names into nulls
    for query in ("SELECT entity, * FROM bookings", "SELECT COLUMNS(*) FROM bookings",
                  "SELECT b.* FROM journals j JOIN bookings AS b USING (entity)",
                  "WITH x AS (SELECT * EXCLUDE (amount) FROM bookings) SELECT entity FROM x",
                  "SELECT to_json(b) FROM bookings b",
                  "SELECT entity FROM journals UNION ALL SELECT * FROM bookings"):
        assert _reads_all_columns(query, "bookings"), query
    for query in ("SELECT count(*) FROM bookings", "SELECT j.* FROM bookings b, journals j",
                  "SELECT * FROM (SELECT entity, amount FROM bookings)",
                  "SELECT entity FROM bookings -- SELECT * FROM bookings"):
        assert not _reads_all_columns(query, "bookings"), query
    assert _reads_all_columns("SELECT j.* FROM bookings b, journals j", "journals")


def test_parse_trees_come_from_one_shared_connection_safely_across_threads() -> None:
    # catalog_columns parses every query on one process-wide connection (a new connection
    # per query cost ~13 ms each); callers on several threads (the app) take turns on it
    from concurrent.futures import ThreadPoolExecutor

    from detect.rules import runner

    queries = [f"SELECT entity, {i} AS n, * FROM bookings WHERE amount > {i}" for i in range(40)]
    runner._parse_tree_text.cache_clear()
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(runner._parse_tree_text, queries))
    runner._parse_tree_text.cache_clear()
    assert parallel == [runner._parse_tree_text(q) for q in queries]
    assert all(json.loads(t)["error"] is False for t in parallel)
    assert all(_reads_all_columns(q, "bookings") for q in queries)


def test_a_history_file_that_is_a_copy_of_the_delivery_needs_no_delivery_filter(
        tmp_path: Path) -> None:
    hist, run_dir = write_history(tmp_path)
    first = pl.read_parquet(hist / "d1.parquet")
    for name, frame in (("copy", first),
                        ("null_key", first.with_columns(  # journal 101 without its id
                            journal_id=pl.when(pl.col("journal_id") != "101")
                            .then(pl.col("journal_id"))))):
        folder = tmp_path / name
        (folder / "run").mkdir(parents=True)
        frame.write_parquet(folder / "history.parquet")
        shutil.copyfile(folder / "history.parquet", folder / "run" / "bookings.parquet")
        con = connect(Ctx(folder / "run"), str(folder / "history.parquet"))
        whole = run_catalog(con, Settings(), load_catalog())
        # a journal with a null key is never "in the delivery": the filter stays
        assert delivery_is_whole_history(con) == (name == "copy")
        # the copy is decided by its bytes: the delivery's journal keys were never collected
        copied = con.execute("SELECT count(*) FROM duckdb_tables() "
                             "WHERE table_name = '_delivery_journals'").fetchone()
        assert copied == ((0,) if name == "copy" else (1,))
        everything = run_catalog(con, Settings(), load_catalog(), delivery_only=False)
        if name == "copy":
            assert whole.hits.equals(everything.hits) and whole.hits.height
        else:
            assert whole.hits["journal_id"].null_count() == 0
            assert everything.hits["journal_id"].null_count() > 0


def test_a_copy_of_the_delivery_among_other_history_files_keeps_the_filter(
        tmp_path: Path) -> None:
    # the history's files are listed as DuckDB reads them: ``**`` is recursive there (Python's
    # glob saw only the copy, one level down, and took it for the whole history)
    hist, _ = write_history(tmp_path)
    first = pl.read_parquet(hist / "d1.parquet")
    root, run = tmp_path / "deep", tmp_path / "deep_run"
    (root / "a" / "older").mkdir(parents=True)
    run.mkdir()
    first.write_parquet(root / "a" / "d.parquet")
    shutil.copyfile(root / "a" / "d.parquet", run / "bookings.parquet")
    first.with_columns(pl.col("journal_id") + "0").write_parquet(root / "a" / "older" / "e.parquet")
    con = connect(Ctx(run), str(root / "**" / "*.parquet"))
    hits = run_catalog(con, Settings(), load_catalog()).hits
    assert con.execute("SELECT count(DISTINCT journal_id) FROM bookings").fetchone()[0] == \
        2 * first["journal_id"].n_unique()
    assert not delivery_is_whole_history(con)
    assert hits.height and hits["journal_id"].is_in(first["journal_id"].implode()).all()


def test_manual_entry_is_one_engine_column_that_follows_the_entity_settings() -> None:
    """``manual_entry`` (bookings and journals) is what the rules' manual-source filter was:
    ``manual_sources`` compared in lower case, an empty source counts as manual, the journal's
    source is that of its first line with a source; the history copy carries it."""
    rows = [dict(journal_id="1", line_no=1, amount=100, posting_date="2025-01-10", source="FB50"),
            dict(journal_id="1", line_no=2, amount=-100, posting_date="2025-01-10",
                 source="interface"),
            dict(journal_id="2", line_no=1, amount=100, posting_date="2025-01-10", source=None),
            dict(journal_id="2", line_no=2, amount=-100, posting_date="2025-01-10",
                 source="Interface"),
            dict(journal_id="3", line_no=1, amount=100, posting_date="2025-01-10", source=None)]
    con = duckdb.connect()
    con.register("b", bookings(rows))

    def flags(settings: Settings) -> tuple[list[tuple], list[tuple]]:
        lines = con.execute("SELECT journal_id, line_no, manual_entry FROM bookings "
                            "ORDER BY ALL").fetchall()
        journals = con.execute("SELECT journal_id, manual_entry FROM journals "
                               "ORDER BY ALL").fetchall()
        return lines, journals

    setup_views(con, "b", "b", {}, Settings())
    expected = ([("1", 1, True), ("1", 2, False), ("2", 1, True), ("2", 2, False),
                 ("3", 1, True)], [("1", True), ("2", False), ("3", True)])
    assert flags(Settings()) == expected
    run_catalog(con, Settings(), load_catalog())  # the copy and `_journals` carry it too
    assert con.execute("SELECT count(*) FROM _bookings WHERE manual_entry").fetchall() == [(3,)]
    assert flags(Settings()) == expected
    setup_views(con, "b", "b", {}, Settings(manual_sources=["INTERFACE"]))
    assert flags(Settings()) == ([("1", 1, False), ("1", 2, True), ("2", 1, True),
                                  ("2", 2, True), ("3", 1, True)],
                                 [("1", False), ("2", True), ("3", True)])


def test_a_per_rule_manual_sources_is_refused_where_the_rule_reads_manual_entry() -> None:
    con = duckdb.connect()
    con.register("b", bookings([dict(journal_id="1", line_no=1, amount=100,
                                     posting_date="2025-01-10")]))
    setup_views(con, "b", "b", {}, Settings())
    with pytest.raises(UserError, match=r"\[rules.TIM001\] manual_sources.*manual_entry"):
        run_catalog(con, Settings(rules={"TIM001": {"manual_sources": ["x"]}}), load_catalog())
    # AMT001 still reads $manual_sources itself: its own value is allowed
    run_catalog(con, Settings(rules={"AMT001": {"manual_sources": ["x"]}}), load_catalog())


def _dup_rule(level: str, select: str) -> str:
    """A rule whose query returns every line twice (UNION ALL)."""
    return (GOOD_RULE.replace("level: line", f"level: {level}")
            .replace("SELECT entity, fiscal_year, journal_id, line_no, amount FROM bookings "
                     "WHERE amount > $limit",
                     f"SELECT {select} FROM bookings WHERE amount > $limit UNION ALL "
                     f"SELECT {select} FROM bookings WHERE amount > $limit"))


@pytest.mark.parametrize("check_rows", [0, 10_000])
def test_duplicate_rule_rows_give_one_hit_and_unique_rows_the_same_hits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, check_rows: int) -> None:
    """The ``DISTINCT`` over the rendered hits is left out only where the hit keys are unique:
    a line rule's repeated rows and a journal rule's several lines per journal still give one
    hit each, whether or not the line check runs (``UNIQUE_CHECK_ROWS``)."""
    import detect.rules.runner as runner
    monkeypatch.setattr(runner, "UNIQUE_CHECK_ROWS", check_rows)
    write_rule(tmp_path, "amounts", "TST001", GOOD_RULE)
    write_rule(tmp_path, "amounts", "TST002", _dup_rule(
        "line", "entity, fiscal_year, journal_id, line_no, amount").replace("TST001", "TST002")
        .replace("big-amount", "big-twice"))
    write_rule(tmp_path, "amounts", "TST003", _dup_rule(
        "journal", "entity, fiscal_year, journal_id, line_no, amount").replace(
        "TST001", "TST003").replace("big-amount", "big-journal").replace(
        "{amount}", "{limit}"))
    con = duckdb.connect()
    con.register("b", bookings([dict(journal_id="1", line_no=n, amount=5000,
                                     posting_date="2025-01-10") for n in (1, 2)]))
    setup_views(con, "b", "b", {}, Settings())
    result = run_catalog(con, Settings(), load_catalog(tmp_path))
    per_rule = result.hits_per_rule()
    assert per_rule == {"TST001": 2, "TST002": 2, "TST003": 1}
    once = result.hits.filter(pl.col("rule_id") == "TST001").drop("rule_id")
    twice = result.hits.filter(pl.col("rule_id") == "TST002").drop("rule_id")
    assert once.drop("family", "severity").equals(twice.drop("family", "severity"))
    assert result.history_journals == {"TST001": 1, "TST002": 1, "TST003": 1}


def test_calendar_years_come_from_every_date_column() -> None:
    con = duckdb.connect()
    con.register("b", bookings([dict(journal_id="1", line_no=1, amount=1,
                                     posting_date="2025-06-19", document_date=date(2019, 3, 1),
                                     entered_at=datetime(2030, 1, 2, 10)),
                                dict(journal_id="2", line_no=1, amount=1,
                                     posting_date="1900-01-01")]))
    setup_views(con, "b", "b", {}, Settings())
    years = [r[0] for r in con.execute(
        "SELECT DISTINCT year(date) FROM holidays ORDER BY 1").fetchall()]
    assert years == [2018, 2019, 2020, 2024, 2025, 2026, 2029, 2030, 2031]


def test_catalog_columns_parse_on_the_catalog_connection(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``run_catalog`` parses the queries on its own connection in one statement: the same
    columns as the process-wide parser finds, without opening or using it."""
    from detect.rules import runner

    write_rule(tmp_path, "amounts", "TST001", GOOD_RULE.replace(
        "SELECT entity, fiscal_year, journal_id, line_no, amount FROM bookings",
        "SELECT * FROM bookings"))
    catalog, star = load_catalog(), load_catalog(tmp_path)
    expected = catalog_columns(catalog)
    runner._PREPARSED.clear()

    def no_parser(query: str) -> str:
        raise AssertionError("the process-wide parser was used")

    monkeypatch.setattr(runner, "_parse_tree_text", no_parser)
    assert catalog_columns(catalog, duckdb.connect()) == expected
    assert catalog_columns(star, duckdb.connect())[0] is None


class FakeLoad:
    """``ChildLoad`` as ``ThreadGovernor`` reads it: CPU seconds the other processes used since
    the last look (``busy`` cores over ``step`` seconds of the fake clock)."""

    def __init__(self, step: float = 1.0) -> None:
        self.now, self.step, self.busy = 0.0, step, 0.0

    def clock(self) -> float:
        self.now += self.step
        return self.now

    def __call__(self) -> float:
        return self.busy * self.step


def _threads(con: duckdb.DuckDBPyConnection) -> int:
    return int(con.execute("SELECT current_setting('threads')").fetchall()[0][0])


def test_thread_governor_takes_the_second_thread_only_while_a_core_is_spare(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """One DuckDB thread while the job's other processes keep the other core busy, the
    configured threads again once they leave half a core idle; a look too short to judge
    changes nothing, and a connection configured with one thread never gets more."""
    from detect.rules import runner

    monkeypatch.setattr(runner.os, "sched_getaffinity", lambda pid: {0, 1})
    con = duckdb.connect(config={"threads": 2})
    fake = FakeLoad()
    governor = runner.ThreadGovernor(con, load=fake, clock=fake.clock)
    fake.busy = 0.9  # the model worker on the other core
    governor.adjust()
    assert _threads(con) == 1
    fake.busy = 0.3
    governor.adjust()
    assert _threads(con) == 2
    fake.busy, fake.step = 1.0, 0.01  # too short to judge: wait for more
    governor.adjust()
    assert _threads(con) == 2 and governor.decisions == [1, 2]
    fake.step = 1.0
    governor.adjust()
    assert _threads(con) == 1 and governor.decisions == [1, 2, 1]
    single = duckdb.connect(config={"threads": 1})
    fake.busy = 0.0
    runner.ThreadGovernor(single, load=fake, clock=fake.clock).adjust()
    assert _threads(single) == 1
    # four cores: a busy worker still leaves two idle
    monkeypatch.setattr(runner.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    fake.busy = 1.0
    con.execute("SET threads = 2")
    wide = runner.ThreadGovernor(con, load=fake, clock=fake.clock)
    wide.adjust()
    assert _threads(con) == 2 and wide.decisions == [2]


def test_child_load_counts_the_workers_threads_at_normal_priority_only() -> None:
    """What the worker's threads use counts; a niced thread (GX's part) does not: it yields
    its core to the catalog."""
    import subprocess
    import sys

    from detect.rules.runner import ChildLoad

    child = subprocess.Popen([sys.executable, "-c", (
        "import os, sys\n"
        "sys.stdin.readline()\n"  # busy only after the first look: no race with start-up
        "x = sum(range(3_000_000))\n"
        "print('busy', flush=True); sys.stdin.readline()\n"
        "os.setpriority(os.PRIO_PROCESS, 0, 10)\n"
        "print('niced', flush=True)\n"
        "while True: x += 1\n")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        load = ChildLoad([child.pid])
        assert child.stdout is not None and child.stdin is not None
        child.stdin.write("start\n")
        child.stdin.flush()
        assert child.stdout.readline() == "busy\n"
        assert load() > 0
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline() == "niced\n"
        load()
        deadline = time.process_time() + 0.3
        while time.process_time() < deadline:  # the child spins niced meanwhile
            pass
        assert load() == 0
    finally:
        child.kill()
        child.wait()
    assert ChildLoad([child.pid])() == 0  # ended: nothing to count


def test_the_catalog_gives_the_same_hits_on_one_thread_or_switching_and_restores_threads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``run_catalog`` asks the governor before the copy, ``journals`` and every rule: while
    the worker is busy it runs on one thread, whether it is busy comes and goes between rules;
    the hits are those of the configured threads, and the connection ends as configured."""
    from detect.rules import runner

    hist, run_dir = write_history(tmp_path)
    monkeypatch.setattr(runner.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(runner, "GOVERNOR_WINDOW_S", 0.0)
    results = {}
    for name, busy in (("idle", [0.0]), ("busy", [1e9]), ("switching", [1e9, 0.0])):
        looks = iter(range(10_000))

        def load(busy: list[float] = busy, looks=looks) -> float:
            return busy[next(looks) % len(busy)]

        monkeypatch.setattr(runner, "ChildLoad", lambda load=load: load)
        con = connect(Ctx(run_dir), str(hist / "*.parquet"), threads=2)
        results[name] = run_catalog(con, Settings(), load_catalog(), delivery_only=False)
        assert _threads(con) == 2
    assert set(results["idle"].threads.values()) == {2}
    assert set(results["busy"].threads.values()) == {1}
    assert set(results["switching"].threads.values()) == {1, 2}
    assert list(results["busy"].threads) == ["copy", "journals", *results["busy"].ran]
    assert results["busy"].summary()["threads"] == results["busy"].threads
    for name in ("busy", "switching"):
        assert results[name].hits.equals(results["idle"].hits)
    assert results["idle"].hits.height
