"""Review store: migrations, publish semantics, decisions, suppressions, users."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import polars as pl
import pytest
import sqlalchemy as sa

from detect.errors import UserError
from detect.store import MIGRATIONS, ReviewStore, StoreError, item_id


def findings(journals: list[str], entity: str = "Musterstadt", year: int = 2024,
             rules: str = "PAY001", vendor: str = "V1", amount: str = "100.00") -> pl.DataFrame:
    n = len(journals)
    return pl.DataFrame({
        "item_id": [item_id(entity, year, j) for j in journals],
        "entity": [entity] * n, "fiscal_year": [year] * n, "journal_id": journals,
        "line_no": list(range(1, n + 1)), "posting_date": [date(year, 3, 1)] * n,
        "gl_account": ["4711"] * n, "amount": [Decimal(amount)] * n,
        "risk_score": [90.0 - i for i in range(n)], "rank": list(range(1, n + 1)),
        "rule_ids": [rules] * n, "vendor_id": [vendor] * n, "reasons": ["Grund\nzwei"] * n,
    }, schema_overrides={"amount": pl.Decimal(18, 2), "fiscal_year": pl.Int32,
                         "line_no": pl.Int32})


def ctx(tmp_path: Path, run_id: str, entity: str = "Musterstadt",
        rescore: bool = False) -> SimpleNamespace:
    return SimpleNamespace(entity=entity, run_id=run_id, run_dir=tmp_path / run_id,
                           rescore_history=rescore)


def scope(journals: list[str], entity: str = "Musterstadt", year: int = 2024) -> pl.DataFrame:
    return pl.DataFrame({"entity": [entity] * len(journals), "fiscal_year": [year] * len(journals),
                         "journal_id": journals})


def snapshot(store: ReviewStore, table: str) -> list[tuple]:
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY 1")]


@pytest.fixture
def store(tmp_path: Path) -> ReviewStore:
    return ReviewStore.for_data_dir(tmp_path)


def test_sqlite_file_wal_and_migrations(tmp_path: Path, store: ReviewStore) -> None:
    assert (tmp_path / "review.sqlite").exists()
    assert store.schema_version() == MIGRATIONS[-1][0] == 3
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 60000
        versions = conn.exec_driver_sql("SELECT version FROM schema_version ORDER BY 1").all()
    assert [v[0] for v in versions] == [1, 2, 3]
    assert ReviewStore.for_data_dir(tmp_path).migrate() == 3  # reopening applies nothing


def item_indexes(store: ReviewStore) -> set[str]:
    with store.engine.connect() as conn:
        return {r[0] for r in conn.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'items'")}


def test_migration_3_drops_the_redundant_entity_index(tmp_path: Path) -> None:
    """A store of schema 2 (with ``ix_items_entity``) loses the index when opened; a new store
    never has it. The two indexes that start with ``entity`` stay, and lookups by entity use
    one of them."""
    import sqlalchemy as sa

    old = ReviewStore.for_data_dir(tmp_path)
    with old.engine.begin() as conn:  # back to schema 2 as it was released
        conn.exec_driver_sql("CREATE INDEX ix_items_entity ON items (entity)")
        conn.exec_driver_sql("DELETE FROM schema_version WHERE version = 3")
    old.publish_run(ctx(tmp_path, "r1"), findings(["J1", "J2"]))
    assert "ix_items_entity" in item_indexes(old)
    assert ReviewStore.for_data_dir(tmp_path).migrate() == 3
    assert "ix_items_entity" not in item_indexes(old)
    assert "ix_items_flagged" in item_indexes(old)  # uq_items_journal: an sqlite_autoindex
    with old.engine.connect() as conn:
        plan = " ".join(str(r[-1]) for r in conn.execute(
            sa.text("EXPLAIN QUERY PLAN SELECT item_id FROM items WHERE entity = 'Musterstadt'")))
    assert "USING" in plan and "INDEX" in plan, plan  # an index, not a full scan
    assert old.items().height == 2
    assert "ix_items_entity" not in item_indexes(ReviewStore.for_data_dir(tmp_path / "new"))


def test_newer_schema_is_refused(tmp_path: Path, store: ReviewStore) -> None:
    with store.engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO schema_version VALUES (99, 'future', 'x')")
    with pytest.raises(UserError, match="schema version 99, newer"):
        store.migrate()


def test_publish_new_still_and_no_longer_flagged(tmp_path: Path, store: ReviewStore) -> None:
    first = store.publish_run(ctx(tmp_path, "r1"), findings(["J1", "J2", "J3"]))
    assert first["headline"][0] == ("published 3 items: 3 new, 0 still flagged, "
                                    "0 no longer flagged, 0 suppressed")
    j1 = item_id("Musterstadt", 2024, "J1")
    store.record_decision(j1, "confirmed", "Doppelzahlung bestätigt", "anna")
    # the next delivery re-exports J1..J3: J3 no longer flagged, J4 new
    second = store.publish_run(ctx(tmp_path, "r2"), findings(["J1", "J2", "J4"]),
                               scope=scope(["J1", "J2", "J3", "J4"]))
    assert (second["new"], second["still_flagged"], second["no_longer_flagged"]) == (1, 2, 1)
    listed = store.items()
    assert sorted(listed["journal_id"]) == ["J1", "J2", "J4"]
    j1_row = listed.filter(pl.col("item_id") == j1).row(0, named=True)
    assert j1_row["status"] == "confirmed" and j1_row["last_comment"] == "Doppelzahlung bestätigt"
    assert j1_row["first_run"] == "r1" and j1_row["amount"] == Decimal("100.00")
    assert j1_row["posting_date"] == date(2024, 3, 1)
    everything = store.items(include_unflagged=True)
    j3 = everything.filter(pl.col("journal_id") == "J3").row(0, named=True)
    assert j3["flagged"] is False and j3["last_run"] == "r2"
    assert len(store.history(j1)) == 1  # history kept


def test_delta_does_not_unflag_items_outside_its_scope(tmp_path: Path,
                                                       store: ReviewStore) -> None:
    store.publish_run(ctx(tmp_path, "r1"), findings(["J1", "J2"]))
    # a delta with only J5 in it: J1 and J2 were not looked at, so they stay flagged
    counts = store.publish_run(ctx(tmp_path, "r2"), findings(["J5"]), scope=scope(["J5"]))
    assert (counts["new"], counts["no_longer_flagged"]) == (1, 0)
    assert sorted(store.items()["journal_id"]) == ["J1", "J2", "J5"]
    # default scope: the delivery's bookings.parquet in the run folder
    run_dir = tmp_path / "r3"
    run_dir.mkdir()
    scope(["J2"]).with_columns(pl.col("fiscal_year").cast(pl.Int32)).write_parquet(
        run_dir / "bookings.parquet")
    counts = store.publish_run(ctx(tmp_path, "r3"), findings([]))
    assert counts["no_longer_flagged"] == 1
    assert sorted(store.items()["journal_id"]) == ["J1", "J5"]
    # rescore_history: everything of the entity is in scope
    counts = store.publish_run(ctx(tmp_path, "r4", rescore=True), findings(["J5"]))
    assert counts["no_longer_flagged"] == 1 and sorted(store.items()["journal_id"]) == ["J5"]


def test_rerunning_the_same_delivery_changes_nothing(tmp_path: Path,
                                                     store: ReviewStore) -> None:
    store.publish_run(ctx(tmp_path, "r1"), findings(["J1", "J2"]))
    store.record_decision(item_id("Musterstadt", 2024, "J2"), "clarify", "", "bernd",
                          assignee="anna")
    before = snapshot(store, "items"), snapshot(store, "decisions")
    for run in ("r1", "r2"):
        counts = store.publish_run(ctx(tmp_path, run), findings(["J1", "J2"]))
        assert (counts["new"], counts["changed"], counts["no_longer_flagged"]) == (0, 0, 0)
        assert (snapshot(store, "items"), snapshot(store, "decisions")) == before


def test_new_scores_alone_do_not_mark_a_decided_item_changed(tmp_path: Path,
                                                             store: ReviewStore) -> None:
    store.publish_run(ctx(tmp_path, "r1"), findings(["J1"]))
    j1 = item_id("Musterstadt", 2024, "J1")
    store.record_decision(j1, "confirmed", "Doppelzahlung", "anna")
    refit = findings(["J1"]).with_columns(pl.lit(71.5).alias("risk_score"),
                                          pl.lit("Grund\nanders formuliert").alias("reasons"))
    store.publish_run(ctx(tmp_path, "r2"), refit)
    row = store.items().row(0, named=True)
    assert row["risk_score"] == 71.5                       # the item shows the new score
    assert row["changed_since_decision"] is False          # but the evidence is the same


def test_changed_content_after_a_decision_is_flagged(tmp_path: Path, store: ReviewStore) -> None:
    store.publish_run(ctx(tmp_path, "r1"), findings(["J1"]))
    j1 = item_id("Musterstadt", 2024, "J1")
    store.record_decision(j1, "no_finding", "Abschlag laut Vertrag", "anna")
    counts = store.publish_run(ctx(tmp_path, "r2"), findings(["J1"], amount="250.00"))
    assert counts["changed"] == 1
    row = store.items().row(0, named=True)
    assert row["amount"] == Decimal("250.00") and row["changed_since_decision"] is True
    assert row["status"] == "no_finding" and row["last_run"] == "r2"


def test_publish_is_one_transaction(tmp_path: Path, store: ReviewStore) -> None:
    store.publish_run(ctx(tmp_path, "r1"), findings(["J1"]))
    bad = findings(["J2"]).with_columns(pl.lit(None, dtype=pl.String).alias("journal_id"))
    with pytest.raises(StoreError, match="1 finding.s. without fiscal_year or journal_id"):
        store.publish_run(ctx(tmp_path, "r2"), pl.concat([findings(["J3"]), bad]))
    assert sorted(store.items()["journal_id"]) == ["J1"]
    assert [r["id"] for r in store.list_runs()] == ["r1"]


def test_decisions_validate_and_corrections_append(tmp_path: Path, store: ReviewStore) -> None:
    store.publish_run(ctx(tmp_path, "r1"), findings(["J1", "J2", "J3"]))
    j1 = item_id("Musterstadt", 2024, "J1")
    with pytest.raises(UserError, match="unknown status 'done'"):
        store.record_decision(j1, "done", "x", "anna")
    for status in ("confirmed", "no_finding"):
        with pytest.raises(UserError, match=f"comment is required for the status {status}"):
            store.record_decision(j1, status, "  ", "anna")
    with pytest.raises(UserError, match="unknown review item 'nope'"):
        store.record_decision("nope", "clarify", "", "anna")
    with pytest.raises(UserError, match="needs a user"):
        store.record_decision(j1, "clarify", "", "")
    first = store.record_decision(j1, "confirmed", "bestätigt", "anna")
    second = store.record_decision(j1, "no_finding", "Korrektur: Abschlag", "bernd")
    assert (first, second) == (1, 2)
    events = store.history(j1)
    assert [e["status"] for e in events] == ["confirmed", "no_finding"]
    assert events[1]["prev_hash"] == events[0]["hash"] and events[0]["run_id"] == "r1"
    assert store.get_item(j1)["status"] == "no_finding"
    others = [item_id("Musterstadt", 2024, j) for j in ("J2", "J3")]
    assert store.record_decisions(others, "clarify", "Rückfrage Kämmerei", "carla") == 2
    log = store.decision_log()
    assert log["id"].to_list() == [1, 2, 3, 4]
    assert log["journal_id"].to_list() == ["J1", "J1", "J2", "J3"]
    assert store.verify_log().ok and store.verify_log().events == 4


def test_suppression_lifecycle(tmp_path: Path, store: ReviewStore) -> None:
    store.publish_run(ctx(tmp_path, "r1"), pl.concat([
        findings(["J1", "J2"], vendor="V1"), findings(["J3"], vendor="V2"),
        findings(["J4"], vendor="V1", rules="PAY001,TIM002")]))
    j1 = item_id("Musterstadt", 2024, "J1")
    with pytest.raises(UserError, match="must be narrow"):
        store.record_decision(j1, "no_finding", "Abschläge", "anna",
                              suppression={"rule_id": "PAY001"})
    with pytest.raises(UserError, match="only be added with the status no_finding"):
        store.record_decision(j1, "confirmed", "x", "anna",
                              suppression={"rule_id": "PAY001", "vendor_id": "V1"})
    store.record_decision(j1, "no_finding", "Abschlagszahlungen laut Vertrag", "anna",
                          suppression={"rule_id": "PAY001", "vendor_id": "V1"})
    [supp] = store.list_suppressions()
    assert supp["scope"] == {"rule_id": "PAY001", "vendor_id": "V1"}
    assert supp["created_by"] == "anna" and supp["item_id"] == j1
    assert store.history(j1)[0]["suppression_id"] == supp["id"]
    counts = store.publish_run(ctx(tmp_path, "r2"), pl.concat([
        findings(["J1", "J2"], vendor="V1"), findings(["J3"], vendor="V2"),
        findings(["J4"], vendor="V1", rules="PAY001,TIM002")]))
    # J1 and J2 suppressed; J3 other vendor; J4 has a second, unsuppressed rule
    assert counts["suppressed"] == 2
    assert counts["headline"][1].startswith(f"suppression {supp['id']} (PAY001; vendor_id=V1) "
                                            "by anna: 2 item(s)")
    listed = store.items()
    assert sorted(listed.filter("suppressed")["journal_id"]) == ["J1", "J2"]
    store.revoke_suppression(supp["id"], "bernd", "Vertrag ausgelaufen")
    assert store.list_suppressions() == []
    [revoked] = store.list_suppressions(include_revoked=True)
    assert revoked["revoked_by"] == "bernd" and revoked["active"] is False
    assert store.items().filter("suppressed").height == 0
    with pytest.raises(UserError, match="already revoked"):
        store.revoke_suppression(supp["id"], "bernd", "again")
    counts = store.publish_run(ctx(tmp_path, "r3"), findings(["J1", "J2"], vendor="V1"),
                               scope=scope(["J1", "J2"]))
    assert counts["suppressed"] == 0


def test_findings_of_several_entities(tmp_path: Path, store: ReviewStore) -> None:
    # settings entity "default", the data names its business units
    both = pl.concat([findings(["J1"], entity="A"), findings(["J1", "J2"], entity="B")])
    counts = store.publish_run(ctx(tmp_path, "r1", entity="default"), both)
    assert counts["new"] == 3
    counts = store.publish_run(ctx(tmp_path, "r2", entity="default"), findings(["J1"], entity="B"),
                               scope=scope(["J1", "J2"], entity="B"))
    assert counts["no_longer_flagged"] == 1
    assert sorted(store.items().select("entity", "journal_id").rows()) == [("A", "J1"), ("B", "J1")]
    assert store.items(entity="A").height == 1


def test_users_and_access_log(store: ReviewStore) -> None:
    store.add_user("anna", "$argon2id$x", "auditor", display_name="Anna Ärger")
    with pytest.raises(UserError, match="exists already"):
        store.add_user("anna", "h", "auditor")
    with pytest.raises(UserError, match="unknown role 'boss'"):
        store.add_user("bob", "h", "boss")
    store.set_role("anna", "manager")
    store.disable_user("anna")
    user = store.get_user("anna")
    assert (user["role"], user["active"], user["display_name"]) == ("manager", False, "Anna Ärger")
    assert store.get_user("nobody") is None
    with pytest.raises(UserError, match="no user 'nobody'"):
        store.set_role("nobody", "admin")
    store.log_access("anna", "login", "ok")
    store.log_access("anna", "reveal", "IBAN of V1")
    assert [a["action"] for a in store.access_log()] == ["reveal", "login"]


def test_runs_and_deliveries(tmp_path: Path, store: ReviewStore) -> None:
    store.start_run("r1", "Musterstadt", delivery_hash="abc")
    store.fail_run("r1", "validate: file is empty")
    store.publish_run(ctx(tmp_path, "r2"), findings(["J1"]), delivery_hash="def",
                      manifest={"outcome": "published"})
    runs = {r["id"]: r for r in store.list_runs()}
    assert runs["r1"]["outcome"] == "failed" and runs["r1"]["error"] == "validate: file is empty"
    assert runs["r2"]["outcome"] == "published" and runs["r2"]["counts"]["new"] == 1
    assert store.delivery_run("Musterstadt", "def") == "r2"
    assert store.delivery_run("Musterstadt", "abc") is None
    assert store.delivery_run("Nebenstadt", "def") is None
    assert store.latest_published_run("Musterstadt") == "r2"


def test_a_manifest_function_runs_inside_the_publish_after_the_items(
        tmp_path: Path, store: ReviewStore) -> None:
    """The pipeline computes its manifest while the items are inserted: ``publish_run`` calls
    it once the items are written, in the same transaction (an error in it publishes nothing)."""
    seen: list[int] = []

    def manifest() -> dict:
        with store.engine.connect() as other:  # the items are not committed yet
            seen.append(other.exec_driver_sql("SELECT count(*) FROM items").scalar())
        return {"outcome": "publishing", "n": 7}

    store.publish_run(ctx(tmp_path, "r1"), findings(["J1", "J2"]), manifest=manifest)
    assert seen == [0]
    [run] = store.list_runs()
    assert run["manifest"]["n"] == 7 and len(store.items()) == 2

    def broken() -> dict:
        raise RuntimeError("manifest failed")

    with pytest.raises(RuntimeError, match="manifest failed"):
        store.publish_run(ctx(tmp_path, "r2"), findings(["J3"]), manifest=broken)
    assert sorted(store.items()["journal_id"]) == ["J1", "J2"]
    assert [r["id"] for r in store.list_runs()] == ["r1"]


def test_sqlalchemy_version() -> None:
    assert int(sa.__version__.split(".")[0]) >= 2


def test_cli_suppressions_list_and_revoke(tmp_path: Path, store: ReviewStore,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from detect.cli import main

    sid = store.add_suppression("PAY001", {"vendor_id": "V1", "gl_account": "4711"}, "anna",
                                "Abschläge laut Vertrag")
    assert main(["suppressions", "list", "--data-dir", str(tmp_path)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{sid}  PAY001  gl_account=4711, vendor_id=V1  by anna ")
    assert line.endswith("(active): Abschläge laut Vertrag")
    assert main(["suppressions", "revoke", sid, "--reason", "ausgelaufen", "--user", "bernd",
                 "--data-dir", str(tmp_path)]) == 0
    assert main(["suppressions", "list", "--all", "--data-dir", str(tmp_path)]) == 0
    assert "(revoked by bernd)" in capsys.readouterr().out
    assert main(["suppressions", "revoke", "nope", "--reason", "x",
                 "--data-dir", str(tmp_path)]) == 2
    assert "no suppression 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("run_id", ["r2", "r2'\\'; --", "r%2%%s"])
def test_run_constants_are_stored_exactly(tmp_path: Path, store: ReviewStore, run_id: str) -> None:
    """The run id, status and flags of a publish (bound, whatever the run id holds: quotes,
    backslashes, '%'): new, updated and unflagged items carry them exactly."""
    store.publish_run(ctx(tmp_path, "r1"), findings(["J1", "J2", "J3"]))
    changed = findings(["J1", "J4"]).with_columns(pl.lit(99.0).alias("risk_score"))
    store.publish_run(ctx(tmp_path, run_id), changed, scope=scope(["J1", "J2", "J4"]))
    rows = {r["journal_id"]: r for r in store.items(include_unflagged=True).iter_rows(named=True)}
    assert (rows["J4"]["first_run"], rows["J4"]["last_run"]) == (run_id, run_id)
    assert rows["J4"]["flagged"] is True and rows["J4"]["status"] == "open"
    assert rows["J4"]["changed_since_decision"] is False
    assert (rows["J1"]["first_run"], rows["J1"]["last_run"], rows["J1"]["flagged"]) == (
        "r1", run_id, True)
    assert (rows["J2"]["last_run"], rows["J2"]["flagged"]) == (run_id, False)
    assert (rows["J3"]["last_run"], rows["J3"]["flagged"]) == ("r1", True)  # outside the scope


def test_decisions_keep_each_items_assignee_unless_one_is_given(tmp_path: Path,
                                                                store: ReviewStore) -> None:
    """A decision without an assignee (bulk or single) must not undo the work allocation.

    The kept assignee is written into the event too, so the hash chain covers the state as it
    is, and an explicit name or ``None`` still assigns or un-assigns.
    """
    store.publish_run(ctx(tmp_path, "r1"), findings(["J1", "J2", "J3", "J4"]))
    j1, j2, j3, j4 = (item_id("Musterstadt", 2024, j) for j in ("J1", "J2", "J3", "J4"))
    store.record_decision(j1, "clarify", "an Anna", "carla", assignee="anna")
    store.record_decision(j2, "clarify", "an Bernd", "carla", assignee="bernd")
    assert store.record_decisions([j1, j2, j3], "confirmed", "Sammelprüfung", "dora") == 3
    assignees = {r["item_id"]: r["assignee"] for r in store.items().iter_rows(named=True)}
    assert assignees == {j1: "anna", j2: "bernd", j3: None, j4: None}
    bulk = {e["item_id"]: e for e in store.decision_log().iter_rows(named=True) if e["id"] > 2}
    assert {i: (e["status"], e["assignee"]) for i, e in bulk.items()} == {
        j1: ("confirmed", "anna"), j2: ("confirmed", "bernd"), j3: ("confirmed", None)}
    assert store.get_item(j1)["status"] == "confirmed"
    # single decision without an assignee: kept as well
    store.record_decision(j1, "no_finding", "doch nicht", "anna")
    assert store.get_item(j1)["assignee"] == "anna" and store.history(j1)[-1]["assignee"] == "anna"
    # explicit values still set and clear, in bulk and single
    assert store.record_decisions([j2, j4], "clarify", "Rückfrage", "dora", assignee="carla") == 2
    assert (store.get_item(j2)["assignee"], store.get_item(j4)["assignee"]) == ("carla", "carla")
    store.record_decisions([j4], "clarify", "zurück in den Pool", "dora", assignee=None)
    store.record_decision(j2, "clarify", "niemand", "dora", assignee=None)
    assert store.get_item(j2)["assignee"] is None and store.get_item(j4)["assignee"] is None
    assert [e["assignee"] for e in store.history(j2)] == ["bernd", "bernd", "carla", None]
    verdict = store.verify_log()
    assert verdict.ok and verdict.events == 10


def test_publish_leaves_the_wal_checkpoint_to_a_background_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The publish is committed (fsynced) into the WAL; copying the WAL into the database file,
    which SQLite would do inside the commit once the WAL passes 1,000 pages (~0.05 s for the
    28k items of a 1M-line run), runs in a background thread the process waits for at exit."""
    import detect.store as store_module

    started: list[Any] = []
    monkeypatch.setattr(store_module, "_checkpoint_soon", started.append)
    store = ReviewStore.for_data_dir(tmp_path)
    many = findings([f"J{i}" for i in range(8000)]).with_columns(
        pl.lit("Buchungstext " * 40).alias("description"))  # ~5 MB: > 1,000 WAL pages
    store.publish_run(ctx(tmp_path, "r1"), many)
    db, wal = tmp_path / "review.sqlite", tmp_path / "review.sqlite-wal"
    assert started == [store.engine]
    assert db.stat().st_size < 1 << 20 < 4 << 20 < wal.stat().st_size  # only in the WAL yet
    assert store.items().height == 8000  # committed: readers see it
    with store.engine.connect() as conn:  # the connection's own setting is back
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 1000

    monkeypatch.undo()
    store_module._checkpoint_soon(store.engine)
    store_module.join_checkpoints()
    assert db.stat().st_size > 4 << 20
    assert ReviewStore.for_data_dir(tmp_path).items().height == 8000
