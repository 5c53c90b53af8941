"""Run expectation suites through Great Expectations 1.x: Data Docs and a cross-check.

GX 1.x has no Polars or DuckDB source, so each batch goes through its pandas source as an
Arrow-backed DataFrame (only the columns the suite reads, plus ``_row``). Deliveries larger than
``validation.gx_rows`` are validated on a sample of whole journals (``sample``); batches of about
``validation.batch_rows`` rows keep the lines of a journal together, so uniqueness stays exact.
One ephemeral context per run; a Checkpoint per suite; Data Docs are built once at the end into
the run folder. The rows to quarantine come from ``masks`` (same suite, vectorised).

GX decides nothing, so ``detect.validate`` runs it off the critical path: ``GxJob`` imports GX
(1.2 CPU s on top of what the pipeline imports anyway) and validates in a background thread
once the gate's own work is done, and the run collects the outcome before it is published.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generic, TypeVar

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

import polars as pl  # noqa: E402

from detect.validation.suites import Suite  # noqa: E402

ROW = "_row"
T = TypeVar("T")


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


_preloader: threading.Thread | None = None


def preload() -> None:
    """Import Great Expectations in a background thread now. No longer called on import of
    ``detect.validate`` (the import competed with the ingest for the two cores; ``GxJob``
    imports GX when it is needed). Idempotent; ``BELEGWACHT_GX_PRELOAD=0`` switches it off."""
    global _preloader
    if _preloader is not None or os.environ.get("BELEGWACHT_GX_PRELOAD") == "0":
        return
    _preloader = threading.Thread(target=importlib.import_module, args=("great_expectations",),
                                  name="gx-preload", daemon=True)
    _preloader.start()


class GxJob(Generic[T]):
    """``work()`` in a daemon thread; ``result()`` waits for it and returns its value (or raises
    its exception). Used for Great Expectations: pure Python under the GIL, so it overlaps the
    Polars/DuckDB work of the next stages (which release the GIL) instead of adding to them.

    The thread runs at a lower CPU priority (``BELEGWACHT_GX_NICE``, default 10; Linux nice
    values are per thread), so on a busy machine it takes the idle core time first; ``result()``
    puts it back at normal priority when someone waits for it."""

    def __init__(self, work: Callable[[], T], name: str = "gx-validate") -> None:
        self._work = work
        self._value: T | None = None
        self._error: BaseException | None = None
        self._tid: int | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self._tid = threading.get_native_id()
        _renice(self._tid, int(os.environ.get("BELEGWACHT_GX_NICE", "10") or 0))
        try:
            self._value = self._work()
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits for the result
            self._error = exc

    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self) -> T:
        if self._thread.is_alive() and self._tid is not None:
            _renice(self._tid, 0)  # someone waits: no reason to be polite any more
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


def _renice(tid: int, nice: int) -> None:
    """Set one thread's nice value (Linux: per thread). Lowering it again needs privileges:
    where that is refused the thread just stays polite."""
    try:
        os.setpriority(os.PRIO_PROCESS, tid, nice)
    except (AttributeError, OSError):
        pass


def _quiet_gx() -> None:
    for name in ("great_expectations", "great_expectations.core", "posthog"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="great_expectations")


class GxRunner:
    """One ephemeral GX context with a Data Docs site in ``docs_dir`` (or none)."""

    def __init__(self, docs_dir: Path | None, run_name: str) -> None:
        _quiet_gx()
        if _preloader is not None:
            _preloader.join()
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


def sample(frame: pl.DataFrame, rows: int, key: list[str]) -> pl.DataFrame:
    """About ``rows`` rows of whole journals, chosen by a hash of ``key`` (deterministic)."""
    pick = sample_pick(frame.height, rows, key)
    return frame if pick is None else frame.filter(pick)


def sample_lazy(frame: pl.LazyFrame, height: int, rows: int, key: list[str]) -> pl.DataFrame:
    """``sample`` over a lazy delivery of ``height`` rows: only the picked rows are collected,
    in row order."""
    pick = sample_pick(height, rows, key)
    picked = frame if pick is None else frame.filter(pick)
    return picked.sort(ROW).collect() if ROW in frame.collect_schema().names() \
        else picked.collect()


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
