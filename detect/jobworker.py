"""The run's worker process: ``python -m detect.jobworker JOB_DIR PARENT_PID MAIN PARTS``.

A run hands two parts of its work to a child process: Great Expectations (``gx``: the sample
cross-check, the master-data suites, the Data Docs; ``gxrun.GxJob``, ``gxworker.run``) and the
outlier models (``models``: features, fit, scores, reason texts; ``modelworker.ModelWorker``).
When a run uses both (deliveries of at least ``[models] worker_min_mb``), both live in **one**
process (``PARTS`` = ``gx,models``): NumPy, Polars, pyarrow (and SciPy/pandas where both use
them) and the interpreter are then loaded once. Measured: the imports cost ~1.14 CPU s in one
process against ~1.1 (lean GX) + ~0.3 (the models since they import neither PyOD nor
scikit-learn; ~1.4 before) in two, ~10k page faults less, and one interpreter's start-up goes
too (docs/validation.md). A run without the model worker starts the same module with ``gx``
only, and ``validate`` alone (no pre-started worker) too.

Order inside the worker (one thread reads the parent's lines from stdin; ``workerproc``
describes the pattern):

* the imports, one after the other in the main thread while the parent ingests: GX first
  (``gxworker.import_gx``, lean), then the model stage (``modelworker.import_models``), which
  reuses GX's NumPy/Polars/pyarrow. Never two imports in two threads at once: CPython's
  per-module import locks deadlocked on that (see ``workerproc``);
* ``models guess`` (first loads, after ingest): the features of the ingest's file, which the
  history will probably be a byte copy of (``modelworker.ModelPart.guess``), while the parent
  validates and merges; ``go`` uses them only if the history is that file;
* ``models go`` (the history is merged): features, fit, scores and the texts ranking prints
  run at once in the main thread at normal priority -- the job needs the scores before its
  rules end; ``models explain`` (the rule hits): the remaining texts and ``models/``;
* ``gx go`` (the gate handed over its sample, ~0.1 s before ``models go``): GX runs in its own
  thread, niced (``BELEGWACHT_GX_NICE``, per thread on Linux), once the models have handed
  over their scores (or ended without a job: ``models end``). Started at once beside the fit
  instead, it slowed the models by holding the GIL while niced and descheduled; after the
  scores it takes the core time the rules leave and is done before the job publishes
  (``gx_wait`` 0.0). Without a models part GX runs in the main thread, the whole process niced
  (its import too), as the GX worker always did;
* ``<part> end``: the parent sends that part nothing more; when every part has ended the
  parent closes stdin, and the worker ends after its GX thread. End of input before every
  part has ended: the parent gave up or died; the worker removes its folder and ends.

Each part has its own folder (``JOB_DIR/gx``, ``JOB_DIR/models``) and result files, so a GX
failure and a model failure are reported separately, each with its own message, and one does
not lose the other's result: GX catches its failures into its result (``gxworker.run``), the
models write theirs as an ``error``; only a crash of the whole process (killed, out of memory)
leaves both without a result, and both say so with its exit code.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

from detect import workerproc

WORKER = "detect.jobworker"
JOB_PREFIX = "belegwacht-worker-"
GX, MODELS = "gx", "models"


# --------------------------------------------------------------------------- parent side

class JobWorker:
    """The parent's handle of one worker process with the given parts (``gx``, ``models``).

    Each part's handle (``gxrun.GxJob``, ``modelworker.ModelWorker``) sends its own lines
    (``send``) and says when it is done (``end``); stdin is closed once every part has ended.
    ``close()`` kills the process and removes its folder (also at garbage collection)."""

    def __init__(self, job_dir: Path, parts: tuple[str, ...]) -> None:
        self.job_dir = job_dir
        self.parts = parts
        for part in parts:
            (job_dir / part).mkdir(exist_ok=True)
        env = dict(os.environ)
        if GX in parts:
            env["GX_ANALYTICS_ENABLED"] = "False"
        if MODELS in parts:
            # detect.models imports matplotlib.pyplot and pandas lazily in its worker only
            env.setdefault("BELEGWACHT_LAZY_IMPORTS", "1")
        else:
            # GX alone: its few Polars calls need no thread pool beside the job's
            env["POLARS_MAX_THREADS"] = os.environ.get("BELEGWACHT_GX_THREADS", "1")
        self.bound = workerproc.BoundWorker(WORKER, job_dir, env=env, args=(",".join(parts),))
        self._open = set(parts)
        self._lock = threading.Lock()

    @classmethod
    def start(cls, run_id: str, parts: tuple[str, ...]) -> JobWorker:
        """A worker for run ``run_id`` in a new private folder (``workerproc.new_job_dir``)."""
        return cls(workerproc.new_job_dir(JOB_PREFIX, run_id), parts)

    @property
    def started(self) -> bool:
        return self.bound.proc is not None

    @property
    def pid(self) -> int | None:
        return self.bound.pid

    def part_dir(self, part: str) -> Path:
        return self.job_dir / part

    def send(self, part: str, command: str) -> bool:
        """``<part> <command>`` to the worker; False when the part has ended or the worker is
        gone (the part's handle reports that when it collects its result)."""
        with self._lock:
            if part not in self._open:
                return False
            return self.bound.send(f"{part} {command}\n".encode())

    def end(self, part: str) -> None:
        """The part gets nothing more (``<part> end``); the last part to end closes stdin."""
        with self._lock:
            if part not in self._open:
                return
            self._open.discard(part)
            self.bound.send(f"{part} end\n".encode(), last=not self._open)

    def shared(self) -> bool:
        """More than one part lives in this process: no part's handle may end it alone."""
        return len(self.parts) > 1

    def close(self) -> None:
        """Kill the worker if it still runs; remove its folder."""
        with self._lock:
            self._open.clear()
        self.bound.close()


# --------------------------------------------------------------------------- worker side

class _GxPart:
    """GX in the worker: imported first; its job runs when ``gx go`` came and ``release``
    allows it (at once when the process has no models part)."""

    def __init__(self, directory: Path, threaded: bool) -> None:
        self.directory = directory
        self.threaded = threaded
        self.wanted = False
        self.released = not threaded
        self.thread: threading.Thread | None = None
        self.timings: dict[str, float] = {}

    def import_(self, started: float) -> None:
        from detect.validation import gxworker
        from detect.validation.gxrun import quiet_gx

        quiet_gx()
        gxworker.import_gx()
        self.imported = time.perf_counter()
        self.timings["gx_import"] = round(self.imported - started, 3)

    def go(self) -> None:
        self.wanted = True
        self.timings["gx_idle"] = round(time.perf_counter() - self.imported, 3)
        self._maybe_start()

    def release(self) -> None:
        """The models no longer need the core (scores handed over, or no model job)."""
        self.released = True
        self._maybe_start()

    def _maybe_start(self) -> None:
        if not (self.wanted and self.released) or self.thread is not None:
            return
        if not self.threaded:
            self._run(time.perf_counter())
            return
        self.thread = threading.Thread(target=self._run, args=(time.perf_counter(),),
                                       name="gx", daemon=True)
        self.thread.start()

    def _run(self, queued: float) -> None:
        import json

        from detect.validation import gxworker
        from detect.validation.gxrun import JOB

        if self.threaded:
            gxworker.be_polite(thread=True)
        self.timings["gx_queued"] = round(queued - self.imported - self.timings["gx_idle"], 3)
        try:
            spec = json.loads((self.directory / JOB).read_text(encoding="utf-8"))
            outcome = gxworker.run(spec, self.directory)
        except Exception as exc:  # noqa: BLE001 - reported like any GX failure
            outcome = {"error": f"Great Expectations could not validate this delivery "
                                f"({type(exc).__name__}: {exc}); the vectorised checks "
                                "decided alone and there are no Data Docs", "timings": {}}
        # gx_import: start-up and GX's import; gx_idle: then waiting for the gate to hand
        # over; gx_queued: then waiting for the models to hand over their scores
        outcome["timings"] = {**self.timings, **outcome["timings"]}
        workerproc.write_result(self.directory, outcome)

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()


def main(argv: list[str]) -> int:
    job_dir, parent, main_thread = workerproc.worker_args(argv)
    parts = argv[3].split(",") if len(argv) > 3 else [GX]
    workerproc.bind_to_parent(parent, main_thread, job_dir, "worker")
    started = time.perf_counter()
    directory = Path(job_dir)
    gx = _GxPart(directory / GX, threaded=MODELS in parts) if GX in parts else None
    models: Any = None
    if gx is not None:
        if MODELS not in parts:
            from detect.validation import gxworker

            gxworker.be_polite()  # GX alone: the whole process below the job, imports too
        gx.import_(started)
    if MODELS in parts:
        from detect import modelworker

        models = modelworker.ModelPart(directory / MODELS, started)
    ended: set[str] = set()
    for line in iter(sys.stdin.readline, ""):
        part, _, command = line.strip().partition(" ")
        if command == "end":
            ended.add(part)
        if part == GX and command == "go" and gx is not None:
            gx.go()
        elif part == MODELS and models is not None:
            if command == "guess":
                models.guess()
            elif command == "go":
                models.go()
                if gx is not None:
                    gx.release()  # the scores are handed over (or failed)
            elif command == "explain":
                models.explain()
            elif command == "end" and gx is not None:
                gx.release()
    if not ended >= set(parts):
        # end of input without every part's end: the parent gave up or died (its pipe closes
        # before its death signal arrives); nobody collects the folder (as ``bind_to_parent``)
        shutil.rmtree(job_dir, ignore_errors=True)
        return 0
    if gx is not None:
        gx.join()  # the parent waits for GX's result file
    return 0


if __name__ == "__main__":
    workerproc.exit_now(main(sys.argv[1:]))
