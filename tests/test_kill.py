"""Crash safety: SIGKILL the job at every checkpoint of a run, then rerun.

Done-when of issue 7: the published state is always the old or the new complete run, the rerun's
findings equal a clean run's, and no decision is lost.

The job runs the real CLI (`belegwacht run`) with the real stages. To keep this under a minute
the children are forked from a forkserver that has the heavy modules preloaded (the same code
path as ``python -m detect run`` after interpreter start); one point is also killed in a plain
``python -m detect run`` subprocess. ``BELEGWACHT_KILL_TEST_SUBPROCESS=1`` runs every child as a
plain subprocess.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import types
from pathlib import Path
from unittest import mock

import polars as pl
import pytest

FIXTURES = Path(__file__).parent / "fixtures" / "lifecycle"
sys.path.insert(0, str(FIXTURES))

import killrun  # noqa: E402
from make_delivery import write_delivery  # noqa: E402

from detect.export import export_findings  # noqa: E402
from detect.lifecycle import CRASH_ENV, CRASH_POINTS  # noqa: E402
from detect.store import ReviewStore  # noqa: E402

pytestmark = pytest.mark.slow

PRE_COMMIT = ["locked", "ingested", "validated", "history_partition_written",
              "history_committed", "history_merged", "rules_done", "models_done", "scored",
              "manifest_written", "store_uncommitted"]
POST_COMMIT = ["store_committed", "renamed", "current_switched"]
SUBPROCESS_POINT = "store_uncommitted"
ITEM_COLUMNS = ["item_id", "flagged", "last_run", "risk_score", "rank", "rule_ids",
                "suppressed_by"]

_FORKSERVER: mp.context.BaseContext | None = None


def _context() -> mp.context.BaseContext:
    global _FORKSERVER
    if _FORKSERVER is None:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["killrun", *killrun.PRELOAD])
        _FORKSERVER = ctx
    return _FORKSERVER


CONFIG = """
entity = "Musterstadt"
[validation]
data_docs = false      # the slowest part of a small run; the crash points do not need it
gx_rows = 200
[models]
detectors = ["hbos"]
"""


def _args(data_dir: Path, delivery: Path) -> list[str]:
    config = delivery.parent / "belegwacht.toml"
    if not config.exists():
        config.write_text(CONFIG, encoding="utf-8")
    return ["run", str(delivery), "--data-dir", str(data_dir), "--config", str(config), "-q"]


def belegwacht(data_dir: Path, delivery: Path, crash_at: str | None = None,
               subprocess_: bool = False) -> int:
    """Run ``belegwacht run DELIVERY`` as a child process; return its exit code (-9 = killed)."""
    args = _args(data_dir, delivery)
    if subprocess_ or os.environ.get("BELEGWACHT_KILL_TEST_SUBPROCESS") == "1":
        env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
        if crash_at:
            env[CRASH_ENV] = crash_at
        done = subprocess.run([sys.executable, "-m", "detect", *args], env=env,
                              capture_output=True, text=True, timeout=300,
                              cwd=Path(__file__).parents[1])
        return done.returncode
    return belegwacht_parallel([(data_dir, delivery, crash_at)])[0]


def belegwacht_parallel(jobs: list[tuple[Path, Path, str | None]]) -> list[int]:
    """Independent runs (separate data dirs) at the same time; their exit codes in order."""
    procs = [_context().Process(target=killrun.run_cli, args=(_args(d, dl), crash))
             for d, dl, crash in jobs]
    # Streamlit (AppTest, earlier in this worker) leaves its last page script as __main__; a
    # child would run that script again while multiprocessing prepares it
    with mock.patch.dict(sys.modules, {"__main__": types.ModuleType("__main__")}):
        for proc in procs:
            proc.start()
    for proc in procs:
        proc.join(300)
        assert proc.exitcode is not None, "child hung"
    return [int(proc.exitcode) for proc in procs]


def current(data_dir: Path) -> str:
    return (data_dir / "CURRENT").read_text().strip()


def assert_complete(data_dir: Path, run_id: str) -> None:
    """``CURRENT`` names a complete run folder that the app and exports can use."""
    run_dir = data_dir / "runs" / run_id
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["outcome"] == "published" and manifest["run_id"] == run_id
    for name in ("bookings.parquet", "findings.parquet", "rule_hits.parquet",
                 "model_scores.parquet"):
        assert (run_dir / name).exists(), name
    out = data_dir.parent / f"{data_dir.name}_check.csv"
    assert export_findings(data_dir, None, out) == pl.read_parquet(
        run_dir / "findings.parquet").height


def findings_of(data_dir: Path, run_id: str) -> pl.DataFrame:
    frame = pl.read_parquet(data_dir / "runs" / run_id / "findings.parquet")
    return frame.sort("item_id")


def assert_same_findings(got: pl.DataFrame, want: pl.DataFrame, label: str) -> None:
    """Equal frames; on a difference name the columns and the first differing values."""
    assert got.columns == want.columns, label
    assert got.height == want.height, (label, got["journal_id"].to_list(),
                                       want["journal_id"].to_list())
    diff = {c: (got[c].to_list()[:5], want[c].to_list()[:5]) for c in got.columns
            if not got[c].equals(want[c])}
    assert not diff, (label, diff)


def item_state(store: ReviewStore) -> pl.DataFrame:
    return store.items(include_unflagged=True).select(ITEM_COLUMNS).sort("item_id")


@pytest.fixture(scope="module")
def deliveries(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("deliveries")
    return {"A": write_delivery(root / "A", range(1, 7)),            # first half year
            "B": write_delivery(root / "B", range(1, 13)),           # full re-export
            "C": write_delivery(root / "C", range(10, 13), n=200)}   # delta with new journals


def test_kill_at_every_point_then_rerun(tmp_path: Path, deliveries: dict[str, Path]) -> None:
    assert set(PRE_COMMIT + POST_COMMIT) == set(CRASH_POINTS)
    data = tmp_path / "var"
    assert belegwacht(data, deliveries["A"]) == 0
    run_a = current(data)
    after_a = tmp_path / "after_a"
    shutil.copytree(data, after_a)
    store = ReviewStore.for_data_dir(data)
    items_a = store.items()["item_id"].to_list()
    assert items_a, "delivery A must produce review items"
    decisions = 0

    def decide(note: str) -> None:
        nonlocal decisions
        item = items_a[decisions % len(items_a)]
        store.record_decision(item, "clarify", f"Rückfrage {note}", "anna")
        decisions += 1

    decide("vor dem Absturz")
    state_a = item_state(store)

    # 1) killed before the commit point: every time the old run stays published, untouched
    for n, point in enumerate(PRE_COMMIT):
        code = belegwacht(data, deliveries["B"], crash_at=point,
                          subprocess_=point == SUBPROCESS_POINT)
        assert code == -signal.SIGKILL, (point, code)
        assert current(data) == run_a, point
        assert_complete(data, run_a)
        assert store.latest_published_run("Musterstadt") == run_a, point
        assert item_state(store).equals(state_a), point
        decide(point)
    # the rerun, and beside it the reference: B on a copy of the state after A, never killed
    shutil.copytree(after_a, tmp_path / "ref_b")
    assert belegwacht_parallel([(data, deliveries["B"], None),
                                (tmp_path / "ref_b", deliveries["B"], None)]) == [0, 0]
    run_b = current(data)
    assert run_b != run_a
    assert_complete(data, run_b)
    reference_b = findings_of(tmp_path / "ref_b", current(tmp_path / "ref_b"))
    assert reference_b.height >= 3
    assert_same_findings(findings_of(data, run_b), reference_b, "B after the kills")
    # every killed run was found, recorded and kept for diagnosis; nothing half-done remains
    runs = {r["id"]: r for r in store.list_runs()}
    aborted = [r for r in runs.values() if r["outcome"] == "aborted"]
    assert len(aborted) == len(PRE_COMMIT) - 1  # "locked" dies before its run starts
    assert len(list((data / "runs").glob("*.failed"))) == len(PRE_COMMIT) - 1
    assert not list((data / "runs").glob("*.partial"))
    assert not list((data / "history").glob("**/*.new"))
    assert not (data / "locks" / "Musterstadt.lock").exists()

    # 2) killed after the commit point: recovery rolls the new run forward
    base = tmp_path / "base"
    shutil.copytree(data, base)
    copies = {point: tmp_path / f"var_{point}" for point in POST_COMMIT}
    for copy in [tmp_path / "ref_c", *copies.values()]:
        shutil.copytree(base, copy)
    # the reference and the three crashing runs are independent: run them side by side
    codes = belegwacht_parallel([(tmp_path / "ref_c", deliveries["C"], None)]
                                + [(copies[p], deliveries["C"], p) for p in POST_COMMIT])
    assert codes == [0] + [-signal.SIGKILL] * len(POST_COMMIT), codes
    reference_c = findings_of(tmp_path / "ref_c", current(tmp_path / "ref_c"))
    for point, copy in copies.items():
        copy_store = ReviewStore.for_data_dir(copy)
        new_run = copy_store.latest_published_run("Musterstadt")
        assert new_run not in (run_a, run_b)
        assert current(copy) in (run_b, new_run), point       # old or new, never a half
        assert_complete(copy, current(copy))
        copy_store.record_decision(items_a[0], "confirmed", f"nach {point}", "bernd")
    # the reruns recover (roll forward) and then find the delivery already processed
    assert belegwacht_parallel([(c, deliveries["C"], None) for c in copies.values()]) == [0] * 3
    for point, copy in copies.items():
        copy_store = ReviewStore.for_data_dir(copy)
        new_run = copy_store.latest_published_run("Musterstadt")
        assert current(copy) == new_run
        assert_complete(copy, new_run)
        assert_same_findings(findings_of(copy, new_run), reference_c, f"C after {point}")
        log = copy_store.decision_log()
        assert log.height == decisions + 1 and copy_store.verify_log().ok
        assert not list((copy / "runs").glob("*.partial"))

    # 3) no decision was lost, the chain is intact, decided items kept their status
    assert store.decision_log().height == decisions == len(PRE_COMMIT) + 1
    assert store.verify_log().ok
    decided = sorted({items_a[i % len(items_a)] for i in range(decisions)})
    statuses = store.items(include_unflagged=True).filter(pl.col("item_id").is_in(decided))
    assert statuses.height == len(decided) and set(statuses["status"]) == {"clarify"}
