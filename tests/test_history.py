"""Booking history: deltas add, re-exports replace, merges are idempotent and atomic."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest

from detect import history
from detect.runlog import StepLog
from detect.schema import BOOKING_SCHEMA, conform


def bookings(rows: list[tuple[str, int, str, int, str]],
             entity: str = "Musterstadt") -> pl.DataFrame:
    """rows: (file, fiscal_year, journal_id, line_no, amount)."""
    frame = pl.DataFrame(
        {"source_file": [r[0] for r in rows], "fiscal_year": [r[1] for r in rows],
         "journal_id": [r[2] for r in rows], "line_no": [r[3] for r in rows],
         "amount": [Decimal(r[4]) for r in rows], "entity": [entity] * len(rows),
         "posting_date": [date(r[1], 1, 15) for r in rows], "gl_account": ["4711"] * len(rows),
         "source_line": list(range(2, len(rows) + 2))},
        schema_overrides={"amount": pl.Decimal(18, 2)})
    return conform(frame.lazy()).collect()


def run(tmp_path: Path, run_id: str, frame: pl.DataFrame, checkpoint=None) -> str:
    path = tmp_path / f"{run_id}.parquet"
    frame.write_parquet(path)
    ctx = SimpleNamespace(data_dir=tmp_path / "var", run_id=run_id, entity="Musterstadt",
                          log=StepLog(quiet=True))
    return history.merge(ctx, path, checkpoint=checkpoint)


def read(glob: str) -> pl.DataFrame:
    return pl.read_parquet(glob).sort("fiscal_year", "journal_id", "line_no")


def test_delta_adds_and_reexport_replaces(tmp_path: Path) -> None:
    glob = run(tmp_path, "r1", bookings([("a.csv", 2024, "J1", 1, "100.00"),
                                         ("a.csv", 2024, "J1", 2, "-100.00"),
                                         ("a.csv", 2023, "J0", 1, "5.00")]))
    assert glob == str(tmp_path / "var/history/Musterstadt/*/*.parquet")
    assert sorted(p.name for p in (tmp_path / "var/history/Musterstadt").iterdir()) == [
        "fiscal_year=2023", "fiscal_year=2024"]
    # delta: a new journal
    run(tmp_path, "r2", bookings([("b.csv", 2024, "J2", 1, "7.50")]))
    # re-export of 2024: J1 corrected, J2 unchanged
    run(tmp_path, "r3", bookings([("c.csv", 2024, "J1", 1, "120.00"),
                                  ("c.csv", 2024, "J1", 2, "-120.00"),
                                  ("c.csv", 2024, "J2", 1, "7.50")]))
    out = read(glob)
    assert out.schema == BOOKING_SCHEMA
    assert out.select("fiscal_year", "journal_id", "line_no", "amount", "source_file").rows() == [
        (2023, "J0", 1, Decimal("5.00"), "a.csv"),
        (2024, "J1", 1, Decimal("120.00"), "c.csv"),
        (2024, "J1", 2, Decimal("-120.00"), "c.csv"),
        (2024, "J2", 1, Decimal("7.50"), "c.csv")]
    assert history.stats(glob) == {
        "2023": {"lines": 1, "journals": 1}, "2024": {"lines": 3, "journals": 2}}


def test_stats_follow_the_entity_in_the_data_not_the_run_label(tmp_path: Path) -> None:
    """A run without --entity is labelled "default" while the rows say "Musterstadt": the
    manifest's per-year counts must still describe the history the run merged into."""
    path = tmp_path / "d.parquet"
    bookings([("a.csv", 2024, "J1", 1, "1.00"), ("a.csv", 2024, "J2", 1, "2.00")]).write_parquet(
        path)
    ctx = SimpleNamespace(data_dir=tmp_path / "var", run_id="r1", entity="default",
                          log=StepLog(quiet=True))
    glob = history.merge(ctx, path)
    assert history.stats(glob) == {"2024": {"lines": 2, "journals": 2}}
    assert history.stats(history.history_glob(tmp_path / "var", "other")) == {}


def test_merging_the_same_delivery_twice_is_a_no_op(tmp_path: Path) -> None:
    frame = bookings([("a.csv", 2024, f"J{i}", 1, f"{i}.00") for i in range(50)])
    glob = run(tmp_path, "r1", frame)
    part = tmp_path / "var/history/Musterstadt/fiscal_year=2024/data.parquet"
    first = part.read_bytes()
    run(tmp_path, "r2", frame)
    assert part.read_bytes() == first
    assert read(glob).height == 50
    # a partial delta (kept lines streamed with the delivery, not a file copy) twice, too
    delta = bookings([("b.csv", 2024, f"J{i}", 1, "9.00") for i in (3, 7, 50)])
    run(tmp_path, "r3", delta)
    merged = part.read_bytes()
    run(tmp_path, "r4", delta)
    assert part.read_bytes() == merged != first
    assert read(glob).height == 51


def test_duplicate_key_in_one_delivery_keeps_the_later_row(tmp_path: Path) -> None:
    glob = run(tmp_path, "r1", bookings([("a.csv", 2024, "J1", 1, "1.00"),
                                         ("a.csv", 2024, "J1", 1, "2.00")]))
    assert read(glob)["amount"].to_list() == [Decimal("2.00")]


def test_kill_before_commit_discards_and_after_commit_completes(tmp_path: Path) -> None:
    base = bookings([("a.csv", 2023, "J0", 1, "1.00"), ("a.csv", 2024, "J1", 1, "1.00")])
    glob = run(tmp_path, "r1", base)
    before = read(glob)
    update = bookings([("b.csv", 2023, "J0", 1, "9.00"), ("b.csv", 2024, "J1", 1, "9.00")])

    class Killed(BaseException):
        pass

    def kill_at(name: str):
        def checkpoint(step: str) -> None:
            if step == name:
                raise Killed(step)
        return checkpoint

    # another entity's merge in progress is not touched by Musterstadt's recovery
    other = tmp_path / "var/history/Nebenstadt/fiscal_year=2024/data.parquet.Nebenstadt.x.new"
    other.parent.mkdir(parents=True)
    other.write_bytes(b"in progress")
    # killed after writing one partition: nothing is visible, recovery discards the file
    with pytest.raises(Killed):
        run(tmp_path, "r2", update, kill_at("history_partition_written"))
    assert read(glob).equals(before)
    assert list((tmp_path / "var/history/Musterstadt").glob("*/*.new"))
    assert history.recover(tmp_path / "var", "Musterstadt") == [
        "history: discarded 1 uncommitted partition file(s)"]
    assert not list((tmp_path / "var/history/Musterstadt").glob("*/*.new"))
    # killed right after the commit point: recovery finishes both swaps
    with pytest.raises(Killed):
        run(tmp_path, "r3", update, kill_at("history_committed"))
    assert history.recover(tmp_path / "var", "Musterstadt") == [
        "history: completed an interrupted merge of 2 partition(s)"]
    assert read(glob)["amount"].to_list() == [Decimal("9.00"), Decimal("9.00")]
    assert other.read_bytes() == b"in progress"
    assert not list((tmp_path / "var/history").glob("MERGE*"))


def test_entities_get_their_own_folders(tmp_path: Path) -> None:
    assert history.entity_dirname("Musterstadt") == "Musterstadt"
    odd = history.entity_dirname("Stadt Köln/Ost")
    assert odd.startswith("Stadt_Köln_Ost-") and "/" not in odd
    assert history.entity_dirname("../x") != history.entity_dirname("__x")
    two = pl.concat([bookings([("a.csv", 2024, "J1", 1, "1.00")], entity="A"),
                     bookings([("a.csv", 2024, "J1", 1, "2.00")], entity="B")])
    glob = run(tmp_path, "r1", two)
    assert glob == str(tmp_path / "var/history/*/*/*.parquet")
    assert read(glob).sort("entity")["amount"].to_list() == [Decimal("1.00"), Decimal("2.00")]


def test_merge_of_a_large_history_is_fast(tmp_path: Path) -> None:
    import time

    n = 200_000
    big = conform(pl.DataFrame({
        "entity": ["Musterstadt"] * n, "fiscal_year": [2024] * n,
        "journal_id": [f"J{i // 4}" for i in range(n)], "line_no": [i % 4 for i in range(n)],
        "amount": [Decimal("1.00")] * n, "source_file": ["big.csv"] * n,
        "source_line": list(range(n)), "gl_account": ["4711"] * n,
        "posting_date": [date(2024, 1, 1)] * n}).lazy()).collect()
    glob = run(tmp_path, "r1", big)
    delta = big.slice(0, 1000).with_columns(pl.lit(Decimal("2.00")).cast(pl.Decimal(18, 2))
                                            .alias("amount"))
    start = time.perf_counter()
    run(tmp_path, "r2", delta)
    assert time.perf_counter() - start < 5
    out = pl.scan_parquet(glob).group_by("amount").len().sort("amount").collect()
    assert out.rows() == [(Decimal("1.00"), n - 1000), (Decimal("2.00"), 1000)]


def test_manifest_stats_after_ranking_preparation_even_when_it_failed(tmp_path) -> None:
    """With the model worker the manifest's statistics run in the early thread after ranking's
    preparation (``pipeline._manifest_stats``): they wait for it, and its failure (raised where
    ranking takes the result) does not cost the manifest its statistics."""
    from concurrent.futures import Future

    import polars as pl

    from detect import history, pipeline

    clean = tmp_path / "bookings.parquet"
    pl.DataFrame({"source_file": ["a.csv"] * 3, "entity": ["E"] * 3,
                  "fiscal_year": [2025, 2025, 2024], "journal_id": ["J1", "J1", "J2"],
                  "amount": [5.0, -5.0, 2.0]}).write_parquet(clean)
    failed: Future[object] = Future()
    failed.set_exception(RuntimeError("worker died"))
    per_input, years = pipeline._manifest_stats(failed, clean, str(clean))
    assert per_input == pipeline.input_stats(clean)
    assert per_input[0]["lines"] == 3 and per_input[0]["journals"] == 2
    assert years == history.stats(str(clean)) == {"2024": {"lines": 1, "journals": 1},
                                                  "2025": {"lines": 2, "journals": 1}}
