"""Run expectation suites through Great Expectations 1.x: Data Docs and a cross-check.

GX 1.x has no Polars or DuckDB source, so each batch goes through its pandas source as an
Arrow-backed DataFrame (only the columns the suite reads, plus ``_row``). Deliveries larger than
``validation.gx_rows`` are validated on a sample of whole journals (``sample_pick``); batches of
about ``validation.batch_rows`` rows keep the lines of a journal together, so uniqueness stays
exact. One ephemeral context per run; a Checkpoint per suite; Data Docs are built once at the
end into the job folder and moved into the run folder when the run collects them. The rows to
quarantine come from ``masks`` (same suite, vectorised).

GX decides nothing, so ``detect.validate`` runs it off the critical path: ``GxJob`` starts a
niced child process (``detect.jobworker`` with GX's part, ``gxworker``; the pipeline starts it
when the run starts, ``prestart``, shared with the model worker when the run has one, else the
gate starts it when it begins); it imports GX meanwhile, validates once the gate hands over
its sample, while the next stages run, and the run collects the outcome before it is
published. Nothing in the parent process imports GX. Spawning, binding to the parent and
collecting the worker is ``detect.workerproc``.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

import polars as pl  # noqa: E402

from detect import workerproc  # noqa: E402
from detect.validation.suites import Suite  # noqa: E402

ROW = "_row"


@dataclass
class CheckResult:
    key: str
    type: str
    columns: list[str]
    severity: str
    reason: str
    element_count: int = 0
    unexpected_count: int = 0
    success: bool = True
    rows: list[int] = field(default_factory=list)
    """``_row`` of failing rows, when run with the COMPLETE result format."""

    def summary(self) -> dict[str, Any]:
        return {"success": self.success, "element_count": self.element_count,
                "unexpected_count": self.unexpected_count}


class GxWorkerError(RuntimeError):
    """The GX worker process ended without writing its result (crashed, was killed, ...)."""


JOB_PREFIX = "belegwacht-gx-"
PART = "gx"
RESULT, JOB, LOG = workerproc.RESULT, "job.json", workerproc.LOG


class GxJob:
    """Great Expectations' part of the gate in a child process (``detect.jobworker``, its
    ``gx`` part). Started early (``validate`` does so before its own work, or the pipeline
    when the run starts: ``prestart``, or its worker shared with the models), the worker
    imports GX meanwhile and then waits on its stdin; ``submit()`` tells it that ``job_dir``
    holds ``job.json`` and the frames as Parquet. It writes ``result.json`` (and the Data Docs
    into ``job_dir/docs``); ``result()`` waits for it and reads that.

    Why a process and not a thread: GX's import (pandas, SQLAlchemy, narwhals, ...) overlapped
    the main thread's first imports of PyOD/scikit-learn/SciPy/pandas in the models stage, and
    CPython's per-module import locks then deadlocked (``_DeadlockError`` on
    ``narwhals.stable.v1``) or handed out half-initialised modules. A process shares no import
    state, is niced (``BELEGWACHT_GX_NICE``, default 10, set by the worker itself: the process,
    or only GX's thread beside the models) and costs the parent no GIL time.

    The worker dies with its parent (``workerproc.bind_to_parent``), so a killed run leaves no
    GX process behind; a job that is never collected (a run failing before publish) is killed
    and its folder removed when the ``GxJob`` is garbage collected or the process exits.

    A ``job_dir`` handed out by ``new_dir`` for a run whose worker was pre-started
    (``prestart``) is that worker's GX folder: the ``GxJob`` adopts the running worker instead
    of starting another. A worker shared with the models is never ended by the ``GxJob``
    (the pipeline ends it): ``result()`` waits for GX's result file, not for the process."""

    def __init__(self, job_dir: Path) -> None:
        from detect.jobworker import JobWorker

        with _PRESTART_LOCK:
            pre = _PRESTARTED.pop(job_dir, None)
            if pre is not None:
                pre.adopted = True
        self._shared = pre.worker if pre is not None else JobWorker(job_dir, (PART,))
        self._worker = self._shared.bound
        self.job_dir = self._shared.part_dir(PART)
        self.adopted = pre is not None
        self.cpu_seconds: float | None = None
        self.max_rss_mb: int | None = None

    def __enter__(self) -> GxJob:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: Any) -> None:
        if kind is not None:  # the gate failed before it handed over the job
            self.close()

    @property
    def pid(self) -> int | None:
        return self._worker.pid

    def submit(self) -> None:
        """The job files are in place: let the worker start on them. A worker that died
        already is reported by ``result()``."""
        self._shared.send(PART, "go")
        self._shared.end(PART)

    def result(self) -> dict[str, Any]:
        """Wait for the worker's ``result.json`` and return it. A worker of GX alone is waited
        for: ``cpu_seconds`` is then its whole CPU time (its own and its threads', from
        ``wait4``); a shared one goes on (the GX thread's CPU is in the result's timings).
        Raises ``GxWorkerError`` when it ended without a result."""
        worker = self._worker
        if worker.proc is None:
            raise GxWorkerError(f"the GX worker process could not be started "
                                f"({worker.start_error})")
        self._shared.end(PART)  # never submitted: the worker ends without a result
        name = f"{PART}/{RESULT}"
        if self._shared.shared():
            payload = worker.await_result(name)
        else:
            if worker.running():
                workerproc.renice(worker.proc.pid, 0)  # someone waits: no reason to be polite
            worker.wait()
            self.cpu_seconds, self.max_rss_mb = worker.cpu_seconds, worker.max_rss_mb
            payload = worker.result(name)
        if payload is not None:
            return payload
        worker.wait()
        raise GxWorkerError(f"the GX worker process {worker.exit_text()}")

    def close(self) -> None:
        """No GX job (more): a worker of GX alone is killed and its folder removed (move the
        Data Docs out first); in a shared worker the part ends and its folder goes."""
        if self._shared.shared():
            self._shared.end(PART)
            shutil.rmtree(self.job_dir, ignore_errors=True)
        else:
            self._shared.close()

    @staticmethod
    def new_dir(run_id: str) -> Path:
        """A private temporary folder for one job (``workerproc.new_job_dir``), or the folder
        of the worker pre-started for ``run_id`` (the first call for that run only)."""
        with _PRESTART_LOCK:
            handed = _PRESTARTED_RUNS.pop(run_id, None)
        if handed is not None:
            return handed
        return workerproc.new_job_dir(JOB_PREFIX, run_id)


# pre-started workers not yet adopted, by GX folder; their GX folders by run id until handed out
_PRESTARTED: dict[Path, GxPrestart] = {}
_PRESTARTED_RUNS: dict[str, Path] = {}
_PRESTART_LOCK = threading.Lock()


class GxPrestart:
    """A GX worker started when the run starts (``prestart``), before ``validate`` creates its
    ``GxJob``: GX's import (~1 CPU s with ``gxworker.import_gx``) then overlaps ingest as well
    as the gate, and is done by the time the gate hands over its sample. ``validate``'s
    ``GxJob(GxJob.new_dir(run_id))`` adopts it. ``close()`` kills it unless it was adopted
    (a run that failed or was skipped before its gate); the pipeline calls it once the gate
    is done, and with ``adopted_too`` when the run ends (a run failing after its gate does not
    leave the adopted worker to garbage collection). With ``worker`` (the pipeline's worker
    shared with the models) it is that worker's GX part, and closing it only ends the part."""

    def __init__(self, run_id: str, worker: Any = None) -> None:
        from detect.jobworker import JobWorker

        self.run_id = run_id
        self.worker = worker if worker is not None else JobWorker.start(run_id, (PART,))
        self.job_dir = self.worker.part_dir(PART)
        self.adopted = False
        """A ``GxJob`` took the worker over (it collects and closes it then)."""
        with _PRESTART_LOCK:
            _PRESTARTED[self.job_dir] = self
            _PRESTARTED_RUNS[run_id] = self.job_dir

    @property
    def pid(self) -> int | None:
        return self.worker.pid

    def close(self, *, adopted_too: bool = False) -> None:
        """Kill the worker unless a ``GxJob`` adopted it (that job collects it); with
        ``adopted_too`` in any case: the run ends, nobody collects it any more (after a
        published run it has been collected already, and this does nothing). A shared
        worker's GX part just ends."""
        with _PRESTART_LOCK:
            if _PRESTARTED_RUNS.get(self.run_id) == self.job_dir:
                del _PRESTARTED_RUNS[self.run_id]
            _PRESTARTED.pop(self.job_dir, None)
            adopted = self.adopted
        if adopted_too or not adopted:
            if self.worker.shared():
                self.worker.end(PART)
            else:
                self.worker.close()


def prestart(run_id: str, worker: Any = None) -> GxPrestart:
    """Start the GX worker of run ``run_id`` now, or offer ``worker``'s GX part (a
    ``jobworker.JobWorker`` shared with the models); ``validate`` adopts it (see
    ``GxPrestart``)."""
    return GxPrestart(run_id, worker)


def quiet_gx() -> None:
    for name in ("great_expectations", "great_expectations.core", "posthog"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="great_expectations")


class GxRunner:
    """One ephemeral GX context with a Data Docs site in ``docs_dir`` (or none)."""

    def __init__(self, docs_dir: Path | None, run_name: str) -> None:
        quiet_gx()
        import great_expectations as gx
        from great_expectations.data_context.types.base import (
            DataContextConfig, InMemoryStoreBackendDefaults, ProgressBarsConfig)

        self.gx = gx
        self.run_name = run_name
        self.docs_dir = docs_dir
        sites = {}
        if docs_dir is not None:
            sites["run"] = {
                "class_name": "SiteBuilder", "show_how_to_buttons": False,
                "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                                  "base_directory": str(docs_dir)},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"}}
        config = DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(), analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False), data_docs_sites=sites)
        self.context = gx.get_context(mode="ephemeral", project_config=config)
        self.source = self.context.data_sources.add_pandas("belegwacht")
        self._used: dict[str, int] = {}

    def _checkpoint(self, suite: Suite, result_format: str) -> Any:
        from great_expectations.expectations.expectation_configuration import (
            ExpectationConfiguration)

        gx = self.gx
        # a context holds each name once; a suite validated twice gets a numbered name
        self._used[suite.name] = self._used.get(suite.name, 0) + 1
        name = suite.name if self._used[suite.name] == 1 else \
            f"{suite.name} ({self._used[suite.name]})"
        expectations = [
            ExpectationConfiguration(type=e["type"], kwargs=e.get("kwargs", {}),
                                     meta=e.get("meta", {}), notes=e.get("notes"),
                                     severity=e.get("severity", "critical")).to_domain_obj()
            for e in suite.raw["expectations"]]
        gx_suite = self.context.suites.add(gx.ExpectationSuite(
            name=name, expectations=expectations, notes=suite.raw.get("notes"),
            meta=suite.raw.get("meta", {})))
        asset = self.source.add_dataframe_asset(name)
        batch = asset.add_batch_definition_whole_dataframe(f"{name} delivery")
        definition = self.context.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=batch, suite=gx_suite))
        return self.context.checkpoints.add(gx.Checkpoint(
            name=f"{name} checkpoint", validation_definitions=[definition],
            result_format={"result_format": result_format,
                           "unexpected_index_column_names": [ROW]}))

    def validate(self, suite: Suite, frame: pl.DataFrame, parameters: dict[str, Any],
                 batch_rows: int, batch_key: list[str] | None = None,
                 result_format: str = "SUMMARY", label: str = "") -> list[CheckResult]:
        """Validate ``frame`` (must hold ``_row`` and the suite's columns) batch by batch."""
        from great_expectations.core.run_identifier import RunIdentifier

        results = {c.key: CheckResult(c.key, c.type, c.columns, c.severity, c.reason)
                   for c in suite.checks}
        if not suite.checks or frame.height == 0:
            return list(results.values())
        checkpoint = self._checkpoint(suite, result_format)
        columns = [ROW] + [c for c in suite.columns() if c in frame.columns]
        batches = split(frame.select(columns) if batch_key is None
                        else frame.select(list(dict.fromkeys(columns + batch_key))),
                        batch_rows, batch_key)
        for i, part in enumerate(batches, start=1):
            pdf = part.select(columns).to_pandas(use_pyarrow_extension_array=True)
            name = f"{self.run_name} {label}".strip()
            if len(batches) > 1:
                name += f" (batch {i} of {len(batches)})"
            run_id = RunIdentifier(run_name=name)
            outcome = checkpoint.run(batch_parameters={"dataframe": pdf},
                                     expectation_parameters=parameters, run_id=run_id)
            for validation in outcome.run_results.values():
                for res in validation.results:
                    key = res.expectation_config.meta["key"]
                    _merge(results[key], res)
        return list(results.values())

    def build_docs(self) -> Path | None:
        if self.docs_dir is None:
            return None
        self.context.build_data_docs()
        # GX copies ~3 MB of tutorial GIFs into every site; the pages we render never show them
        for gif in (self.docs_dir / "static" / "images").glob("*.gif"):
            gif.unlink()
        index = self.docs_dir / "index.html"
        return index if index.exists() else None


def _merge(target: CheckResult, res: Any) -> None:
    r = res.result or {}
    target.success = target.success and bool(res.success)
    target.element_count += int(r.get("element_count") or 0)
    target.unexpected_count += int(r.get("unexpected_count") or 0)
    info = res.exception_info or {}
    # GX reports one {"raised_exception", ...} dict, or one per metric keyed by metric id
    for item in [info] if "raised_exception" in info else list(info.values()):
        if isinstance(item, dict) and item.get("raised_exception"):
            raise RuntimeError(f"expectation {target.key} failed to run in Great Expectations: "
                               f"{item.get('exception_message')}")
    target.rows.extend(int(item[ROW]) for item in r.get("unexpected_index_list") or [])


def sample_pick(height: int, rows: int, key: list[str]) -> pl.Expr | None:
    """True for the rows of about ``rows`` rows of whole journals, chosen by a hash of ``key``
    (deterministic); None when GX validates all ``height`` rows."""
    if rows <= 0 or height <= rows:
        return None
    buckets = math.ceil(height / rows)
    return pl.concat_str([pl.col(c).cast(pl.String) for c in key], separator="\x1f",
                         ignore_nulls=True).hash(seed=11) % buckets == 0


def split(frame: pl.DataFrame, batch_rows: int, key: list[str] | None) -> list[pl.DataFrame]:
    """Batches of about ``batch_rows`` rows; rows sharing ``key`` stay together."""
    n = max(1, math.ceil(frame.height / max(1, batch_rows)))
    if n == 1:
        return [frame]
    if key is None:
        return [frame.slice(i * batch_rows, batch_rows) for i in range(n)]
    bucket = pl.concat_str([pl.col(c).cast(pl.String) for c in key], separator="\x1f",
                           ignore_nulls=True).hash(seed=7) % n
    parts = frame.with_columns(bucket.alias("_batch")).partition_by("_batch", include_key=False)
    return [p for p in parts if p.height]
