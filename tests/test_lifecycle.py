"""Run lifecycle: lock, stale-lock recovery, delivery identity, recovery, failures, inbox.

The pipeline tests swap the heavy stages (validate, rules, models, scoring) for small fakes so
that each test runs in well under a second; tests/test_kill.py runs the real stages.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import detect
from detect import lifecycle, pipeline
from detect.config import Settings, StoreSettings, load_settings
from detect.errors import AlreadyProcessed, ConfigError, DeliveryRejected, RunLocked
from detect.ingest import IngestResult, InputFile
from detect.runlog import StepLog
from detect.schema import conform
from detect.store import ReviewStore


# --- lock --------------------------------------------------------------------------------------

def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_lock(data_dir: Path, entity: str, **info: Any) -> Path:
    path = lifecycle.lock_path(data_dir, entity)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info) if info else "", "utf-8")
    return path


def test_lock_holds_pid_host_and_start_time(tmp_path: Path) -> None:
    with lifecycle.RunLock(tmp_path, "Musterstadt", run_id="r1") as lock:
        info = json.loads(lock.path.read_text())
        assert (info["pid"], info["hostname"], info["run_id"]) == (
            os.getpid(), socket.gethostname(), "r1")
        assert abs(info["started"] - lifecycle._process_start(os.getpid())) < 0.01
        with pytest.raises(RunLocked) as err:
            lifecycle.RunLock(tmp_path, "Musterstadt").acquire()
        assert f"another run for entity 'Musterstadt' is in progress (pid {os.getpid()}" \
            in str(err.value) and "run r1" in str(err.value)
        assert err.value.exit_code == 4
        # another entity is independent
        with lifecycle.RunLock(tmp_path, "Nebenstadt"):
            pass
    assert not lock.path.exists()


@pytest.mark.parametrize("info, reason", [
    ("dead", "no longer exists"),
    ("reused", "now belongs to another process"),
    ("empty", "empty or unreadable"),
    ("old_foreign", "held by host elsewhere for 30 h"),
])
def test_stale_locks_are_recovered(tmp_path: Path, info: str, reason: str) -> None:
    me = socket.gethostname()
    if info == "dead":
        write_lock(tmp_path, "M", pid=dead_pid(), hostname=me, started=1.0, acquired=1.0,
                   run_id="killed")
    elif info == "reused":  # our pid, but the recorded process started at another time
        write_lock(tmp_path, "M", pid=os.getpid(), hostname=me, started=12345.0,
                   acquired=12345.0, run_id="killed")
    elif info == "empty":
        write_lock(tmp_path, "M")
    else:
        write_lock(tmp_path, "M", pid=1, hostname="elsewhere", started=1.0,
                   acquired=time.time() - 30 * 3600, run_id="killed")
    with lifecycle.RunLock(tmp_path, "M", run_id="r2") as lock:
        assert len(lock.notes) == 1 and reason in lock.notes[0]
        assert json.loads(lock.path.read_text())["run_id"] == "r2"


def test_live_foreign_lock_is_respected(tmp_path: Path) -> None:
    write_lock(tmp_path, "M", pid=1, hostname="elsewhere", started=1.0,
               acquired=time.time() - 60, run_id="remote")
    with pytest.raises(RunLocked, match="pid 1 on elsewhere, run remote"):
        lifecycle.RunLock(tmp_path, "M").acquire()


def test_second_run_can_wait_for_the_lock(tmp_path: Path) -> None:
    first = lifecycle.RunLock(tmp_path, "M").acquire()
    threading.Timer(0.3, first.release).start()
    start = time.monotonic()
    with lifecycle.RunLock(tmp_path, "M", wait_seconds=10):
        assert 0.2 < time.monotonic() - start < 5


# --- delivery identity -------------------------------------------------------------------------

def test_fingerprint_is_by_content_not_name(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "bookings.csv").write_text("x;y\n1;2\n")
    (tmp_path / "a" / "accounts.csv").write_text("k\n1\n")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "renamed.csv").write_text("x;y\n1;2\n")
    (tmp_path / "b" / "chart.csv").write_text("k\n1\n")
    (tmp_path / "b" / ".hidden").write_text("ignored")
    a, b = lifecycle.fingerprint([tmp_path / "a"]), lifecycle.fingerprint([tmp_path / "b"])
    assert a.hash == b.hash and len(a.files) == 2
    assert a.files[0]["name"].endswith("accounts.csv") and a.files[0]["size"] == 4
    single = lifecycle.fingerprint([tmp_path / "a" / "bookings.csv"])
    assert single.hash == lifecycle.fingerprint([tmp_path / "b" / "renamed.csv"]).hash
    (tmp_path / "b" / "renamed.csv").write_text("x;y\n1;3\n")
    assert lifecycle.fingerprint([tmp_path / "b"]).hash != a.hash


# --- fake stages -------------------------------------------------------------------------------

@dataclass
class FakeChecked:
    clean_path: Path

    def summary(self) -> dict[str, Any]:
        return {"headline": ["validated (fake)"]}

    def review_hits(self) -> pl.DataFrame:
        return pl.DataFrame()


@dataclass
class FakeRules:
    hits: pl.DataFrame = field(default_factory=pl.DataFrame)

    def summary(self) -> dict[str, Any]:
        return {"headline": []}


@dataclass
class Stages:
    fail_at: str | None = None
    error: BaseException = field(default_factory=lambda: RuntimeError("boom"))

    def maybe_fail(self, stage: str) -> None:
        if self.fail_at == stage:
            raise self.error


def fake_ingest(sources: list[Path], fmt: str, settings: Settings, workdir: Path,
                **_options: Any) -> IngestResult:
    """A delivery file is a CSV with journal_id, amount (one line per journal)."""
    from detect.ingest import expand_sources
    from detect.ingest.textio import sha256_of

    files = expand_sources(sources)
    frames = [pl.read_csv(f, schema_overrides={"journal_id": pl.String, "amount": pl.String})
              .with_columns(pl.lit(str(f)).alias("source_file")) for f in files]
    raw = pl.concat(frames).with_columns(
        pl.lit(settings.entity).alias("entity"), pl.lit(2024).alias("fiscal_year"),
        pl.lit(1).alias("line_no"), pl.lit("4711").alias("gl_account"),
        pl.col("amount").cast(pl.Decimal(18, 2)), pl.lit(1).alias("source_line"),
        pl.lit("2024-03-01").str.to_date().alias("posting_date"))
    return IngestResult("fake", conform(raw.lazy()),
                        inputs=[InputFile(str(f), sha256_of(f), f.stat().st_size) for f in files])


@pytest.fixture
def stages(monkeypatch: pytest.MonkeyPatch) -> Stages:
    state = Stages()

    def validate(ingested: IngestResult, ctx: Any) -> FakeChecked:
        state.maybe_fail("validate")
        path = Path(ctx.run_dir) / "bookings.parquet"
        ingested.bookings.collect().write_parquet(path)
        return FakeChecked(path)

    def connect(ctx: Any, glob: str) -> Any:
        return types.SimpleNamespace(close=lambda: None)

    def run_rules(con: Any, ctx: Any) -> FakeRules:
        state.maybe_fail("rules")
        pl.DataFrame().write_parquet(Path(ctx.run_dir) / "rule_hits.parquet")
        return FakeRules()

    def score_lines(bookings: pl.LazyFrame, ctx: Any, **_options: Any) -> pl.DataFrame:
        state.maybe_fail("models")
        return pl.DataFrame()

    def write_findings(items: pl.DataFrame, ctx: Any) -> Path:
        path = Path(ctx.run_dir) / "findings.parquet"
        items.write_parquet(path)
        return path

    def build_items(bookings: pl.LazyFrame, hits: Any, scores: Any, ctx: Any,
                    write: bool = True, **_: Any) -> pl.DataFrame:
        state.maybe_fail("scoring")
        delivery = pl.read_parquet(Path(ctx.run_dir) / "bookings.parquet").select("journal_id")
        found = (bookings.join(delivery.lazy(), on="journal_id", how="semi")
                 .filter(pl.col("amount") > 100).collect()
                 .select("entity", "fiscal_year", "journal_id", "line_no", "amount",
                         pl.lit("BIG001").alias("rule_ids"),
                         pl.col("amount").cast(pl.Float64).alias("risk_score"))
                 .sort("journal_id"))
        if write:
            write_findings(found, ctx)
        return found

    import detect.rules

    monkeypatch.setattr(detect.rules, "connect", connect)  # the package stays (rule versions)
    monkeypatch.setattr(detect.rules, "run_rules", run_rules)
    modules = {"validate": dict(validate=validate),
               "models": dict(score_lines=score_lines),
               "scoring": dict(build_items=build_items, write_findings=write_findings)}
    for name, attrs in modules.items():
        module = types.ModuleType(f"detect.{name}")
        module.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, f"detect.{name}", module)
        monkeypatch.setattr(detect, name, module, raising=False)
    monkeypatch.setattr(pipeline, "ingest", fake_ingest)
    monkeypatch.setattr(pipeline, "input_stats", lambda path: [])
    return state


def delivery(path: Path, rows: dict[str, str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("journal_id,amount\n" + "".join(f"{j},{a}\n" for j, a in rows.items()))
    return path


def run(tmp_path: Path, source: Path) -> pipeline.RunSummary:
    return pipeline.run_delivery([source], fmt="auto", settings=Settings(entity="M"),
                                 data_dir=tmp_path / "var", log=StepLog(quiet=True))


# --- pipeline ----------------------------------------------------------------------------------

def test_run_publishes_and_the_same_delivery_is_skipped(tmp_path: Path, stages: Stages) -> None:
    source = delivery(tmp_path / "in" / "d1.csv", {"J1": "500.00", "J2": "5.00"})
    summary = run(tmp_path, source)
    var = tmp_path / "var"
    assert (var / "CURRENT").read_text().strip() == summary.run_id
    assert (var / "current" / "M").read_text().strip() == summary.run_id
    manifest = json.loads((summary.run_dir / "manifest.json").read_text())
    assert manifest["outcome"] == "published"
    assert manifest["findings"]["headline"][0].startswith("published 1 items: 1 new")
    assert manifest["delivery"]["sha256"] == lifecycle.fingerprint([source]).hash
    assert manifest["history"]["fiscal_years"] == {"2024": {"lines": 2, "journals": 2}}
    assert len(manifest["rule_versions"]["payments/PAY001.yaml"]) == 12
    assert not lifecycle.lock_path(var, "M").exists()
    store = ReviewStore.for_data_dir(var)
    assert store.items()["journal_id"].to_list() == ["J1"]
    copy = delivery(tmp_path / "other" / "same_content.csv", {"J1": "500.00", "J2": "5.00"})
    items_before, runs_before = store.items(include_unflagged=True), store.list_runs()
    history_before = (var / "history" / "M" / "fiscal_year=2024" / "data.parquet").read_bytes()
    with pytest.raises(AlreadyProcessed, match=f"already processed as run {summary.run_id}"):
        run(tmp_path, copy)
    # rerunning the same delivery changes nothing
    assert sorted(p.name for p in (var / "runs").iterdir()) == [summary.run_id]
    assert store.items(include_unflagged=True).equals(items_before)
    assert store.list_runs() == runs_before
    assert (var / "history" / "M" / "fiscal_year=2024" / "data.parquet").read_bytes() \
        == history_before
    # a delta adds J3; J1 (not in the delta) stays flagged
    second = run(tmp_path, delivery(tmp_path / "in" / "d2.csv", {"J3": "900.00"}))
    assert sorted(store.items()["journal_id"]) == ["J1", "J3"]
    assert second.manifest["history"]["fiscal_years"]["2024"]["lines"] == 3


@pytest.mark.parametrize("stage, error, outcome, message", [
    ("validate", DeliveryRejected("no rows in the delivery", file="d.csv"), "failed",
     "d.csv: no rows in the delivery"),
    ("rules", RuntimeError("boom"), "failed", "internal error: RuntimeError: boom"),
    ("scoring", KeyboardInterrupt(), "aborted", "interrupted"),
])
def test_a_failed_run_is_recorded_and_the_previous_stays(
        tmp_path: Path, stages: Stages, stage: str, error: BaseException, outcome: str,
        message: str) -> None:
    first = run(tmp_path, delivery(tmp_path / "in" / "d1.csv", {"J1": "500.00"}))
    stages.fail_at, stages.error = stage, error
    with pytest.raises(type(error)):
        run(tmp_path, delivery(tmp_path / "in" / "d2.csv", {"J2": "700.00"}))
    var = tmp_path / "var"
    assert (var / "CURRENT").read_text().strip() == first.run_id
    [failed] = list((var / "runs").glob("*.failed"))
    assert (failed / "RUN_INFO.json").exists()
    store = ReviewStore.for_data_dir(var)
    record = store.get_run(failed.name.removesuffix(".failed"))
    assert (record["outcome"], record["error"]) == (outcome, message)
    assert store.items()["journal_id"].to_list() == ["J1"]
    assert not lifecycle.lock_path(var, "M").exists()
    # the failed delivery is not registered as processed: a retry works
    stages.fail_at = None
    retry = run(tmp_path, delivery(tmp_path / "in" / "d2.csv", {"J2": "700.00"}))
    assert sorted(store.items()["journal_id"]) == ["J1", "J2"]
    assert (var / "CURRENT").read_text().strip() == retry.run_id


def test_run_refuses_while_another_process_holds_the_lock(tmp_path: Path,
                                                          stages: Stages) -> None:
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        started = lifecycle._process_start(holder.pid)
        write_lock(tmp_path / "var", "M", pid=holder.pid, hostname=socket.gethostname(),
                   started=started, acquired=time.time(), run_id="busy")
        with pytest.raises(RunLocked, match=f"pid {holder.pid} .*run busy"):
            run(tmp_path, delivery(tmp_path / "in" / "d1.csv", {"J1": "500.00"}))
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone: its lock is stale now and the next run recovers it
    summary = run(tmp_path, delivery(tmp_path / "in" / "d1.csv", {"J1": "500.00"}))
    assert summary.manifest["recovered"][0].startswith("recovered a stale lock for M")


def test_a_skipped_or_locked_out_run_starts_no_worker_processes(
        tmp_path: Path, stages: Stages, monkeypatch: pytest.MonkeyPatch) -> None:
    """The GX and model workers start only once the run holds the lock and knows its delivery
    is new: a skipped delivery or a run refused the lock spawns no interpreters."""
    started: list[str] = []
    original = pipeline.Workers.__init__

    def init(self: Any, run_id: str, *args: Any) -> None:
        started.append(run_id)
        original(self, run_id, *args)

    monkeypatch.setattr(pipeline.Workers, "__init__", init)
    source = delivery(tmp_path / "in" / "d1.csv", {"J1": "500.00"})
    first = run(tmp_path, source)
    assert started == [first.run_id]
    with pytest.raises(AlreadyProcessed):
        run(tmp_path, source)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        write_lock(tmp_path / "var", "M", pid=holder.pid, hostname=socket.gethostname(),
                   started=lifecycle._process_start(holder.pid), acquired=time.time(),
                   run_id="busy")
        with pytest.raises(RunLocked):
            run(tmp_path, delivery(tmp_path / "in" / "d2.csv", {"J2": "700.00"}))
    finally:
        holder.kill()
        holder.wait()
    assert started == [first.run_id]


# --- recovery ----------------------------------------------------------------------------------

def partial_run(var: Path, run_id: str, entity: str) -> Path:
    folder = var / "runs" / f"{run_id}.partial"
    folder.mkdir(parents=True)
    lifecycle.write_run_info(folder, run_id, entity, None)
    pipeline.write_manifest(folder, {"run_id": run_id, "outcome": "publishing",
                                     "findings": {"items": 1}})
    return folder


def test_recover_rolls_forward_or_aborts(tmp_path: Path) -> None:
    var = tmp_path / "var"
    store = ReviewStore.for_data_dir(var)
    (var / "runs" / "20240101T000000000000Z_M").mkdir(parents=True)
    pipeline.switch_current(var, "20240101T000000000000Z_M")
    # killed before the store commit
    partial_run(var, "20240102T000000000000Z_M", "M")
    store.start_run("20240102T000000000000Z_M", "M")
    # killed after the store commit
    partial_run(var, "20240103T000000000000Z_M", "M")
    ctx = types.SimpleNamespace(entity="M", run_id="20240103T000000000000Z_M",
                                run_dir=var / "runs" / "x", rescore_history=False)
    store.publish_run(ctx, pl.DataFrame({"entity": ["M"], "fiscal_year": [2024],
                                         "journal_id": ["J1"]}))
    # another entity's run in progress: not ours to touch
    partial_run(var, "20240104T000000000000Z_N", "N")
    notes = lifecycle.recover(var, "M", store)
    assert notes == [
        "run 20240102T000000000000Z_M was interrupted before publishing; kept as "
        "runs/20240102T000000000000Z_M.failed, the previous run stays current",
        "completed run 20240103T000000000000Z_M: it was killed after publishing"]
    assert sorted(p.name for p in (var / "runs").iterdir()) == [
        "20240101T000000000000Z_M", "20240102T000000000000Z_M.failed",
        "20240103T000000000000Z_M", "20240104T000000000000Z_N.partial"]
    assert (var / "CURRENT").read_text().strip() == "20240103T000000000000Z_M"
    manifest = json.loads((var / "runs" / "20240103T000000000000Z_M" / "manifest.json")
                          .read_text())
    assert manifest["outcome"] == "published" and manifest["findings"]["new"] == 1
    assert store.get_run("20240102T000000000000Z_M")["outcome"] == "aborted"
    assert lifecycle.recover(var, "M", store) == []  # idempotent


def test_recover_points_current_at_the_newest_published_run(tmp_path: Path) -> None:
    var = tmp_path / "var"
    store = ReviewStore.for_data_dir(var)
    for run_id in ("20240101T000000000000Z_M", "20240102T000000000000Z_M"):
        (var / "runs" / run_id).mkdir(parents=True)
        store.publish_run(types.SimpleNamespace(entity="M", run_id=run_id, run_dir=var / "x",
                                                rescore_history=False), pl.DataFrame())
    pipeline.switch_current(var, "20240101T000000000000Z_M")  # killed before the switch
    assert lifecycle.recover(var, "M", store) == [
        "pointed CURRENT at 20240102T000000000000Z_M, the newest published run"]
    assert (var / "CURRENT").read_text().strip() == "20240102T000000000000Z_M"


# --- retention of failed run folders -----------------------------------------------------------

def failed_run(var: Path, store: ReviewStore, run_id: str, entity: str | None,
               *, recorded: bool = True) -> Path:
    """A ``runs/<id>.failed`` folder with a tmp/ Parquet, as ``_record_failure`` leaves it;
    ``entity=None`` leaves out RUN_INFO.json (a run killed right after mkdir)."""
    folder = var / "runs" / f"{run_id}.failed"
    (folder / "tmp").mkdir(parents=True)
    if entity is not None:
        lifecycle.write_run_info(folder, run_id, entity, None)
    (folder / "tmp" / "bookings.parquet").write_bytes(b"x" * 100)
    (folder / "run.log.jsonl").write_text("{}\n")
    if recorded:
        store.start_run(run_id, entity or "M")
        store.fail_run(run_id, f"error of {run_id}")
    return folder


def stamp(day: int) -> str:
    return f"202401{day:02d}T000000000000Z"


def test_prune_keeps_the_newest_failed_folders_of_the_entity_only(tmp_path: Path) -> None:
    var = tmp_path / "var"
    store = ReviewStore.for_data_dir(var)
    # N + 2 = 5 failed runs of M, created out of order (kept by run id = time, not by mtime)
    for day in (3, 1, 5, 2, 4):
        failed_run(var, store, f"{stamp(day)}_M", "M")
    failed_run(var, store, f"{stamp(6)}_M", None)   # no RUN_INFO: the run id names M
    for day in (1, 2):                               # another entity: not ours to remove
        failed_run(var, store, f"{stamp(day)}_N", "N")
    failed_run(var, store, f"{stamp(1)}_X_M", None)  # entity "X_M", not M
    (var / "runs" / f"{stamp(1)}_M").mkdir()         # published runs and live partials stay
    partial_run(var, f"{stamp(7)}_M", "M")
    partial_run(var, f"{stamp(1)}_N", "N")
    notes = lifecycle.prune_failed(var, "M", store, keep=3)
    removed = [f"{stamp(day)}_M" for day in (1, 2, 3)]
    assert notes == [
        "removed 3 old failed run folder(s) of M ([store] keep_failed_runs = 3; their errors "
        "stay in the store's runs table): " + ", ".join(f"runs/{r}.failed" for r in removed)]
    assert sorted(p.name for p in (var / "runs").iterdir()) == sorted([
        f"{stamp(4)}_M.failed", f"{stamp(5)}_M.failed", f"{stamp(6)}_M.failed",
        f"{stamp(1)}_N.failed", f"{stamp(2)}_N.failed", f"{stamp(1)}_X_M.failed",
        f"{stamp(1)}_M", f"{stamp(7)}_M.partial", f"{stamp(1)}_N.partial"])
    for run_id in removed:  # the failure itself stays recorded
        record = store.get_run(run_id)
        assert (record["outcome"], record["error"]) == ("failed", f"error of {run_id}")
    assert lifecycle.prune_failed(var, "M", store, keep=3) == []  # idempotent


@pytest.mark.parametrize("keep, left", [(0, []), (-1, [1, 2, 3]), (5, [1, 2, 3])])
def test_prune_keep_zero_removes_all_and_minus_one_keeps_all(
        tmp_path: Path, keep: int, left: list[int]) -> None:
    var = tmp_path / "var"
    store = ReviewStore.for_data_dir(var)
    for day in (1, 2, 3):
        failed_run(var, store, f"{stamp(day)}_M", "M")
    failed_run(var, store, f"{stamp(1)}_N", "N")
    lifecycle.prune_failed(var, "M", store, keep=keep)
    assert sorted(p.name for p in (var / "runs").iterdir()) == sorted(
        [f"{stamp(day)}_M.failed" for day in left] + [f"{stamp(1)}_N.failed"])
    assert [store.get_run(f"{stamp(d)}_M")["outcome"] for d in (1, 2, 3)] == ["failed"] * 3


def test_prune_records_an_unrecorded_folder_and_spares_a_published_run(tmp_path: Path) -> None:
    var = tmp_path / "var"
    store = ReviewStore.for_data_dir(var)
    failed_run(var, store, f"{stamp(1)}_M", "M", recorded=False)
    failed_run(var, store, f"{stamp(2)}_M", "M", recorded=False)
    store.publish_run(types.SimpleNamespace(entity="M", run_id=f"{stamp(2)}_M", run_dir=var,
                                            rescore_history=False), pl.DataFrame())
    lifecycle.prune_failed(var, "M", store, keep=0)
    assert [p.name for p in (var / "runs").iterdir()] == [f"{stamp(2)}_M.failed"]
    assert store.get_run(f"{stamp(1)}_M")["outcome"] == "aborted"


def test_a_run_applies_keep_failed_runs_and_logs_it(tmp_path: Path, stages: Stages) -> None:
    """N + 2 failing nights leave N failed folders once the next run starts."""
    var = tmp_path / "var"
    settings = Settings(entity="M", store=StoreSettings(keep_failed_runs=2))
    log = StepLog(quiet=True)
    stages.fail_at, stages.error = "validate", DeliveryRejected("bad", file="d.csv")
    failed_ids = []
    for night in range(4):
        with pytest.raises(DeliveryRejected):
            pipeline.run_delivery([delivery(tmp_path / "in" / f"d{night}.csv",
                                            {f"J{night}": "500.00"})],
                                  fmt="auto", settings=settings, data_dir=var, log=log)
        failed_ids.append(max(p.name for p in (var / "runs").glob("*.failed"))
                          .removesuffix(".failed"))
    assert len(list((var / "runs").glob("*.failed"))) == 3   # 2 kept + the newest failure
    stages.fail_at = None
    summary = pipeline.run_delivery([delivery(tmp_path / "in" / "ok.csv", {"J9": "500.00"})],
                                    fmt="auto", settings=settings, data_dir=var, log=log)
    assert sorted(p.name for p in (var / "runs").iterdir()) == sorted(
        [f"{r}.failed" for r in failed_ids[2:]] + [summary.run_id])
    [note] = [n for n in summary.manifest["recovered"] if n.startswith("removed")]
    assert f"runs/{failed_ids[1]}.failed" in note and failed_ids[2] not in note
    store = ReviewStore.for_data_dir(var)
    assert [store.get_run(r)["outcome"] for r in failed_ids] == ["failed"] * 4


def test_keep_zero_removes_the_last_failure_at_the_next_run_without_resurrecting_it(
        tmp_path: Path, stages: Stages) -> None:
    """An inbox shares one StepLog whose path still names the previous (failed) run's log:
    the start-of-run warning about removing that folder must not create it again."""
    var = tmp_path / "var"
    settings = Settings(entity="M", store=StoreSettings(keep_failed_runs=0))
    log = StepLog(quiet=True)
    stages.fail_at = "rules"
    for night in range(2):
        with pytest.raises(RuntimeError):
            pipeline.run_delivery([delivery(tmp_path / "in" / f"d{night}.csv",
                                            {f"J{night}": "500.00"})],
                                  fmt="auto", settings=settings, data_dir=var, log=log)
        [failed] = list((var / "runs").glob("*.failed"))  # the newest failure only
        assert (failed / "RUN_INFO.json").exists()
    assert log.json_path == failed / "run.log.jsonl"
    # the removal was said before the second run's log existed: it is in that log all the same
    events = [json.loads(line) for line in (failed / "run.log.jsonl").read_text().splitlines()]
    assert [e["message"] for e in events if e["event"] == "warning"
            and e["message"].startswith("removed 1 old failed run folder")]


@pytest.mark.parametrize("value", ["-2", "2.5", "true", '"ten"'])
def test_keep_failed_runs_must_be_a_whole_number_from_minus_one(tmp_path: Path,
                                                                 value: str) -> None:
    path = tmp_path / "belegwacht.toml"
    path.write_text(f"[store]\nkeep_failed_runs = {value}\n")
    with pytest.raises(ConfigError, match=r"\[store\] keep_failed_runs must be a whole number "
                                          r">= -1, not "):
        load_settings(path)
    path.write_text("[store]\nkeep_failed_runs = -1\n[entities.N.store]\nkeep_failed_runs = 0\n")
    assert load_settings(path, entity="M").store.keep_failed_runs == -1
    assert load_settings(path, entity="N").store.keep_failed_runs == 0
    assert Settings().store.keep_failed_runs == 10


# --- inbox -------------------------------------------------------------------------------------

def test_inbox_processes_oldest_first_and_survives_a_broken_delivery(
        tmp_path: Path, stages: Stages) -> None:
    inbox = tmp_path / "inbox"
    files = [delivery(inbox / "2024-03.csv", {"J1": "500.00"}),
             delivery(inbox / "2024-01-broken.csv", {"J2": "x"}),
             delivery(inbox / "2024-02.csv", {"J3": "900.00"}),
             delivery(inbox / "copy-of-march.csv", {"J1": "500.00"})]
    delivery(inbox / "upload.csv.part", {"J9": "1.00"})
    delivery(inbox / ".hidden.csv", {"J9": "1.00"})
    for n, path in enumerate([files[1], files[2], files[0], files[3]]):
        os.utime(path, (1_700_000_000 + n, 1_700_000_000 + n))
    result = pipeline.run_inbox(inbox, fmt="auto", settings=Settings(entity="M"),
                                data_dir=tmp_path / "var", log=StepLog(quiet=True))
    assert [(e.name, e.outcome) for e in result.entries] == [
        ("2024-01-broken.csv", "failed"), ("2024-02.csv", "published"),
        ("2024-03.csv", "published"), ("copy-of-march.csv", "skipped")]
    lines = result.lines()
    assert lines[0].endswith("4 deliveries: 2 processed, 1 already processed, 1 failed")
    assert lines[1].startswith("  FAILED  2024-01-broken.csv: internal error:")
    assert "published 1 items: 1 new" in lines[2]
    assert "already processed as run" in lines[4]
    assert result.exit_code() == 1
    again = pipeline.run_inbox(inbox, fmt="auto", settings=Settings(entity="M"),
                               data_dir=tmp_path / "var", log=StepLog(quiet=True))
    assert [e.outcome for e in again.entries] == ["failed", "skipped", "skipped", "skipped"]


def test_inbox_stops_when_locked(tmp_path: Path, stages: Stages) -> None:
    inbox = tmp_path / "inbox"
    delivery(inbox / "a.csv", {"J1": "500.00"})
    delivery(inbox / "b.csv", {"J2": "500.00"})
    with lifecycle.RunLock(tmp_path / "var", "M"):
        result = pipeline.run_inbox(inbox, fmt="auto", settings=Settings(entity="M"),
                                    data_dir=tmp_path / "var", log=StepLog(quiet=True))
    assert [e.outcome for e in result.entries] == ["locked", "locked"]
    assert result.exit_code() == 4
    assert result.lines()[0].endswith("0 failed, 2 not started (locked)")
    with pytest.raises(Exception, match="not a folder"):
        lifecycle.inbox_deliveries(tmp_path / "nope")
