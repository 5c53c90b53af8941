"""The run's worker process shared by Great Expectations and the outlier models
(``detect.jobworker``): one process for both parts, each part's failure reported on its own
without losing the other's result, and a killed worker reported by both.

Each test starts one worker (~2 CPU s: GX, PyOD, scikit-learn)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import polars as pl
import pytest

from detect.config import ModelSettings, Settings
from detect.errors import UserError
from detect.jobworker import GX, MODELS, JobWorker
from detect.modelworker import ModelWorker, ModelWorkerDied
from detect.models import score_lines
from detect.validation import gxrun
from detect.validation.suites import BUNDLED_DIR, load_suite
from test_model_worker import _gone, _stage

pytestmark = pytest.mark.slow


def _gx_job(run_id: str, worker: JobWorker) -> gxrun.GxJob:
    """GX's part of ``worker``, adopted as ``validate`` adopts it."""
    gxrun.prestart(run_id, worker)
    job = gxrun.GxJob(gxrun.GxJob.new_dir(run_id))
    assert job.adopted and job.pid == worker.pid and job.job_dir == worker.part_dir(GX)
    return job


def _hand_over_users(job: gxrun.GxJob) -> None:
    """A small GX job: the bundled user master-data suite on two rows, one duplicate id."""
    suite = load_suite("master_users", BUNDLED_DIR)
    pl.DataFrame({"_row": [0, 1], "user_id": ["U1", "U1"], "approval_limit": [5.0, 1.0]}
                 ).write_parquet(job.job_dir / "sample.parquet")
    spec = {"run_name": "r", "label": "users", "batch_rows": 1000, "batch_key": None,
            "suite": {"raw": suite.raw, "path": str(suite.path)}, "params": {},
            "suites_dir": str(BUNDLED_DIR), "master": [], "docs": False}
    (job.job_dir / gxrun.JOB).write_text(json.dumps(spec), "utf-8")
    job.submit()


def test_a_gx_failure_does_not_lose_the_model_scores(tmp_path: Path) -> None:
    glob, ctx = _stage(tmp_path, "shared")
    _, local = _stage(tmp_path, "local")
    worker = JobWorker.start(ctx.run_id, (GX, MODELS))
    try:
        models = ModelWorker(ctx.run_id, worker)
        job = _gx_job(ctx.run_id, worker)
        job.submit()  # without its job file: GX fails
        models.start(glob, ctx)
        scores = models.finish(None, ctx.log, {})
        models.join(ctx.log)
        outcome = job.result()
        job.close()
        assert _gone(worker.pid)
    finally:
        worker.close()
    assert outcome["error"].startswith("Great Expectations could not validate this delivery "
                                       "(FileNotFoundError")
    expected = score_lines(pl.scan_parquet(glob), local)
    assert scores.select("model_score").equals(expected.select("model_score"))
    assert pl.read_parquet(ctx.run_dir / "model_scores.parquet").equals(
        pl.read_parquet(local.run_dir / "model_scores.parquet"))
    assert not worker.job_dir.exists()


def test_a_model_failure_does_not_lose_gx_s_result(tmp_path: Path) -> None:
    glob, ctx = _stage(tmp_path, "bad", Settings(models=ModelSettings(detectors=["bogus"])))
    worker = JobWorker.start(ctx.run_id, (GX, MODELS))
    try:
        models = ModelWorker(ctx.run_id, worker)
        job = _gx_job(ctx.run_id, worker)
        _hand_over_users(job)
        models.start(glob, ctx)
        with pytest.raises(UserError, match="unknown detector 'bogus'"):
            models.finish(None, ctx.log)
        outcome = job.result()
    finally:
        worker.close()
    assert outcome["error"] is None
    [duplicate] = [r for r in outcome["results"] if r["key"] == "user_id_duplicate"]
    assert duplicate["unexpected_count"] == 2 and not duplicate["success"]
    # GX waited for the models (their failure released it) and counted its own thread's CPU
    assert outcome["timings"]["gx_queued"] >= 0 and outcome["timings"]["gx_cpu_worker"] > 0


def test_a_killed_shared_worker_is_reported_by_both_parts(tmp_path: Path) -> None:
    glob, ctx = _stage(tmp_path, "killed")
    worker = JobWorker.start(ctx.run_id, (GX, MODELS))
    try:
        models = ModelWorker(ctx.run_id, worker)
        job = _gx_job(ctx.run_id, worker)
        os.kill(worker.pid, signal.SIGKILL)
        job.submit()
        models.start(glob, ctx)
        with pytest.raises(ModelWorkerDied, match=r"killed by signal 9 without a result"):
            models.finish(None, ctx.log)
        with pytest.raises(gxrun.GxWorkerError,
                           match=r"the GX worker process killed by signal 9 without a result"):
            job.result()
    finally:
        worker.close()
    assert not worker.job_dir.exists()


def test_ending_every_part_without_a_job_ends_the_worker() -> None:
    """Each part's handle ends its own part; the last one closes stdin and the worker ends
    (the models dropped, the gate never handed over: nothing hangs)."""
    worker = JobWorker.start("ends", (GX, MODELS))
    try:
        worker.end(MODELS)
        assert worker.bound.running()
        worker.end(GX)
        assert worker.bound.wait() == 0
        assert not worker.send(GX, "go")  # an ended part sends nothing more
    finally:
        worker.close()
    assert not worker.job_dir.exists()


EXPLAIN_IMPORTS = """
import json, pickle, sys, tempfile, time
from pathlib import Path
import polars as pl
from detect.validation import gxworker
from detect import modelworker
from detect.config import Settings
from test_features import tiny_ledger
gxworker.import_gx()
assert modelworker.import_models() is None
tmp = Path(tempfile.mkdtemp())
tiny_ledger(300).write_parquet(tmp / "h.parquet")
(tmp / "run").mkdir()
(tmp / "models").mkdir()
job = {"history_glob": str(tmp / "h.parquet"), "run_id": "r", "run_dir": str(tmp / "run"),
       "entity": "Testdorf", "settings": Settings(), "rescore_history": False}
(tmp / "models" / "job.pkl").write_bytes(pickle.dumps(job))
part = modelworker.ModelPart(tmp / "models", time.perf_counter())
part.go()
before = set(sys.modules)
part.explain()
print("PROBE", json.dumps({"new": sorted(set(sys.modules) - before),
                           "done": (tmp / "models" / "done.json").exists()}))
"""


def test_the_models_explain_step_imports_nothing_beside_the_gx_thread() -> None:
    """``models explain`` may run while GX's thread validates: it must not import modules
    then (two threads importing at once deadlocked CPython's import locks), so
    ``import_models`` imports what writing the outputs needs."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", EXPLAIN_IMPORTS], capture_output=True,
                          text=True, cwd=root / "tests", timeout=300,
                          env={**os.environ, "BELEGWACHT_LAZY_IMPORTS": "1",
                               "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(next(x for x in done.stdout.splitlines() if x.startswith("PROBE"))[6:])
    assert out == {"new": [], "done": True}
