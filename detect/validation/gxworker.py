"""The GX worker process: ``python -m detect.validation.gxworker JOB_DIR PARENT_PID MAIN``.

Started by ``gxrun.GxJob`` when the gate begins, or by ``gxrun.prestart`` when the run starts
(see there why a process). It lowers its own priority, ties its life to the parent's
(``workerproc.bind_to_parent``) and imports GX; when the parent writes ``go`` to its
stdin (EOF instead: no job, exit) it reads ``JOB_DIR/job.json`` and the frames
(``sample.parquet``, ``master/<name>.parquet``), validates them through Great Expectations,
builds the Data Docs into ``JOB_DIR/docs`` and writes ``JOB_DIR/result.json`` (atomically: a
worker that dies leaves no result, which the parent reports as GX having failed).

GX decides nothing (the vectorised masks did), so every GX failure is caught and written as the
result's ``error``; only a crash of the worker itself leaves no result. The job description:
``run_name``, ``label``, ``batch_rows``, ``batch_key``, ``suite`` (``raw`` JSON and ``path``),
``params`` (dates as ``{"$date": iso}``), ``suites_dir``, ``master`` (names), ``docs``.
"""

from __future__ import annotations

import os
import sys
import time

from detect import workerproc


def _be_polite() -> None:
    """Run below the job's own stages (``BELEGWACHT_GX_NICE``, default 10): on a busy
    machine GX takes the idle core time first."""
    try:
        os.nice(int(os.environ.get("BELEGWACHT_GX_NICE", "10") or 0))
    except (AttributeError, OSError, ValueError):
        pass


def main(argv: list[str]) -> int:
    job_dir, parent, main_thread = workerproc.worker_args(argv)
    workerproc.bind_to_parent(parent, main_thread, job_dir, "gx")
    _be_polite()

    started = time.perf_counter()
    import json
    from pathlib import Path

    from detect.validation.gxrun import JOB, quiet_gx

    quiet_gx()
    try:  # while the parent still validates; a failure shows again (and is reported) in run()
        import great_expectations  # noqa: F401
    except Exception:  # noqa: BLE001
        pass
    imported = time.perf_counter()
    if workerproc.next_line(job_dir) != "go":
        return 0
    go = time.perf_counter()
    directory = Path(job_dir)
    spec = json.loads((directory / JOB).read_text(encoding="utf-8"))
    outcome = run(spec, directory)
    # gx_import: start-up and GX's import; gx_idle: then waiting for the gate to hand over
    outcome["timings"] = {"gx_import": round(imported - started, 3),
                          "gx_idle": round(go - imported, 3), **outcome["timings"]}
    workerproc.write_result(directory, outcome)
    return 0


def decode_params(params: dict) -> dict:
    from datetime import date

    return {k: date.fromisoformat(v["$date"]) if isinstance(v, dict) and "$date" in v else v
            for k, v in params.items()}


def run(spec: dict, job_dir) -> dict:
    """The booking suite on its sample, the master-data suites, the Data Docs; any GX failure
    becomes ``error`` / ``docs_error`` (GX cross-checks and documents, the masks decide)."""
    from dataclasses import asdict
    from pathlib import Path

    import polars as pl

    from detect.validation import rowchecks
    from detect.validation.gxrun import GxRunner
    from detect.validation.suites import suite_from_raw

    started, cpu = time.perf_counter(), time.process_time()
    times: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal started
        now = time.perf_counter()
        times[name] = round(times.get(name, 0.0) + now - started, 3)
        started = now

    out: dict = {"results": [], "master_checks": [], "master_warnings": [], "docs_index": None,
                 "error": None, "docs_error": None}
    docs_dir = Path(job_dir) / "docs" if spec.get("docs") else None
    runner = None
    try:
        suite = suite_from_raw(spec["suite"]["raw"], Path(spec["suite"]["path"]))
        sample = pl.read_parquet(Path(job_dir) / "sample.parquet")
        master = {name: pl.read_parquet(Path(job_dir) / "master" / f"{name}.parquet")
                  for name in spec.get("master", [])}
        lap("gx_read")
        runner = GxRunner(docs_dir, spec["run_name"])
        lap("gx_setup")  # mostly the import of GX
        results = runner.validate(suite, sample, decode_params(spec["params"]),
                                  spec["batch_rows"], batch_key=spec["batch_key"],
                                  label=spec["label"])
        out["results"] = [asdict(r) for r in results]
        lap("gx_bookings")
        out["master_checks"], out["master_warnings"] = rowchecks.master_checks(
            runner, master, Path(spec["suites_dir"]), spec["batch_rows"])
        lap("gx_master")
    except Exception as exc:  # noqa: BLE001 - GX cross-checks and documents; the masks decide
        runner = None
        out["error"] = (f"Great Expectations could not validate this delivery "
                        f"({type(exc).__name__}: {exc}); the vectorised checks decided alone "
                        "and there are no Data Docs")
    if runner is not None:
        try:
            index = runner.build_docs()
            out["docs_index"] = str(index) if index else None
        except Exception as exc:  # noqa: BLE001 - the run's data are complete without the HTML
            out["docs_error"] = f"Data Docs could not be built ({type(exc).__name__}: {exc})"
        lap("data_docs")
    out["timings"] = {**times, "gx_cpu_worker": round(time.process_time() - cpu, 3)}
    return out


if __name__ == "__main__":
    workerproc.exit_now(main(sys.argv[1:]))
