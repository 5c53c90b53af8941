"""The model stage in a worker process (``detect.modelworker``), the pre-started GX worker and
the run's worker shared by both (``detect.jobworker``).

The worker must give bit-identical outputs to the in-process stage, raise the worker's errors
in the job as the job would raise them itself, report a GX failure and a model failure each
on its own, and never outlive the job. Each worker start costs ~1-2 s (interpreter, Polars,
PyOD, scikit-learn, GX), so only a handful of tests start one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import polars as pl
import pytest

from detect import jobworker, modelworker, pipeline, workerproc
from detect.config import ModelSettings, Settings
from detect.errors import UserError
from detect.models import ModelLoadError, score_lines
from detect.privacy import KEY_FILE
from detect.runlog import StepLog
from detect.validation import gxrun
from test_features import tiny_ledger

ROOT = Path(__file__).resolve().parents[1]


class Log:
    """A run log that keeps what the worker's stage reported."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self.events: list[dict[str, Any]] = []

    def warn(self, message: str, **_: Any) -> None:
        self.lines.append(("warning", message))

    def info(self, message: str, **_: Any) -> None:
        self.lines.append(("info", message))

    def event(self, kind: str, **data: Any) -> None:
        self.events.append({"event": kind, **data})


def _gone(pid: int, seconds: float = 10.0) -> bool:
    """The process has exited (a zombie counts: it waits for its new parent to reap it)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        stat = Path(f"/proc/{pid}/stat")
        try:
            if stat.read_text().split(") ")[1].startswith("Z"):
                return True
        except (OSError, IndexError):
            return True
        time.sleep(0.05)
    return False


def _stage(tmp_path: Path, name: str, settings: Settings | None = None) -> tuple[str, Any]:
    """A history of 300 two-line journals (the delivery: the last 20) and a run context."""
    run_dir = tmp_path / name
    run_dir.mkdir()
    history = tmp_path / "history.parquet"
    if not history.exists():
        tiny_ledger(300).write_parquet(history)
    pl.read_parquet(history).filter(pl.col("journal_id") >= "J00290").write_parquet(
        run_dir / "bookings.parquet")
    ctx = SimpleNamespace(run_dir=run_dir, run_id=f"run-{name}", entity="Testdorf",
                          settings=settings or Settings(), log=Log(), rescore_history=False)
    return str(history), ctx


def test_the_worker_gives_the_in_process_outputs(tmp_path: Path) -> None:
    settings = Settings()
    # journal J00298's top line scores 0.81, the hit journal J00291's 0.59: texts on both sides
    settings.scoring.model_floor = 0.7
    glob, ctx = _stage(tmp_path, "worker", settings)
    _, local = _stage(tmp_path, "local", settings)
    hits = pl.DataFrame({"entity": ["Testdorf"], "fiscal_year": [2025],
                         "journal_id": ["J00291"]}).with_columns(pl.col("fiscal_year")
                                                                  .cast(pl.Int32))
    worker = modelworker.ModelWorker(ctx.run_id)
    try:
        worker.start(glob, ctx)
        step: dict[str, Any] = {}
        scores = worker.finish(hits, ctx.log, step)
        worker.join(ctx.log)
        assert _gone(worker.pid)
    finally:
        worker.close()
    assert not worker.job_dir.exists()
    expected = score_lines(pl.scan_parquet(glob), local, explain_journals=hits)
    assert pl.read_parquet(ctx.run_dir / "model_scores.parquet").equals(
        pl.read_parquet(local.run_dir / "model_scores.parquet"))
    # the job gets the texts ranking prints (journals at or above model_floor) with the
    # scores; the hit journals' texts below it only reach model_scores.parquet
    floor = ctx.settings.scoring.model_floor
    shown = pl.col("model_score").max().over("entity", "fiscal_year", "journal_id") >= floor
    texts = ["model_reasons_de", "model_reasons_en", "top_features"]
    assert scores.equals(expected.with_columns(pl.when(shown).then(pl.col(texts))))
    assert expected.filter(~shown)["model_reasons_de"].null_count() < expected.filter(
        ~shown).height  # the hit journal below the floor has texts in the file
    assert scores["model_reasons_de"].null_count() < scores.height
    meta = json.loads((ctx.run_dir / "models" / "ensemble.json").read_text())
    assert meta["scored_lines"] == 20 and meta["run_id"] == ctx.run_id
    assert ctx.log.lines == local.log.lines  # the dropped features' note reached the log
    assert ctx.log.lines[0][1].startswith("features without information (constant, dropped)")
    [done] = [e for e in ctx.log.events if e["event"] == "model_worker_done"]
    assert done["cpu_seconds"] >= step["cpu_seconds"] > 0 and done["save_seconds"] >= 0
    # the step reports the worker's own figures and how long the job waited for it
    assert step["worker"] is True and step["max_rss_mb"] > 0
    assert step["waited_seconds"] >= 0 and step["seconds"] > 0
    timings = step["worker_timings"]
    assert {"import", "fit_score", "explain", "idle_go"} <= set(timings)
    assert done["explain_hits_seconds"] >= 0


@pytest.mark.parametrize("guess", ["copy", "other"])
def test_the_worker_uses_guessed_features_only_for_the_same_file(tmp_path: Path,
                                                                  guess: str) -> None:
    """``models guess`` computes the features of a file before the history exists; ``go`` uses
    them only if the history is that file byte for byte (a copy, as the merge makes of a
    first load), else computes them from the history. The outputs are the in-process ones
    either way."""
    glob, ctx = _stage(tmp_path, "worker")
    _, local = _stage(tmp_path, "local")
    guessed = tmp_path / "guessed.parquet"
    if guess == "copy":
        shutil.copyfile(glob, guessed)
    else:  # the delivery's lines only: what a nightly delta's ingest file is to its history
        shutil.copyfile(ctx.run_dir / "bookings.parquet", guessed)
    worker = modelworker.ModelWorker(ctx.run_id)
    try:
        worker.guess(guessed, ctx)
        worker.start(glob, ctx)
        step: dict[str, Any] = {}
        scores = worker.finish(None, ctx.log, step)
        worker.join(ctx.log)
    finally:
        worker.close()
    timings = step["worker_timings"]
    assert timings["guess_used"] is (guess == "copy") and timings["guess_cpu"] > 0
    score_lines(pl.scan_parquet(glob), local)
    assert pl.read_parquet(ctx.run_dir / "model_scores.parquet").equals(
        pl.read_parquet(local.run_dir / "model_scores.parquet"))
    assert scores.select("model_score").equals(
        pl.read_parquet(local.run_dir / "model_scores.parquet").select("model_score"))


def test_a_guess_holds_only_for_the_same_bytes_settings_and_vendors(tmp_path: Path) -> None:
    history = tmp_path / "history" / "fiscal_year=2025" / "part.parquet"
    history.parent.mkdir(parents=True)
    tiny_ledger(50).write_parquet(history)
    guessed = tmp_path / "ingested.parquet"
    shutil.copyfile(history, guessed)
    run_dir = tmp_path / "run"
    (run_dir / "master").mkdir(parents=True)
    vendors = pl.DataFrame({"vendor_id": ["V1"], "name": ["Muster GmbH"]})
    vendors.write_parquet(run_dir / "master" / "vendors.parquet")
    settings = Settings()
    job = {"history_glob": str(tmp_path / "history" / "*" / "*.parquet"),
           "run_dir": str(run_dir), "settings": settings}
    guess = {"path": str(guessed), "settings": Settings(), "vendors": vendors}
    assert modelworker._guess_holds(guess, job)
    assert not modelworker._guess_holds({**guess, "vendors": None}, job)
    assert not modelworker._guess_holds({**guess, "vendors": vendors.with_columns(
        pl.lit("Other AG").alias("name"))}, job)
    other = Settings()
    other.models.fit_sample = 1000
    assert not modelworker._guess_holds({**guess, "settings": other}, job)
    # a second partition, or another file's bytes, is another history
    second = tmp_path / "history" / "fiscal_year=2024" / "part.parquet"
    second.parent.mkdir()
    shutil.copyfile(history, second)
    assert not modelworker._guess_holds(guess, job)
    second.unlink()
    tiny_ledger(51).write_parquet(guessed)
    assert not modelworker._guess_holds(guess, job)
    guessed.unlink()
    assert not modelworker._guess_holds(guess, job)


def test_a_user_error_in_the_worker_is_the_same_user_error(tmp_path: Path) -> None:
    glob, ctx = _stage(tmp_path, "bad", Settings(models=ModelSettings(detectors=["bogus"])))
    worker = modelworker.ModelWorker(ctx.run_id)
    try:
        worker.start(glob, ctx)
        with pytest.raises(UserError) as caught:
            worker.finish(None, ctx.log)
    finally:
        worker.close()
    assert type(caught.value) is UserError
    assert caught.value.message == "unknown detector 'bogus' in [models] detectors"
    assert caught.value.hint == "known detectors: iforest, hbos, ecod"


def test_user_errors_keep_their_class_file_and_hint() -> None:
    error = ModelLoadError("model file does not match", file="/x/ensemble.joblib", hint="re-run")
    payload = json.loads(json.dumps(modelworker._error(error)))
    with pytest.raises(ModelLoadError) as caught:
        modelworker._raise(payload, Log(), 1)
    assert str(caught.value) == str(error)
    assert (caught.value.file, caught.value.hint) == ("/x/ensemble.joblib", "re-run")


def test_an_internal_error_in_the_worker_carries_its_traceback(tmp_path: Path) -> None:
    _, ctx = _stage(tmp_path, "missing")
    worker = modelworker.ModelWorker(ctx.run_id)
    try:
        worker.start(str(tmp_path / "no-such-history.parquet"), ctx)
        with pytest.raises(modelworker.ModelWorkerError, match="in the model worker: ") as caught:
            worker.finish(None, ctx.log)
    finally:
        worker.close()
    assert not isinstance(caught.value, UserError)
    [event] = [e for e in ctx.log.events if e["event"] == "worker_error"]
    assert event["worker"] == "models" and "Traceback" in event["traceback"]
    assert "start_stage" in event["traceback"]


def test_a_killed_worker_is_a_clear_error(tmp_path: Path) -> None:
    glob, ctx = _stage(tmp_path, "killed")
    worker = modelworker.ModelWorker(ctx.run_id)
    try:
        os.kill(worker.pid, signal.SIGKILL)
        worker.start(glob, ctx)
        with pytest.raises(modelworker.ModelWorkerDied,
                           match=rf"model worker process \(pid {worker.pid}\) killed by "
                                 "signal 9 without a result") as caught:
            worker.finish(None, ctx.log)
        assert "out of memory" in caught.value.hint
    finally:
        worker.close()
    assert not worker.job_dir.exists()


@pytest.mark.parametrize("after", ["nothing", "go"])
def test_a_worker_whose_input_ends_removes_its_folder_itself(tmp_path: Path, after: str) -> None:
    """End of input is "no job" (the parent gave up or died: a dying parent's pipe closes
    before its death signal arrives): the worker removes its job folder and exits, before
    the job and while it waits for the hit journals, without the parent's ``close``."""
    glob, ctx = _stage(tmp_path, f"eof-{after}")
    worker = modelworker.ModelWorker(ctx.run_id)
    bound = worker._worker
    try:
        if after == "go":
            worker.start(glob, ctx)
        bound.send(b"", last=True)
        assert bound.wait() == 0
        assert not worker.job_dir.exists()
    finally:
        worker.close()


def test_a_worker_that_ended_before_it_is_collected_reports_its_cpu_and_memory() -> None:
    """``running()`` must not reap the worker (the GX worker is usually done before the run
    collects it): ``wait()`` reads its CPU seconds and peak RSS from ``wait4``."""
    worker = workerproc.BoundWorker("detect.workerproc",
                                    workerproc.new_job_dir(jobworker.JOB_PREFIX, "reap"))
    try:
        deadline = time.monotonic() + 30
        while worker.running() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not worker.running() and worker.returncode is None  # ended, not yet reaped
        assert worker.wait() == 0
        assert worker.cpu_seconds is not None and worker.cpu_seconds > 0
        assert worker.max_rss_mb is not None and worker.max_rss_mb > 0
    finally:
        worker.close()
    assert not worker.job_dir.exists()


_ORPHAN = """
import os, signal, sys, time
from detect.jobworker import JobWorker
from detect.validation import gxrun
worker = JobWorker.start("orphan", ("gx", "models"))
gx = gxrun.prestart("orphan-gx")
print(worker.pid, worker.job_dir, gx.pid, gx.worker.job_dir, flush=True)
time.sleep(1.0)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_the_workers_die_with_a_killed_job(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", _ORPHAN], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert done.returncode == -9, done.stderr
    model_pid, model_dir, gx_pid, gx_dir = done.stdout.split()
    assert _gone(int(model_pid)) and _gone(int(gx_pid))
    deadline = time.monotonic() + 5
    while (Path(model_dir).exists() or Path(gx_dir).exists()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(model_dir).exists() and not Path(gx_dir).exists()


# --- the pipeline ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sample_data.generate import generate

    root = tmp_path_factory.mktemp("ledger")
    generate(2000, 11, root, ["ads"])
    return root / "ads"


def _settings(worker_min_mb: float) -> Settings:
    settings = Settings(entity="Musterstadt")
    settings.models.worker_min_mb = worker_min_mb
    settings.validation.data_docs = False
    return settings


def _run(ledger: Path, data_dir: Path, settings: Settings) -> pipeline.RunSummary:
    return pipeline.run_delivery([ledger], fmt="auto", settings=settings, data_dir=data_dir,
                                 log=StepLog(quiet=True))


def _events(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run_dir / "run.log.jsonl").read_text().splitlines()]


def _steps(run_dir: Path) -> dict[str, dict[str, Any]]:
    return {e["step"]: e for e in _events(run_dir) if e["event"] == "step_done"}


def test_a_job_with_the_worker_publishes_what_the_job_without_it_does(
        tmp_path: Path, ledger: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[Any] = []
    adopted: list[bool] = []
    pids: list[int | None] = []
    original_job = gxrun.GxJob.__init__

    def job_init(self: Any, job_dir: Path) -> None:
        original_job(self, job_dir)
        adopted.append(self.adopted)
        pids.append(self.pid)

    monkeypatch.setattr(gxrun.GxJob, "__init__", job_init)
    original = modelworker.ModelWorker.__init__

    def init(self: Any, run_id: str, worker: Any = None) -> None:
        original(self, run_id, worker)
        started.append(self)

    monkeypatch.setattr(modelworker.ModelWorker, "__init__", init)
    local = _run(ledger, tmp_path / "local", _settings(-1))
    assert started == [] and adopted == [True]
    (tmp_path / "worker" / KEY_FILE).parent.mkdir(parents=True)  # same bank pseudonyms
    shutil.copy(tmp_path / "local" / KEY_FILE, tmp_path / "worker" / KEY_FILE)
    remote = _run(ledger, tmp_path / "worker", _settings(0))
    assert len(started) == 1 and adopted == [True, True]
    # one worker process for both parts: GX's part is the model worker's process
    assert pids[1] == started[0].pid and pids[0] != pids[1]
    assert _gone(started[0].pid, 1) and not started[0].job_dir.exists()
    for name in ("model_scores", "findings", "rule_hits"):
        a = pl.read_parquet(local.run_dir / f"{name}.parquet")
        b = pl.read_parquet(remote.run_dir / f"{name}.parquet")
        assert a.equals(b), name
    assert (remote.run_dir / "models" / "ensemble.joblib").exists()
    steps = _steps(remote.run_dir)
    models = steps["models"]
    assert models["worker"] is True and models["worker_pid"] == started[0].pid
    # a first load: the worker computed the features of the ingest's file before the history
    # existed, and the history turned out to be that file
    assert models["worker_timings"]["guess_used"] is True
    # a run onto a history that exists (here the same delivery again) sends no guess: a
    # nightly delta keeps the history's lines, the guess would be wrong
    guesses: list[Any] = []
    monkeypatch.setattr(modelworker.ModelWorker, "guess",
                        lambda self, *a: guesses.append(a))
    settings = _settings(0)
    settings.validation.reprocess = True
    again = _run(ledger, tmp_path / "worker", settings)
    assert guesses == [] and "guess_used" not in _steps(again.run_dir)["models"][
        "worker_timings"]
    assert models["cpu_seconds"] > models["main_cpu_seconds"]
    assert models["waited_seconds"] <= models["main_seconds"]
    assert remote.manifest["durations"]["models"] == models["seconds"]
    [done] = [e for e in _events(remote.run_dir) if e["event"] == "model_worker_done"]
    assert done["pid"] == started[0].pid and done["cpu_seconds"] >= models["cpu_seconds"]
    assert remote.manifest["models"]["scored_lines"] == local.manifest["models"]["scored_lines"]
    assert "worker" not in _steps(local.run_dir)["models"]
    assert not list(Path(tempfile.gettempdir()).glob(
        f"{jobworker.JOB_PREFIX}{remote.run_id}-*"))
    # GX ran in the shared worker, after the models had handed over their scores
    validation = remote.manifest["validation"]
    assert not [w for w in validation["warnings"] if "Great Expectations" in w]
    assert validation["timings"]["gx_queued"] >= 0 and validation["timings"]["gx_bookings"] > 0
    assert json.loads((remote.run_dir / "validation.json").read_text())[
        "great_expectations"] == "done"


def test_a_failing_job_leaves_no_worker(tmp_path: Path, ledger: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The rules fail while the model worker fits: the job kills it and removes its folder,
    and the GX worker that ``validate`` adopted (no one collects it now); the run is recorded
    as failed as usual."""
    import detect.rules

    started: list[Any] = []
    prestarted: list[gxrun.GxPrestart] = []
    original = modelworker.ModelWorker.__init__
    original_prestart = gxrun.prestart

    def init(self: Any, run_id: str, worker: Any = None) -> None:
        original(self, run_id, worker)
        started.append(self)

    def prestart(run_id: str, worker: Any = None) -> gxrun.GxPrestart:
        prestarted.append(original_prestart(run_id, worker))
        return prestarted[-1]

    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("rules broke")

    monkeypatch.setattr(modelworker.ModelWorker, "__init__", init)
    monkeypatch.setattr(gxrun, "prestart", prestart)
    monkeypatch.setattr(detect.rules, "run_rules", broken)
    with pytest.raises(RuntimeError, match="rules broke"):
        _run(ledger, tmp_path / "var", _settings(0))
    [worker] = started
    assert _gone(worker.pid, 1) and not worker.job_dir.exists()
    [gx] = prestarted
    assert gx.adopted and _gone(gx.pid, 1) and not gx.job_dir.exists()
    assert list((tmp_path / "var" / "runs").glob("*.failed"))


def test_a_job_failing_before_its_gate_leaves_no_gx_worker(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    prestarted: list[gxrun.GxPrestart] = []
    original = gxrun.prestart

    def prestart(run_id: str, worker: Any = None) -> gxrun.GxPrestart:
        prestarted.append(original(run_id, worker))
        return prestarted[-1]

    def ingest(*_: Any, **__: Any) -> Any:
        raise UserError("cannot read this")

    monkeypatch.setattr(gxrun, "prestart", prestart)
    monkeypatch.setattr(pipeline, "ingest", ingest)
    delivery = tmp_path / "d.csv"
    delivery.write_text("x\n1\n")
    with pytest.raises(UserError, match="cannot read this"):
        _run(delivery, tmp_path / "var", _settings(-1))
    [gx] = prestarted
    assert not gx.adopted and _gone(gx.pid, 1) and not gx.job_dir.exists()
    assert gxrun._PRESTARTED == {} and gxrun._PRESTARTED_RUNS == {}


def test_a_history_above_worker_max_lines_runs_the_models_in_the_job(
        tmp_path: Path, ledger: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker was started (the delivery is large enough), but the merged history is longer
    than ``[models] worker_max_lines``: the job ends the worker and runs the stage itself."""
    started: list[Any] = []
    original = modelworker.ModelWorker.__init__

    def init(self: Any, run_id: str, worker: Any = None) -> None:
        original(self, run_id, worker)
        started.append(self)

    def no_start(*_: Any, **__: Any) -> None:
        raise AssertionError("the worker must not get the job")

    monkeypatch.setattr(modelworker.ModelWorker, "__init__", init)
    monkeypatch.setattr(modelworker.ModelWorker, "start", no_start)
    # nor a guess of the features (at 10M it would add the worker's memory to validation's)
    monkeypatch.setattr(modelworker.ModelWorker, "guess", no_start)
    settings = _settings(0)
    settings.models.worker_max_lines = 1
    summary = _run(ledger, tmp_path / "var", settings)
    [worker] = started
    assert _gone(worker.pid, 1) and not worker.job_dir.exists()
    assert "worker" not in _steps(summary.run_dir)["models"]
    assert (summary.run_dir / "model_scores.parquet").exists()
    [note] = [e["message"] for e in _events(summary.run_dir)
              if e["event"] == "info" and "worker_max_lines" in e["message"]]
    assert note.startswith("outlier models after the rules, in this process: the history has ")
    # the shared worker's GX part went on without the models
    assert json.loads((summary.run_dir / "validation.json").read_text())[
        "great_expectations"] == "done"


def test_a_model_worker_that_cannot_start_leaves_the_models_to_the_job_and_says_so(
        tmp_path: Path, ledger: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No process for the model worker (process limits, no interpreter): the job runs the
    stage itself, and the run log says why the worker was not used."""
    real_popen = subprocess.Popen

    def popen(args: list[str], *a: Any, **kw: Any) -> Any:
        if "gx,models" in args:  # the shared worker; GX alone may start
            raise OSError("fork refused")
        return real_popen(args, *a, **kw)

    monkeypatch.setattr(workerproc.subprocess, "Popen", popen)
    summary = _run(ledger, tmp_path / "var", _settings(0))
    assert "worker" not in _steps(summary.run_dir)["models"]
    assert (summary.run_dir / "model_scores.parquet").exists()
    [note] = [e["message"] for e in _events(summary.run_dir)
              if e["event"] == "warning" and "model worker" in e["message"]]
    assert "could not be started (OSError: fork refused)" in note
    assert note.endswith("the outlier models run in this process after the rules")


def test_small_deliveries_stay_in_process(tmp_path: Path) -> None:
    delivery = tmp_path / "d.csv"
    delivery.write_bytes(b"x" * 1000)
    workers = pipeline.Workers("r1", Settings(), [delivery])
    try:
        assert workers.models is None and workers.gx is not None
        assert workers.delivery_mb < 0.01
    finally:
        workers.close()
    assert not workers.gx.job_dir.exists()


def test_a_job_killed_while_the_worker_fits_leaves_no_worker_and_reruns(
        tmp_path: Path, ledger: Path) -> None:
    """SIGKILL at ``rules_done`` (the worker has the job): the worker dies with the job and
    removes its folder; the rerun recovers the aborted run and publishes."""
    from detect.lifecycle import CRASH_ENV

    config = tmp_path / "belegwacht.toml"
    config.write_text('entity = "Musterstadt"\n[validation]\ndata_docs = false\n'
                      "[models]\nworker_min_mb = 0\n", "utf-8")
    args = [sys.executable, "-m", "detect", "run", str(ledger), "--data-dir",
            str(tmp_path / "var"), "--config", str(config), "-q"]
    job = subprocess.Popen(args, cwd=ROOT, env={**os.environ, CRASH_ENV: "rules_done"},
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, err = job.communicate(timeout=300)
    assert job.returncode == -9, err
    pattern = f"{jobworker.JOB_PREFIX}*-p{job.pid}-*"

    def left() -> list[Any]:  # the model worker's folder, any worker process (GX's too)
        return list(Path(tempfile.gettempdir()).glob(pattern)) + [
            p for p in Path("/proc").glob("[0-9]*") if f"-p{job.pid}-".encode() in _cmdline(p)]

    deadline = time.monotonic() + 20
    while left() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left()
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    runs = tmp_path / "var" / "runs"
    assert len(list(runs.glob("*.failed"))) == 1
    [published] = [p for p in runs.iterdir() if not p.name.endswith(".failed")]
    assert (published / "model_scores.parquet").exists()
    assert "worker" in _steps(published)["models"]


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""


@pytest.mark.parametrize(("years", "sent"), [([2025, 2025], True), ([2024, 2025], False)])
def test_a_first_load_is_guessed_only_when_it_holds_one_fiscal_year(
        tmp_path: Path, years: list[int], sent: bool) -> None:
    """A first load of two fiscal years becomes two history partitions: the guess (one file)
    would be wrong, cost the worker the features twice and delay its start, so none is sent."""
    from types import SimpleNamespace

    delivered = tmp_path / "bookings.parquet"
    pl.DataFrame({"fiscal_year": years, "journal_id": ["J1", "J2"]}).write_parquet(delivered)
    guesses: list[Path] = []
    workers = SimpleNamespace(models=SimpleNamespace(guess=lambda path, ctx: guesses.append(path)))
    ctx = SimpleNamespace(data_dir=tmp_path / "var", entity="Musterstadt", settings=Settings())
    pipeline._guess_history(workers, SimpleNamespace(bookings_file=delivered), ctx)
    assert guesses == ([delivered] if sent else [])
