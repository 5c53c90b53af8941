"""Great Expectations' part of the run's worker process (``detect.jobworker``).

The worker process is started by ``gxrun.GxJob`` when the gate begins, or when the run starts
(``gxrun.prestart``, or the pipeline's shared worker with the models; see there why a
process). It imports GX first (``import_gx``: without the modules our suites never use, ~1
instead of ~2.3 CPU s), niced (``be_polite``: the process when GX is alone in it, else the GX
thread); when the parent writes ``gx go`` it reads ``job.json`` and the frames
(``sample.parquet``, ``master/<name>.parquet``) from its folder (``JOB_DIR/gx``), validates them
through Great Expectations (``run``), builds the Data Docs into ``docs`` and writes
``result.json`` (atomically: a worker that dies leaves no result, which the parent reports as
GX having failed).

GX decides nothing (the vectorised masks did), so every GX failure is caught and written as the
result's ``error``; only a crash of the worker itself leaves no result. The job description:
``run_name``, ``label``, ``batch_rows``, ``batch_key``, ``suite`` (``raw`` JSON and ``path``),
``params`` (dates as ``{"$date": iso}``), ``suites_dir``, ``master`` (names), ``docs``.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import types
from importlib.abc import Loader, MetaPathFinder
from importlib.machinery import ModuleSpec
from importlib.util import find_spec


DEFERRED = ("scipy.stats", "altair", "jsonschema")
"""Imported by GX's ``__init__`` (``expect_column_kl_divergence_to_be_less_than``, the KS-test
metrics, ``expect_column_values_to_match_json_schema``) but used only when such an expectation
runs or a chart is drawn: no suite of ours does. ~0.55 CPU s (scipy.stats with
scipy.spatial/optimize/ndimage), ~0.1 s (altair) and ~0.03 s (jsonschema) at start-up."""
HIDDEN = ("sqlalchemy",)
"""Optional for GX (``great_expectations.compatibility.sqlalchemy`` falls back to
``NOT_IMPORTED``, GX's SQL datasources need the ``sql`` extra): the worker validates pandas
frames only, and its SQL dialect models cost ~0.2 CPU s at start-up."""


def be_polite(*, thread: bool = False) -> None:
    """Run below the job's own stages (``BELEGWACHT_GX_NICE``, default 10): on a busy
    machine GX takes the idle core time first. ``thread``: only the calling thread (the
    shared worker's GX thread; Linux keeps a nice value per thread), never the process whose
    models the job waits for; elsewhere that thread is not niced."""
    try:
        nice = int(os.environ.get("BELEGWACHT_GX_NICE", "10") or 0)
        if not thread:
            os.nice(nice)
        elif sys.platform.startswith("linux"):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(),
                           os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) + nice)
    except (AttributeError, OSError, ValueError):
        pass


class _Deferred(types.ModuleType):
    """A module whose code runs on first use: the first attribute it does not have yet (any
    public name, ``__all__``, ...) executes it in place, so every reference to it (``alt`` in
    GX's module, ``sys.modules``, the parent's attribute) becomes the real module. Unlike
    ``importlib.util.LazyLoader`` it does not load on ``__spec__``, which every further ``import
    x`` statement reads (CPython's ``import_ensure_initialized``), so ``import altair as alt``
    keeps it deferred.

    Not for modules used from several threads: the lock runs it once, but another thread that
    reads one of its names while it runs sees it half-run. The worker uses GX in one thread;
    beside the models (``detect.jobworker``) the deferred modules are GX's alone (the default
    models import neither SciPy's stats nor altair nor jsonschema), and its thread starts
    after both imports."""

    def __getattr__(self, name: str) -> object:
        with _LOAD_LOCK:
            if type(self) is _Deferred:
                self.__class__ = types.ModuleType
                try:
                    self.__spec__.loader.exec_module(self)  # type: ignore[union-attr]
                except BaseException:
                    # deferred again: the next use runs it again and raises its own error (as
                    # an import statement would), not an AttributeError of a half-run module
                    self.__class__ = _Deferred
                    raise
        return getattr(self, name)


_LOAD_LOCK = threading.RLock()


class _Existing(Loader):
    """Hands the import system a module that is in ``sys.modules`` already (see
    ``_LeanFinder``) instead of executing it a second time."""

    def __init__(self, spec: ModuleSpec) -> None:
        self.spec = spec

    def create_module(self, spec: ModuleSpec) -> types.ModuleType:
        return sys.modules[spec.name]

    def exec_module(self, module: types.ModuleType) -> None:
        module.__spec__ = self.spec  # module_from_spec set ours


class _LeanFinder(MetaPathFinder):
    """First on ``sys.meta_path`` of the worker: ``HIDDEN`` packages are not installed, and a
    submodule of a still ``_Deferred`` package (``import scipy.stats.distributions``) first runs
    that package, as a normal import would."""

    def __init__(self, hidden: tuple[str, ...]) -> None:
        self.hidden = hidden

    def find_spec(self, name: str, path: object = None, target: object = None
                  ) -> ModuleSpec | None:
        if name.partition(".")[0] in self.hidden:
            raise ModuleNotFoundError(
                f"No module named {name!r} (hidden from the GX worker as unused; "
                "BELEGWACHT_GX_LEAN=0 imports GX with it)", name=name)
        parent = name.rpartition(".")[0]
        while parent:
            if type(sys.modules.get(parent)) is _Deferred:
                getattr(sys.modules[parent], "__deferred_load__", None)  # runs it
                module = sys.modules.get(name)
                if module is None:
                    return None  # the normal finders go on
                # The package imported it itself. The import system then takes the module's
                # own __spec__ (importlib._bootstrap._find_spec) and would run it again:
                # hand it one whose loader returns the module as it is.
                module.__spec__ = ModuleSpec(name, _Existing(module.__spec__),
                                             is_package=hasattr(module, "__path__"))
                return module.__spec__
            parent = parent.rpartition(".")[0]
        return None


def defer(name: str) -> None:
    """Put a ``_Deferred`` ``name`` into ``sys.modules`` (and onto its parent package, which is
    imported now); nothing when it is imported already or not installed."""
    if name in sys.modules:
        return
    parent, _, child = name.rpartition(".")
    spec = find_spec(name)  # imports the parent package, which may import ``name`` itself
    if (name in sys.modules or spec is None or spec.loader is None
            or not hasattr(spec.loader, "exec_module")):
        return
    module = _Deferred(name)
    # the attributes module_from_spec would set (__spec__, __loader__, __file__, __path__, ...)
    module.__spec__, module.__loader__, module.__package__ = spec, spec.loader, spec.parent
    if spec.submodule_search_locations is not None:
        module.__path__ = list(spec.submodule_search_locations)
    if spec.has_location:
        module.__file__, module.__cached__ = spec.origin, spec.cached
    sys.modules[name] = module
    if parent:
        setattr(sys.modules[parent], child, module)


def lean() -> bool:
    """``BELEGWACHT_GX_LEAN=0`` turns off ``lean_imports``, the paused garbage collection and
    the template cache of ``import_gx``: GX exactly as ``import great_expectations`` gives it."""
    return os.environ.get("BELEGWACHT_GX_LEAN", "1") != "0"


def import_gx() -> None:
    """Import GX while the parent still validates (a failure shows again, and is reported, in
    ``run()``), as cheaply as it goes: ``lean_imports`` first; the cyclic garbage collector
    paused meanwhile (an import makes thousands of objects, none garbage: ~0.1 CPU s less) and
    the then ~1,700 modules' objects frozen out of later collections (``gc.freeze``);
    ``cache_templates`` for the Data Docs."""
    import gc

    if not lean():
        try:
            import great_expectations  # noqa: F401
        except Exception:  # noqa: BLE001
            pass
        return
    lean_imports()
    gc.disable()
    try:
        with fast_field_copies():
            import great_expectations  # noqa: F401
    except Exception:  # noqa: BLE001
        return
    finally:
        gc.enable()
    gc.freeze()
    cache_templates()


# what copy.deepcopy returns as it is (its _deepcopy_atomic types)
_ATOMIC = frozenset({type(None), int, float, bool, complex, str, bytes, type, range, property,
                     types.FunctionType, types.BuiltinFunctionType, types.CodeType,
                     type(Ellipsis), type(NotImplemented)})


def _slots_copier(names: tuple[str, ...]):  # noqa: ANN202
    """``copy.deepcopy`` of an object of a ``__slots__`` class without ``__dict__``,
    ``__deepcopy__``, ``__reduce__`` or ``__getstate__``, the same as the generic path
    (``object.__reduce_ex__`` -> ``copy._reconstruct``): a new ``cls.__new__(cls)``, memoised
    before its contents, then every slot that is set, deep-copied with the same memo. It only
    skips the calls that end in ``_deepcopy_atomic``."""
    import copy

    deep = copy.deepcopy

    def copier(x: object, memo: dict) -> object:
        cls = type(x)
        y = cls.__new__(cls)
        memo[id(x)] = y
        for name in names:
            try:
                value = getattr(x, name)
            except AttributeError:  # not set: not in the state either
                continue
            setattr(y, name, value if type(value) in _ATOMIC else deep(value, memo))
        return y

    return copier


def _plain_slots(cls: type) -> tuple[str, ...] | None:
    """The slot names ``_slots_copier`` copies for ``cls`` if ``copy.deepcopy`` copies it by
    the generic path from exactly those slots; None if not (a ``__dict__``, its own copy or
    pickle methods, ``__slots__`` as one string, ``__weakref__`` or a name-mangled ``__x``
    slot, whose attribute has another name), and then the class keeps the generic path."""
    mro = cls.__mro__[:-1]
    if any({"__deepcopy__", "__reduce__", "__reduce_ex__", "__getstate__", "__setstate__",
            "__copy__"} & set(c.__dict__) for c in mro):
        return None
    slots = [c.__dict__.get("__slots__", ()) for c in reversed(mro)]
    if not all(isinstance(s, (tuple, list)) for s in slots):
        return None
    names = tuple(n for s in slots for n in s)
    if any(not isinstance(n, str) or n.startswith("__") for n in names):
        return None
    try:
        return None if hasattr(cls.__new__(cls), "__dict__") else names
    except Exception:  # noqa: BLE001 - cannot be made without arguments: generic path
        return None


class fast_field_copies:  # noqa: N801 - used like a function: ``with fast_field_copies():``
    """While GX is imported: pydantic v1 copies every base class's fields into each new model
    class (``ModelMetaclass.__new__``: ``smart_deepcopy(base.__fields__)``), ~460,000
    ``copy.deepcopy`` calls for GX's ~370 models, ~0.2 of the import's ~1.0 CPU s; most of
    them return a string or a function as it is. ``_slots_copier`` does the same copy of
    ``ModelField``, ``FieldInfo`` and ``Validator`` in a third less time. Registered in
    ``copy``'s dispatch table for the import only; a class that no longer fits
    (``_plain_slots``) keeps the generic path."""

    def __enter__(self) -> None:
        import copy

        self.added: list[type] = []
        # CPython's private table that deepcopy looks a type up in first: without it (another
        # Python), nothing to speed up, and GX is still imported
        self.table = getattr(copy, "_deepcopy_dispatch", None)
        if not isinstance(self.table, dict):
            return
        try:
            from pydantic.v1 import class_validators, fields
        except Exception:  # noqa: BLE001 - no pydantic v1: nothing to speed up
            return
        for cls in (fields.ModelField, fields.FieldInfo, class_validators.Validator):
            names = _plain_slots(cls)
            if names is not None and cls not in self.table:
                self.table[cls] = _slots_copier(names)
                self.added.append(cls)

    def __exit__(self, *_: object) -> None:
        for cls in self.added:
            self.table.pop(cls, None)


def cache_templates() -> None:
    """Keep GX's compiled Data Docs templates between runs: every view of GX's renderer makes
    its own ``jinja2.Environment`` and compiles its templates again (~0.11 of the Data Docs'
    ~0.19 CPU s). This is jinja2's ``FileSystemBytecodeCache`` in its default folder (a
    per-user folder in the temporary directory, mode 0700, which jinja2 checks), entries
    written atomically and checked against the template's source and jinja2's version, so a
    changed template or a new GX is simply compiled again. A cache that cannot be read or
    written is skipped."""
    try:
        import jinja2
        from great_expectations.render.view.view import DefaultJinjaView

        class Cache(jinja2.FileSystemBytecodeCache):
            def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
                try:
                    super().load_bytecode(bucket)
                except Exception:  # noqa: BLE001 - compile it then
                    bucket.reset()

            def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
                try:
                    super().dump_bytecode(bucket)
                except Exception:  # noqa: BLE001 - not kept: compiled again next time
                    pass

        cache = Cache()
    except Exception:  # noqa: BLE001 - no usable cache folder (or GX moved its views)
        return
    plain = DefaultJinjaView.__init__
    if getattr(plain, "_belegwacht_cache", None) is not None:
        return

    def __init__(self: DefaultJinjaView, *args: object, **kwargs: object) -> None:
        plain(self, *args, **kwargs)
        env = getattr(self, "env", None)
        if env is not None and env.bytecode_cache is None:
            env.bytecode_cache = cache

    __init__._belegwacht_cache = cache  # type: ignore[attr-defined]
    DefaultJinjaView.__init__ = __init__  # type: ignore[method-assign]


def lean_imports() -> None:
    """Before GX's import: defer ``DEFERRED``, hide ``HIDDEN`` (GX's import ~2.3 -> ~1.3 CPU
    s). Only in the worker: the job's own process and the tests' in-process ``GxRunner``
    import GX as it is."""
    if not any(isinstance(f, _LeanFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _LeanFinder(HIDDEN))
    for name in DEFERRED:
        try:
            defer(name)
        except Exception:  # noqa: BLE001 - then it is simply imported as usual
            pass


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

    # this thread's CPU: in the shared worker the models run in the process's main thread
    started, cpu = time.perf_counter(), time.thread_time()
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
    out["timings"] = {**times, "gx_cpu_worker": round(time.thread_time() - cpu, 3)}
    return out


