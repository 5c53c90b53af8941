"""The model stage in the run's worker process, overlapping the rules (``detect.jobworker``).

Why: the stage needs the rule hits only to pick which lines get reason texts
(``models.explain_mask``, ~0.4 s of ~4 s at 1M lines); its imports, features, fit and scoring
need only the merged history. On two cores the rules
(~1.5 cores busy) and the models (~1.2) overlap well, so the worker

1. is started when the run starts (the pipeline's ``JobWorker`` with GX's part, handed to
   ``ModelWorker(run_id, worker)``; alone: ``ModelWorker(run_id)``) and imports the stage
   (after GX, reusing its NumPy/Polars/pyarrow) while the parent hashes and ingests
   (``import_models``);
2. on a first load, gets ``models guess`` after ingest (``guess``: ``guess.pkl`` with the
   ingest's canonical file, the settings and the vendor master data's path) and computes that
   file's features while the parent validates and merges, in the worker's idle time between
   its imports and ``go``; ``go`` uses them only if the history is that file byte for byte
   (``_guess_holds``; validation keeps the file as the clean one when nothing is quarantined,
   and the merge copies a one-partition delivery), else builds the features from the history;
3. gets ``models go`` once the history is merged (``start``: ``job.pkl`` with the history
   glob, the run folder and the settings), fits and scores the delivery's lines (``models.start_stage``)
   and explains the lines ranking prints (journals at or above ``[scoring] model_floor``:
   they need no rule hits), all while the parent runs the rules, and hands the scores over as
   ``scores.arrow`` with its ``result.json`` (the stage's warnings and notes for the run log,
   its timings, or its error) -- usually before the rules are done, so the job does not wait;
4. gets ``models explain`` once the rules are done (``finish``: the hit journals as
   ``explain.parquet``), explains the hit journals' top lines below the floor (the app shows
   those texts; ranking does not), writes ``models/`` and ``model_scores.parquet`` into the
   run folder (``models.save_stage``) while the parent ranks the items, and ``done.json``; the
   parent collects it before the manifest (``join``). The file equals the in-process stage's.

Errors: a ``UserError`` in the worker is raised again in the parent as the same class with
the same message, file and hint; any other exception as ``ModelWorkerError`` with its
traceback in the run log; a worker that dies without a result (killed, out of memory) as
``ModelWorkerDied`` naming its exit code. GX's part in the same process reports its own
failures (``gxrun.GxJob``). The parent kills the worker when the run fails (the pipeline's
``Workers.close``); the worker dies with the parent.

Used for deliveries of at least ``[models] worker_min_mb`` and histories of at most
``[models] worker_max_lines``; otherwise the stage runs in-process (``models.score_lines``):
for a small delivery the worker's start-up would cost more than the overlap saves, for a large
history rules and models side by side would need the memory of both.
"""

from __future__ import annotations

import pickle
import threading
import time
from pathlib import Path
from typing import Any

from detect import jobworker, workerproc
from detect.errors import UserError
from detect.runlog import max_rss_mb

PART = jobworker.MODELS
JOB, JOURNALS, SCORES, DONE = "job.pkl", "explain.parquet", "scores.arrow", "done.json"
GUESS = "guess.pkl"


class ModelWorkerError(RuntimeError):
    """An unexpected exception in the model worker (its traceback is in the run log)."""


class ModelWorkerDied(UserError):
    """The model worker process ended without a result (killed, out of memory, crashed)."""


# --------------------------------------------------------------------------- parent side

class ModelWorker:
    """The parent's handle of the models part of a run's worker (see the module docstring):
    of ``worker`` (shared with GX's part; the pipeline ends it), or of a worker of its own
    (``close`` ends that)."""

    def __init__(self, run_id: str, worker: jobworker.JobWorker | None = None) -> None:
        self._own = worker is None
        self._shared = worker if worker is not None else \
            jobworker.JobWorker.start(run_id, (PART,))
        self._worker = self._shared.bound
        self.job_dir = self._shared.part_dir(PART)
        self.started = self._worker.proc is not None
        self.start_error = self._worker.start_error  # why it could not be started, if so
        self._sent_go = False
        self._fetch_lock = threading.Lock()
        self._fetched: tuple[dict[str, Any] | None, Any, BaseException | None] | None = None

    @property
    def pid(self) -> int | None:
        return self._worker.pid

    def guess(self, path: Path, ctx: Any) -> None:
        """The history will probably be ``path`` byte for byte (the ingest's canonical file on
        a first load: validation keeps it as the clean file when nothing is quarantined, and the
        merge copies a one-partition delivery's clean file): the worker computes its features
        now, while the job validates and merges (``ModelPart.guess``), instead of next to the
        rules. It uses them only if the history turns out to be that file."""
        spec = {"path": str(path), "settings": ctx.settings,
                "vendors": str(Path(ctx.run_dir) / "master" / "vendors.parquet")}
        tmp = self.job_dir / (GUESS + ".tmp")
        tmp.write_bytes(pickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL))
        tmp.replace(self.job_dir / GUESS)
        self._shared.send(PART, "guess")

    def start(self, history_glob: str, ctx: Any) -> None:
        """The history is merged: fit and score now (while the parent runs the rules)."""
        job = {"history_glob": history_glob, "run_id": ctx.run_id, "run_dir": str(ctx.run_dir),
               "sent_at": time.time(),
               "entity": ctx.entity, "settings": ctx.settings,
               "rescore_history": bool(getattr(ctx, "rescore_history", False))}
        tmp = self.job_dir / (JOB + ".tmp")
        tmp.write_bytes(pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL))
        tmp.replace(self.job_dir / JOB)
        self._sent_go = True
        self._shared.send(PART, "go")  # a worker that is gone is reported by finish()

    def _fetch(self) -> tuple[dict[str, Any] | None, Any, BaseException | None]:
        """The worker's ``result.json`` and the scores it handed over, once (None, None, None:
        it died; a payload with an error: no scores; the exception reading them, if any).
        Waits for the worker; thread-safe, so a thread may fetch while the rules run."""
        with self._fetch_lock:
            if self._fetched is None:
                import polars as pl

                payload = self._worker.await_result(f"{PART}/{workerproc.RESULT}", poll=0.005)
                scores, error = None, None
                if payload is not None and payload.get("error") is None:
                    try:
                        scores = pl.read_ipc(self.job_dir / SCORES)
                    except Exception as exc:  # noqa: BLE001 - raised by finish()
                        error = exc
                self._fetched = (payload, scores, error)
            return self._fetched

    def early_scores(self) -> Any:
        """The scores as soon as the worker has them (usually before the rules end), for work
        that needs no rule hits (``scoring.prepare``); None when the worker failed or died,
        which ``finish`` reports. Reads them for ``finish`` too: called in a thread while the
        rules run, it takes reading ~1M rows (~0.1 s) off the job's path."""
        if not self._sent_go:
            raise RuntimeError("ModelWorker.early_scores() before start()")
        return self._fetch()[1]

    def finish(self, explain_journals: Any, log: Any, step: dict[str, Any] | None = None
               ) -> Any:
        """Hand over the journals to explain (the rule hits) and return the scores once the
        worker has them; its warnings and notes go to ``log``, its timings into ``step`` (the
        run log's ``step_done`` of ``models``). Raises the worker's error. The scores carry
        reason texts only where ranking reads them (journals at or above ``[scoring]
        model_floor``); the worker then adds those of the hit journals and writes ``models/``
        and ``model_scores.parquet`` while the job ranks: ``join()``."""
        from detect.features import JOURNAL

        if not self._sent_go:
            raise RuntimeError("ModelWorker.finish() before start()")
        clock = time.perf_counter()
        if explain_journals is not None:
            explain_journals.select(JOURNAL).write_parquet(self.job_dir / JOURNALS,
                                                           statistics=False)
        self._shared.send(PART, "explain")
        self._shared.end(PART)
        waited_from = time.perf_counter()
        payload, scores, error = self._fetch()
        if payload is None:
            self._worker.wait()
            raise self._died()
        for note in payload.get("log", []):
            (log.warn if note["kind"] == "warning" else log.info)(note["message"])
        if payload.get("error") is not None:
            _raise(payload["error"], log, self.pid)
        if error is not None:
            raise error
        waited = time.perf_counter() - waited_from
        timings = payload.get("timings", {})
        if step is not None:
            # the worker's own figures up to the scores (its whole process: start-up, imports,
            # features, fit, score, explain); writing the outputs is in ``join``'s event
            step.update(seconds=round(timings.get("fit_score", 0.0)
                                      + timings.get("explain", 0.0), 3),
                        cpu_seconds=timings.get("cpu"), max_rss_mb=timings.get("max_rss_mb"),
                        worker=True, worker_pid=self.pid,
                        handover_seconds=round(waited_from - clock, 3),
                        waited_seconds=round(waited, 3), worker_timings=timings)
        return scores

    def join(self, log: Any) -> None:
        """Wait until the worker has written ``models/`` and ``model_scores.parquet`` into
        the run folder (before the run's manifest reads them). The ``model_worker_done``
        event has the worker's CPU and peak RSS when it wrote them (the whole process: with
        GX's part and the shared imports; ``wait4``'s figures when it has ended already)."""
        clock = time.perf_counter()
        done = self._worker.await_result(f"{PART}/{DONE}", poll=0.005)
        waited = time.perf_counter() - clock
        if done is None:
            self._worker.wait()
            raise self._died()
        if done.get("error") is not None:
            _raise(done["error"], log, self.pid)
        timings = done.get("timings", {})
        cpu, rss = timings.get("cpu"), timings.get("max_rss_mb")
        if self._own or not self._worker.running():
            self._worker.wait()  # ends right after its files: the figures of the whole process
            cpu = self._worker.cpu_seconds if self._worker.cpu_seconds is not None else cpu
            rss = self._worker.max_rss_mb if self._worker.max_rss_mb is not None else rss
        log.event("model_worker_done", pid=self.pid, waited_seconds=round(waited, 3),
                  cpu_seconds=cpu, max_rss_mb=rss, save_seconds=timings.get("save"),
                  explain_hits_seconds=timings.get("explain_hits"))

    def _died(self) -> ModelWorkerDied:
        return ModelWorkerDied(
            f"the model worker process (pid {self.pid}) {self._worker.exit_text()}",
            hint="a worker killed by signal 9 usually ran out of memory; [models] "
                 "worker_min_mb = -1 runs the model stage in the job's own process")

    def close(self) -> None:
        """No model job (more): a worker of its own is killed and its folder removed; in a
        shared worker the part just ends (GX's part goes on; the pipeline ends the worker)."""
        if self._own:
            self._shared.close()
        else:
            self._shared.end(PART)


def _raise(error: dict[str, Any], log: Any, pid: int | None) -> None:
    """The worker's exception, raised here: a ``UserError`` as its own class (same message,
    file, line, column, hint), anything else as ``ModelWorkerError`` (traceback in the log)."""
    if error.get("user"):
        import importlib

        cls: type = UserError
        try:  # only this package's error classes (the class name comes from the worker)
            if not str(error["module"]).startswith("detect."):
                raise ImportError(error["module"])
            found = getattr(importlib.import_module(error["module"]), error["type"])
            if isinstance(found, type) and issubclass(found, UserError):
                cls = found
        except (ImportError, AttributeError, KeyError):
            pass
        exc = cls.__new__(cls)
        UserError.__init__(exc, error["message"], file=error.get("file"),
                           line=error.get("line"), column=error.get("column"),
                           hint=error.get("hint"))
        raise exc
    log.event("worker_error", worker="models", pid=pid, error=error["text"],
              traceback=error.get("traceback", ""))
    raise ModelWorkerError(f"in the model worker: {error['text']}")


# --------------------------------------------------------------------------- worker side

class _Notes:
    """The worker's stand-in for the run log: warnings and notes go back in ``result.json``."""

    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def warn(self, message: str, **_: Any) -> None:
        self.items.append({"kind": "warning", "message": message})

    def info(self, message: str, **_: Any) -> None:
        self.items.append({"kind": "info", "message": message})

    def event(self, *_: Any, **__: Any) -> None:
        pass


class _Context:
    """What the model stage reads of the pipeline's ``RunContext``."""

    def __init__(self, job: dict[str, Any], log: _Notes) -> None:
        self.run_id, self.entity = job["run_id"], job["entity"]
        self.run_dir = Path(job["run_dir"])
        self.settings = job["settings"]
        self.rescore_history = job["rescore_history"]
        self.log = log


def _error(exc: BaseException) -> dict[str, Any]:
    import traceback

    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, UserError):
        return {"user": True, "module": type(exc).__module__, "type": type(exc).__qualname__,
                "message": exc.message, "file": exc.file, "line": exc.line,
                "column": exc.column, "hint": exc.hint, "text": text}
    return {"user": False, "text": text, "traceback": "".join(
        traceback.format_exception(type(exc), exc, exc.__traceback__))}


TEXTS = ["model_reasons_de", "model_reasons_en", "top_features"]


def _read_vendors(path: str | None) -> Any:
    """``models._vendors``' frame from its path (None: no vendor master data)."""
    import polars as pl

    return pl.read_parquet(path) if path is not None and Path(path).exists() else None


def _guess_holds(guessed: dict[str, Any], job: dict[str, Any]) -> bool:
    """The guessed features are the job's: its history glob names exactly one file, with the
    same bytes as the guessed file, and the settings and vendor master data are the same
    (checked, not assumed: a quarantined row, a second fiscal year or a history that existed
    already make the history another file)."""
    import filecmp
    import glob

    try:
        files = glob.glob(job["history_glob"], recursive=True)  # ** as DuckDB reads it
        if len(files) != 1 or not filecmp.cmp(files[0], guessed["path"], shallow=False):
            return False
        if job["settings"] != guessed["settings"]:
            return False
        vendors = _read_vendors(str(Path(job["run_dir"]) / "master" / "vendors.parquet"))
        before = guessed["vendors"]
        if (vendors is None) != (before is None):
            return False
        return vendors is None or vendors.equals(before)
    except (OSError, ValueError):
        return False


def _no_journals() -> Any:
    import polars as pl

    return pl.DataFrame(schema={"entity": pl.String, "fiscal_year": pl.Int32,
                                "journal_id": pl.String})


def _explain_ranked(scored: Any, ctx: Any) -> tuple[Any, Any, dict[str, Any]]:
    """The scores with the reason texts ranking can print: the top lines of journals at or
    above ``[scoring] model_floor`` (``models.explain_mask`` without rule hits). Needs no
    rule hits, so it runs while the rules do; ``scored`` keeps its frames for
    ``_explain_hits``."""
    from dataclasses import replace

    from detect import models

    return models.explain_stage(replace(scored), ctx, _no_journals())


def _explain_hits(scored: Any, ranked: Any, journals: Any, ctx: Any) -> Any:
    """``ranked`` completed to what ``models.explain_stage(scored, ctx, journals)`` gives:
    texts also for the top lines of journals with rule hits below the floor (the app shows
    them with every item; ranking does not print them). Texts are per line, so the lines
    explained in two parts get the texts of one pass."""
    import numpy as np

    from detect import models

    keys, settings, meta = scored.keys, ctx.settings, scored.meta
    scored.keys = None
    if scored.model is None or keys is None:  # nothing was fitted: no texts at all
        scored.frame = None
        return ranked
    done = models.explain_mask(keys, settings, _no_journals()).to_numpy()
    new = np.flatnonzero(models.explain_mask(keys, settings, journals).to_numpy() & ~done)
    if not len(new):
        scored.frame = None
        return ranked
    first = (meta["explained_lines"], meta["seconds"]["explain"],
             meta["cpu_seconds"]["explain"])
    rows = new if scored.rows is None else scored.rows[new]
    # only the journals' top lines: each is its journal's best, so all of them get texts
    part = models.Scored(meta, scored.model, scored.frame, keys[new], rows, scored.used)
    scored.frame = None
    texts, _, _ = models.explain_scored(part, settings, journals)
    meta["explained_lines"] += first[0]
    meta["seconds"]["explain"] = round(meta["seconds"]["explain"] + first[1], 2)
    meta["cpu_seconds"]["explain"] = round(meta["cpu_seconds"]["explain"] + first[2], 2)
    return ranked.with_columns(ranked.get_column(c).scatter(new, texts.get_column(c))
                               for c in TEXTS)


def import_models() -> BaseException | None:
    """Import Polars and the model stage (NumPy; PyOD/scikit-learn only for detectors that
    need them, matplotlib and pandas lazily: ``models._deferred_imports``) with the cyclic
    garbage collector paused, the modules' objects then frozen out of later collections (an
    import makes thousands of objects, none garbage); the error, if
    any, is raised when the job comes. With them the modules ``models.save_stage`` first
    imports when it writes (joblib for the model file, Polars' Parquet writer; ~0.17 CPU s,
    paid there otherwise): the ``models explain`` step may run beside the shared worker's GX
    thread, and two threads importing at once is what deadlocked CPython's import locks
    (``workerproc``); measured, the step then imports nothing new (GX's thread imports 7 small
    modules: its masks, Data Docs renderer, jinja2.ext, pyarrow's pandas bridge)."""
    import gc

    gc.disable()
    try:
        import polars  # noqa: F401
        import joblib  # noqa: F401
        import polars._utils.parquet  # noqa: F401

        from detect import models

        # big NumPy blocks reused instead of fresh mmaps (1M: ~-0.15 CPU s, ~-55k faults)
        models.tune_allocator()
    except Exception as exc:  # noqa: BLE001 - reported when the job comes
        return exc
    finally:
        gc.enable()
    gc.freeze()
    return None


class ModelPart:
    """The models part of the worker process (``detect.jobworker``): imports when made (while
    the parent ingests), ``go`` fits, scores and hands the scores over (``result.json``,
    ``scores.arrow``), ``explain`` completes the texts and writes the outputs
    (``done.json``). Both in the worker's main thread, at normal priority."""

    def __init__(self, directory: Path, started: float) -> None:
        self.directory = directory
        clock = time.perf_counter()
        self.failed = import_models()
        imported = time.perf_counter()
        # import: from the worker's start (GX's import before it, if shared); import_cpu: the
        # process's CPU until then; import_models: this part's own import
        self.timings: dict[str, float] = {"import": round(imported - started, 3),
                                          "import_cpu": round(time.process_time(), 3),
                                          "import_models": round(imported - clock, 3)}
        self.imported, self.imported_at = imported, time.time()
        self.scored: Any = None
        self.guessed: dict[str, Any] | None = None

    def guess(self) -> None:
        """``models guess``: the features of the file the history will probably be (``GUESS``:
        the ingest's canonical file, sent after ingest on a first load, see ``ModelWorker.guess``),
        computed while the job validates and merges instead of beside its rules. Used by
        ``go`` only if the history is that file byte for byte (``_guess_holds``); any failure
        here just leaves no guess (``go`` computes the features as always and reports)."""
        import polars as pl

        clock, cpu = time.perf_counter(), time.process_time()
        self.timings["idle_guess"] = round(clock - self.imported, 3)
        try:
            if self.failed is not None:
                return
            from detect import models

            spec = pickle.loads((self.directory / GUESS).read_bytes())
            vendors = _read_vendors(spec["vendors"])
            features = models.build_features(pl.scan_parquet(spec["path"]), spec["settings"],
                                             vendors, percentiles=False)
            self.guessed = {"path": spec["path"], "settings": spec["settings"],
                            "vendors": vendors, "features": features,
                            "seconds": round(time.perf_counter() - clock, 2),
                            "cpu_seconds": round(time.process_time() - cpu, 2)}
        except Exception:  # noqa: BLE001 - no guess; the real features report any error
            self.guessed = None
        self.timings["guess"] = round(time.perf_counter() - clock, 3)
        self.timings["guess_cpu"] = round(time.process_time() - cpu, 3)

    def _guessed_features(self, job: dict[str, Any]) -> Any:
        """The guessed features if they are the job's (else None, and they are dropped)."""
        guessed, self.guessed = self.guessed, None
        if guessed is None:
            return None
        held = _guess_holds(guessed, job)
        self.timings["guess_used"] = held
        if not held:
            return None
        return guessed

    def go(self) -> None:
        import polars as pl

        go, cpu_go = time.perf_counter(), time.process_time()
        directory, timings = self.directory, self.timings
        notes = _Notes()
        timings["idle_go"] = round(go - self.imported, 3)
        payload: dict[str, Any] = {"log": notes.items, "timings": timings, "error": None}
        try:
            from detect import models

            if self.failed is not None:
                raise self.failed
            job = pickle.loads((directory / JOB).read_bytes())
            # how long the job waited for the imports (GX's and this part's, one after the
            # other), 0 when they were done in time: the models' start on the critical path
            timings["late_go"] = round(max(0.0, self.imported_at - job.get("sent_at", 0)), 3)
            self.ctx = ctx = _Context(job, notes)
            guessed = self._guessed_features(job)
            scored = models.start_stage(pl.scan_parquet(job["history_glob"]), ctx,
                                        None if guessed is None else guessed["features"])
            if guessed is not None:  # the features' figures are the guess's
                scored.meta["seconds"]["features"] = guessed["seconds"]
                scored.meta["cpu_seconds"]["features"] = guessed["cpu_seconds"]
            del guessed
            timings["fit_score"] = round(time.perf_counter() - go, 3)
            timings["fit_score_cpu"] = round(time.process_time() - cpu_go, 3)
            # while the rules still run: the texts ranking reads (journals at or above
            # ``model_floor``), then the scores go to the job before it asks for them
            clock, cpu = time.perf_counter(), time.process_time()
            scores, model, meta = _explain_ranked(scored, ctx)
            # Arrow IPC, uncompressed: ~0.1 s to write and read at 1M lines, against ~0.3-0.6
            # s for the Parquet file, which is written after the job has the scores
            scores.write_ipc(directory / SCORES, compression="uncompressed")
            timings["explain"] = round(time.perf_counter() - clock, 3)
            timings["explain_cpu"] = round(time.process_time() - cpu, 3)
            self.scored = (scored, scores, model, meta)
        except Exception as exc:  # noqa: BLE001 - the parent raises it again
            payload["error"] = _error(exc)
        timings["cpu"] = round(time.process_time(), 3)
        timings["max_rss_mb"] = max_rss_mb()
        self.waiting = time.perf_counter()
        workerproc.write_result(directory, payload)

    def explain(self) -> None:
        """The hit journals' texts, then ``models/`` and ``model_scores.parquet`` (while the
        job ranks the items); nothing after a failed ``go`` (the job raised its error)."""
        if self.scored is None:
            return
        import polars as pl

        from detect import models

        (scored, scores, model, meta), self.scored = self.scored, None
        clock = saving = time.perf_counter()
        done: dict[str, Any] = {"error": None,
                                "timings": {"idle_explain": round(clock - self.waiting, 3)}}
        try:
            path = self.directory / JOURNALS
            journals = pl.read_parquet(path) if path.exists() else None
            scores = _explain_hits(scored, scores, journals, self.ctx)
            saving = time.perf_counter()
            done["timings"]["explain_hits"] = round(saving - clock, 3)
            models.save_stage(scores, model, meta, self.ctx)
        except Exception as exc:  # noqa: BLE001 - the parent raises it again
            done["error"] = _error(exc)
        done["timings"]["save"] = round(time.perf_counter() - saving, 3)
        done["timings"]["cpu"] = round(time.process_time(), 3)
        done["timings"]["max_rss_mb"] = max_rss_mb()
        workerproc.write_result(self.directory, done, DONE)
