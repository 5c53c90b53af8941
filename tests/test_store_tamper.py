"""Tampering with any stored decision event is detected by verify_log (and the CLI)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest

from detect.cli import main
from detect.store import ReviewStore, item_id


@pytest.fixture
def store(tmp_path: Path) -> ReviewStore:
    store = ReviewStore.for_data_dir(tmp_path)
    journals = [f"J{i}" for i in range(1, 4)]
    frame = pl.DataFrame({"entity": ["M"] * 3, "fiscal_year": [2024] * 3, "journal_id": journals,
                          "rule_ids": ["PAY001"] * 3})
    store.publish_run(SimpleNamespace(entity="M", run_id="r1", run_dir=tmp_path / "r1",
                                      rescore_history=False), frame)
    for n in range(6):  # events 1..6, spread over three items
        store.record_decision(item_id("M", 2024, journals[n % 3]), "confirmed",
                              f"Kommentar {n}", f"user{n}")
    assert store.verify_log().ok
    return store


def sql(store: ReviewStore, statement: str) -> None:
    with store.engine.begin() as conn:
        conn.exec_driver_sql(statement)


@pytest.mark.parametrize("statement, first", [
    ("UPDATE decisions SET comment = 'harmlos' WHERE id = 3", 3),
    ("UPDATE decisions SET status = 'no_finding' WHERE id = 1", 1),
    ("UPDATE decisions SET user = 'mallory' WHERE id = 6", 6),
    ("UPDATE decisions SET ts = '2020-01-01T00:00:00.000000+00:00' WHERE id = 2", 2),
    ("UPDATE decisions SET item_id = 'ffffffffffffffff' WHERE id = 4", 4),
])
def test_changed_event_is_detected(store: ReviewStore, statement: str, first: int) -> None:
    sql(store, statement)
    result = store.verify_log()
    assert not result.ok and result.first_broken == first
    assert "content does not match its hash (changed)" in result.message


def test_deleted_event_is_detected(store: ReviewStore) -> None:
    sql(store, "DELETE FROM decisions WHERE id = 4")
    result = store.verify_log()
    assert (result.ok, result.first_broken) == (False, 4)
    assert "event 4 is missing" in result.message


def test_deleted_and_renumbered_events_are_detected(store: ReviewStore) -> None:
    sql(store, "DELETE FROM decisions WHERE id = 2")
    sql(store, "UPDATE decisions SET id = id - 1 WHERE id > 2")
    result = store.verify_log()
    assert (result.ok, result.first_broken) == (False, 2)


def test_deleting_the_newest_event_is_detected(store: ReviewStore) -> None:
    sql(store, "DELETE FROM decisions WHERE id = 6")
    result = store.verify_log()
    assert (result.ok, result.first_broken) == (False, 6)
    assert "newest events deleted" in result.message


def test_reordered_events_are_detected(store: ReviewStore) -> None:
    sql(store, "UPDATE decisions SET id = 100 WHERE id = 2")
    sql(store, "UPDATE decisions SET id = 2 WHERE id = 5")
    sql(store, "UPDATE decisions SET id = 5 WHERE id = 100")
    result = store.verify_log()
    assert (result.ok, result.first_broken) == (False, 2)
    assert "does not link" in result.message


def test_forged_event_with_recomputed_hash_is_detected(store: ReviewStore) -> None:
    # a forger who recomputes the hash of the changed event still breaks the next link
    from detect.store import event_hash

    with store.engine.begin() as conn:
        row = dict(conn.exec_driver_sql("SELECT * FROM decisions WHERE id = 3").mappings().one())
        row["comment"] = "geschönt"
        conn.exec_driver_sql("UPDATE decisions SET comment = ?, hash = ? WHERE id = 3",
                             (row["comment"], event_hash(row)))
    result = store.verify_log()
    assert (result.ok, result.first_broken) == (False, 4)


def test_cli_verify_log_exit_codes(store: ReviewStore, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify-log", "--data-dir", str(tmp_path)]) == 0
    assert "decision log intact: 6 events" in capsys.readouterr().out
    sql(store, "UPDATE decisions SET comment = 'x' WHERE id = 5")
    assert main(["verify-log", "--data-dir", str(tmp_path)]) == 1
    assert "BROKEN at event 5" in capsys.readouterr().out


def test_consistently_rewritten_chain_is_caught_by_run_anchors(store: ReviewStore,
                                                               tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]
                                                               ) -> None:
    import json

    from detect.store import anchors_from_runs, event_hash

    # a run published after event 6 recorded the head in its manifest (outside the database)
    run_dir = tmp_path / "runs" / "r2"
    run_dir.mkdir(parents=True)
    head = store.verify_log().head_hash
    (run_dir / "manifest.json").write_text(json.dumps({"findings": {"log_head": head}}))
    assert anchors_from_runs(tmp_path) == {"r2": head}
    # someone with database access rewrites event 2 and recomputes every later hash and the head
    with store.engine.begin() as conn:
        rows = [dict(r) for r in conn.exec_driver_sql(
            "SELECT * FROM decisions ORDER BY id").mappings()]
        rows[1]["comment"] = "umgeschrieben"
        prev = rows[0]["hash"]
        for row in rows[1:]:
            row["prev_hash"] = prev
            row["hash"] = prev = event_hash(row)
            conn.exec_driver_sql("UPDATE decisions SET comment = ?, prev_hash = ?, hash = ? "
                                 "WHERE id = ?", (row["comment"], row["prev_hash"], row["hash"],
                                                  row["id"]))
        conn.exec_driver_sql("UPDATE log_head SET last_hash = ?", (prev,))
    assert store.verify_log().ok  # the chain alone cannot tell (documented limit)
    result = store.verify_log(anchors=anchors_from_runs(tmp_path))
    assert not result.ok and "run r2 recorded the head" in result.message
    assert main(["verify-log", "--data-dir", str(tmp_path)]) == 1
    assert "the log was rewritten" in capsys.readouterr().out


def test_kept_assignee_of_a_bulk_decision_is_covered_by_the_chain(
        store: ReviewStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A bulk decision records each item's kept assignee in its event; the hash covers it."""
    j1, j2 = item_id("M", 2024, "J1"), item_id("M", 2024, "J2")
    store.record_decision(j1, "clarify", "an Anna", "chef", assignee="anna")        # event 7
    assert store.record_decisions([j1, j2], "clarify", "Sammel", "chef") == 2       # 8, 9
    assert [e["assignee"] for e in store.history(j1)][-2:] == ["anna", "anna"]
    assert main(["verify-log", "--data-dir", str(tmp_path)]) == 0
    assert "decision log intact: 9 events" in capsys.readouterr().out
    sql(store, "UPDATE decisions SET assignee = NULL WHERE id = 8")
    result = store.verify_log()
    assert (result.ok, result.first_broken) == (False, 8)
