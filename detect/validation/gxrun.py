"""Run expectation suites through Great Expectations 1.x: Data Docs and a cross-check.

GX 1.x has no Polars or DuckDB source, so each batch goes through its pandas source as an
Arrow-backed DataFrame (only the columns the suite reads, plus ``_row``). Deliveries larger than
``validation.gx_rows`` are validated on a sample of whole journals (``sample_pick``); batches of
about ``validation.batch_rows`` rows keep the lines of a journal together, so uniqueness stays
exact. One ephemeral context per run; a Checkpoint per suite; Data Docs are built once at the
end into the job folder and moved into the run folder when the run collects them. The rows to
quarantine come from ``masks`` (same suite, vectorised).

GX decides nothing, so ``detect.validate`` runs it off the critical path: ``GxJob`` starts a
niced child process (``gxworker``) when the gate begins; it imports GX meanwhile, validates once
the gate hands over its sample, while the next stages run, and the run collects the outcome
before it is published. Nothing in the parent process imports GX.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

import polars as pl  # noqa: E402

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


WORKER = "detect.validation.gxworker"
JOB_PREFIX = "belegwacht-gx-"
STALE_SECONDS = 86_400
RESULT, JOB, LOG = "result.json", "job.json", "worker.log"


class GxJob:
    """Great Expectations' part of the gate in a child process (``python -m
    detect.validation.gxworker JOB_DIR``). Started early (``validate`` does so before its own
    work), the worker imports GX meanwhile and then waits on its stdin; ``submit()`` tells it
    that ``job_dir`` holds ``job.json`` and the frames as Parquet. It writes ``result.json``
    (and the Data Docs into ``job_dir/docs``); ``result()`` waits for it and reads that.

    Why a process and not a thread: GX's import (pandas, SQLAlchemy, narwhals, ...) overlapped
    the main thread's first imports of PyOD/scikit-learn/SciPy/pandas in the models stage, and
    CPython's per-module import locks then deadlocked (``_DeadlockError`` on
    ``narwhals.stable.v1``) or handed out half-initialised modules. A process shares no import
    state, is niced as a whole (``BELEGWACHT_GX_NICE``, default 10, set by the worker itself)
    and costs the parent no GIL time.

    The worker dies with its parent (``PR_SET_PDEATHSIG`` plus a ``getppid`` watch), so a
    killed run leaves no GX process behind; a job that is never collected (a run failing before
    publish) is killed and its folder removed when the ``GxJob`` is garbage collected or the
    process exits."""

    def __init__(self, job_dir: Path) -> None:
        self.job_dir = job_dir
        env = {**os.environ, "GX_ANALYTICS_ENABLED": "False",
               "POLARS_MAX_THREADS": os.environ.get("BELEGWACHT_GX_THREADS", "1")}
        # PR_SET_PDEATHSIG fires when the *thread* that started the child ends: only asked for
        # when that is the main thread (else the worker relies on watching getppid)
        main = "1" if threading.current_thread() is threading.main_thread() else "0"
        self._proc: subprocess.Popen[bytes] | None = None
        self._start_error: str | None = None
        try:
            with open(job_dir / LOG, "wb") as log:
                # no preexec_fn: it is not safe with Polars'/DuckDB's threads running
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", WORKER, str(job_dir), str(os.getpid()), main],
                    stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, env=env,
                    close_fds=True)
        except OSError as exc:  # GX decides nothing: reported by result(), the gate goes on
            self._start_error = f"{type(exc).__name__}: {exc}"
        self.cpu_seconds: float | None = None
        self.max_rss_mb: int | None = None
        self._finalizer = weakref.finalize(self, _cancel, self._proc, job_dir)

    def __enter__(self) -> GxJob:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: Any) -> None:
        if kind is not None:  # the gate failed before it handed over the job
            self.close()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def submit(self) -> None:
        """The job files are in place: let the worker start on them. A worker that died
        already is reported by ``result()``."""
        self._release(b"go\n")

    def _release(self, line: bytes) -> None:
        if self._proc is None:
            return
        stdin, self._proc.stdin = self._proc.stdin, None
        if stdin is None:
            return
        try:
            stdin.write(line)
            stdin.close()
        except OSError:  # BrokenPipeError: the worker is gone
            pass

    def result(self) -> dict[str, Any]:
        """Wait for the worker and return its ``result.json``; ``cpu_seconds`` is then the
        worker's whole CPU time (its own and its threads', from ``wait4``). Raises
        ``GxWorkerError`` when it ended without a result."""
        if self._proc is None:
            raise GxWorkerError(f"the GX worker process could not be started "
                                f"({self._start_error})")
        self._release(b"")  # never submitted: the worker ends without a result
        if self._proc.returncode is None:
            _renice(self._proc.pid, 0)  # someone waits: no reason to be polite any more
            usage = _wait(self._proc)
            if usage is not None:
                self.cpu_seconds, self.max_rss_mb = usage
        code = self._proc.returncode
        path = self.job_dir / RESULT
        if path.exists():
            return json.loads(path.read_text(encoding="utf-8"))
        tail = ""
        try:
            lines = (self.job_dir / LOG).read_text("utf-8", "replace").strip().splitlines()
            tail = lines[-1] if lines else ""
        except OSError:
            pass
        how = f"killed by signal {-code}" if code is not None and code < 0 else \
            f"exited with code {code}"
        raise GxWorkerError(f"the GX worker process {how} without a result"
                            + (f" ({tail})" if tail else ""))

    def close(self) -> None:
        """Kill the worker if it still runs; remove the job folder (move the Data Docs out
        first)."""
        self._finalizer()

    @staticmethod
    def new_dir(run_id: str) -> Path:
        """A private temporary folder for one job, named after the run and this process.
        Folders left behind (their process was killed after its worker had finished, so
        neither could remove them) are removed once the process that made them is gone, or
        a day old. Not in the run folder: the pipeline removes the run's ``tmp/`` before it
        publishes, and renames the folder of a failed run."""
        tmp = Path(tempfile.gettempdir())
        now = time.time()
        for old in tmp.glob(JOB_PREFIX + "*"):
            try:
                if not _owner_alive(old.name) or now - old.stat().st_mtime > STALE_SECONDS:
                    shutil.rmtree(old, ignore_errors=True)
            except OSError:
                pass
        return Path(tempfile.mkdtemp(prefix=f"{JOB_PREFIX}{run_id}-p{os.getpid()}-"))


def _owner_alive(name: str) -> bool:
    """False only when the folder names its process (``...-p<pid>-<random>``) and no such
    process exists; a reused pid just keeps the folder until it is a day old."""
    parts = name.rsplit("-", 2)
    if len(parts) < 3 or not parts[1].startswith("p") or not parts[1][1:].isdigit():
        return True
    try:
        os.kill(int(parts[1][1:]), 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process: alive
        pass
    return True


def _wait(proc: subprocess.Popen[bytes]) -> tuple[float, int] | None:
    """Reap ``proc``; its CPU seconds (user + system) and peak RSS in MB where ``wait4``
    exists."""
    if not hasattr(os, "wait4"):
        proc.wait()
        return None
    while True:
        try:
            _, status, usage = os.wait4(proc.pid, 0)
            break
        except InterruptedError:
            continue
        except ChildProcessError:  # reaped elsewhere
            proc.wait()
            return None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return round(usage.ru_utime + usage.ru_stime, 3), int(usage.ru_maxrss // 1024)


def _cancel(proc: subprocess.Popen[bytes] | None, job_dir: Path) -> None:
    if proc is None:
        shutil.rmtree(job_dir, ignore_errors=True)
        return
    if proc.stdin is not None:
        try:
            proc.stdin.close()
        except OSError:
            pass
    if proc.returncode is None and proc.poll() is None:
        proc.kill()
        proc.wait()
    shutil.rmtree(job_dir, ignore_errors=True)


def _renice(pid: int, nice: int) -> None:
    """Set a process's nice value. Lowering it again needs privileges: where that is refused
    the worker just stays polite."""
    try:
        os.setpriority(os.PRIO_PROCESS, pid, nice)
    except (AttributeError, OSError):
        pass


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
