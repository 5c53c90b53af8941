"""A publish in one process and 200 decisions from another all land (SQLite WAL)."""

from __future__ import annotations

import multiprocessing as mp
import sys
import time
import types
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest

from detect.store import ReviewStore, item_id

N_ITEMS = 3000


def _findings(offset: int) -> pl.DataFrame:
    journals = [f"J{i}" for i in range(offset, offset + N_ITEMS)]
    return pl.DataFrame({"entity": ["M"] * N_ITEMS, "fiscal_year": [2024] * N_ITEMS,
                         "journal_id": journals, "rule_ids": ["PAY001"] * N_ITEMS,
                         "risk_score": [float(i % 100) for i in range(N_ITEMS)],
                         "reasons": ["Grund"] * N_ITEMS})


def _publisher(data_dir: str, start: mp.Barrier, done: mp.Event) -> None:
    store = ReviewStore.for_data_dir(Path(data_dir))
    start.wait(60)
    n = 0
    while n < 3 or not done.is_set():  # keep publishing until every decision is in
        # alternate so every publish inserts, updates and un-flags
        ctx = SimpleNamespace(entity="M", run_id=f"r{n + 2:03d}", run_dir=Path(data_dir) / "x",
                              rescore_history=True)
        store.publish_run(ctx, _findings(0 if n % 2 else N_ITEMS // 2))
        n += 1
        time.sleep(0.05)


def _decider(data_dir: str, start: mp.Barrier, done: mp.Event) -> None:
    store = ReviewStore.for_data_dir(Path(data_dir))
    start.wait(60)
    for n in range(200):
        store.record_decision(item_id("M", 2024, f"J{n}"), "confirmed", f"geprüft {n}",
                              "anna")
    done.set()


def test_publish_while_another_process_records_200_decisions(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # spawned children re-run the parent's __main__; in a test worker that may be the last
    # Streamlit page an AppTest ran, so give them an empty one
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    store = ReviewStore.for_data_dir(tmp_path)
    store.publish_run(SimpleNamespace(entity="M", run_id="r1", run_dir=tmp_path / "x",
                                      rescore_history=True), _findings(0))
    spawn = mp.get_context("spawn")
    start = spawn.Barrier(2)  # both processes ready before either writes
    done = spawn.Event()
    procs = [spawn.Process(target=_publisher, args=(str(tmp_path), start, done)),
             spawn.Process(target=_decider, args=(str(tmp_path), start, done))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    log = store.decision_log()
    assert log.height == 200
    assert sorted(log["comment"].to_list()) == sorted(f"geprüft {n}" for n in range(200))
    result = store.verify_log()
    assert result.ok and result.events == 200
    # every decided item kept its status through the publishes
    decided = store.items(include_unflagged=True).filter(pl.col("status") == "confirmed")
    assert decided.height == 200
    outcomes = [r["outcome"] for r in store.list_runs()]
    assert len(outcomes) >= 4 and set(outcomes) == {"published"}
    # the two processes really overlapped: decisions were written between publishes
    finished = sorted(r["finished"] for r in store.list_runs() if r["id"] != "r1")
    stamps = sorted(log["ts"].to_list())
    assert stamps[0] < finished[-1]
