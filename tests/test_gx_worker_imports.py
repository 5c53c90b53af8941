"""The GX worker's lean start-up (``gxworker.import_gx``): modules GX imports but our suites
never use are deferred (``scipy.stats``, ``altair``, ``jsonschema``) or hidden (``sqlalchemy``), the Data Docs
templates are compiled once per machine, and GX's results and Data Docs stay exactly the same.

A deferred module must behave like an imported one the moment anything touches it: it then runs
once, in place, and every reference to it is the real module.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from detect import validate
from detect.validation import gxworker
from validate_support import context, ingest_result, journal, line, settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``pkgx`` (its ``__init__`` imports ``pkgx.sub``) and ``modx``, each counting its runs in
    ``RUNS``; removed from ``sys.modules`` afterwards."""
    root = tmp_path / "lib"
    (root / "pkgx").mkdir(parents=True)
    (root / "pkgx" / "__init__.py").write_text(
        "import builtins\nbuiltins.RUNS.append('pkgx')\nfrom pkgx import sub\nVALUE = 1\n")
    (root / "pkgx" / "sub.py").write_text(
        "import builtins\nbuiltins.RUNS.append('pkgx.sub')\nNAME = 'sub'\n")
    (root / "pkgx" / "other.py").write_text(
        "import builtins\nbuiltins.RUNS.append('pkgx.other')\n")
    (root / "modx.py").write_text("import builtins\nbuiltins.RUNS.append('modx')\nX = 42\n")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setattr("builtins.RUNS", [], raising=False)
    finder = gxworker._LeanFinder(())
    monkeypatch.setattr(sys, "meta_path", [finder, *sys.meta_path])
    yield root
    for name in ("pkgx", "pkgx.sub", "pkgx.other", "modx"):
        sys.modules.pop(name, None)


def test_a_deferred_module_runs_on_first_use_only(package: Path) -> None:
    import builtins

    gxworker.defer("modx")
    import modx as m  # an import statement alone (it reads __spec__) keeps it deferred

    assert builtins.RUNS == [] and type(m) is gxworker._Deferred
    assert m.X == 42 and builtins.RUNS == ["modx"]
    assert type(m) is type(sys) and sys.modules["modx"] is m
    assert m.X == 42 and builtins.RUNS == ["modx"]  # once


def test_a_submodule_of_a_deferred_package_runs_the_package_once(package: Path) -> None:
    import builtins

    gxworker.defer("pkgx")
    import pkgx.sub  # __init__ imports it itself: it must not run a second time

    assert builtins.RUNS == ["pkgx", "pkgx.sub"]
    assert sys.modules["pkgx.sub"] is pkgx.sub and pkgx.sub.NAME == "sub" and pkgx.VALUE == 1
    assert pkgx.sub.__spec__.name == "pkgx.sub" and pkgx.sub.__spec__.origin.endswith("sub.py")
    import pkgx.other  # a submodule the package does not import: a normal import

    assert builtins.RUNS == ["pkgx", "pkgx.sub", "pkgx.other"]


def test_a_deferred_module_that_fails_raises_its_error_on_every_use(package: Path) -> None:
    # like a failed import, which leaves nothing half-done behind: each use raises the
    # module's own error again, not an AttributeError of a half-executed module
    (package / "badx.py").write_text(
        "import builtins\nbuiltins.RUNS.append('badx')\nraise ImportError('badx needs libfoo')\n"
        "X = 1\n")
    gxworker.defer("badx")
    import badx

    try:
        for _ in range(2):
            with pytest.raises(ImportError, match="needs libfoo"):
                badx.X
        assert type(badx) is gxworker._Deferred
    finally:
        sys.modules.pop("badx", None)


def test_a_hidden_package_is_not_found_and_the_error_says_how_to_have_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "meta_path", [gxworker._LeanFinder(("json",)), *sys.meta_path])
    monkeypatch.delitem(sys.modules, "json.tool", raising=False)
    with pytest.raises(ModuleNotFoundError, match="BELEGWACHT_GX_LEAN=0") as error:
        import json.tool  # noqa: F401
    assert error.value.name == "json.tool"


def test_from_import_of_a_deferred_module_loads_it(package: Path) -> None:
    import builtins

    gxworker.defer("pkgx.sub")  # imports pkgx (and with it pkgx.sub): nothing left to defer
    assert builtins.RUNS == ["pkgx", "pkgx.sub"] and type(sys.modules["pkgx.sub"]) is type(sys)
    gxworker.defer("modx")
    from modx import X

    assert X == 42 and builtins.RUNS == ["pkgx", "pkgx.sub", "modx"]


PROBE = textwrap.dedent("""
    import gc, json, sys
    from detect.validation import gxworker
    gxworker.import_gx()
    from great_expectations.render.view.view import DefaultJinjaView
    from detect.validation.gxrun import GxRunner
    import polars as pl
    from detect.validation.suites import load_suite, BUNDLED_DIR
    runner = GxRunner(None, "probe")
    suite = load_suite("master_users", BUNDLED_DIR)
    frame = pl.DataFrame({"_row": [0, 1], "user_id": ["U1", "U1"], "user_name": ["a", "b"]})
    present = [c for c in suite.checks if all(col in frame.columns for col in c.columns)]
    results = runner.validate(suite.without({c.key for c in suite.checks} - {c.key for c in present}),
                              frame, {}, 1000)
    state = {name: (name in sys.modules, type(sys.modules.get(name)).__name__)
             for name in ("scipy.stats", "altair", "jsonschema", "sqlalchemy")}
    loaded = {"scipy.stats._stats_py": "scipy.stats._stats_py" in sys.modules,
              "altair.vegalite": "altair.vegalite" in sys.modules}
    from scipy import stats
    import scipy.stats.distributions
    import altair as alt
    touched = [float(stats.entropy([0.5, 0.5], [0.5, 0.5])), alt.Chart.__name__,
               type(sys.modules["scipy.stats"]).__name__, type(sys.modules["altair"]).__name__]
    setup = [gc.isenabled(), hasattr(DefaultJinjaView.__init__, "_belegwacht_cache")]
    print("PROBE", json.dumps({"state": state, "loaded": loaded, "touched": touched,
                               "setup": setup,
                               "unexpected": [r.unexpected_count for r in results]}))
""")


@pytest.mark.slow
def test_the_worker_imports_gx_without_the_unused_modules() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(next(x for x in done.stdout.splitlines() if x.startswith("PROBE"))[6:])
    assert out["state"] == {"scipy.stats": [True, "_Deferred"], "altair": [True, "_Deferred"],
                            "jsonschema": [True, "_Deferred"], "sqlalchemy": [False, "NoneType"]}
    assert out["loaded"] == {"scipy.stats._stats_py": False, "altair.vegalite": False}
    # touched, they simply load
    assert out["touched"] == [0.0, "Chart", "module", "module"]
    assert 2 in out["unexpected"]  # user_id twice: GX ran
    assert out["setup"] == [True, True]  # collector running again; Data Docs templates cached


_STAMP = re.compile(r"\d{8}T\d{6}(\.\d+)?Z?|\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?"
                    r"|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
                    r"|'_run_time_sort': [0-9.]+|run\d+")


def _docs(run_dir: Path) -> dict[str, str]:
    """The Data Docs' pages, times, uuids and run ids masked."""
    root = run_dir / "data_docs"
    return {_STAMP.sub("#", str(p.relative_to(root))): _STAMP.sub("#", p.read_text("utf-8"))
            for p in sorted(root.rglob("*.html"))}


def _gx_run(tmp_path: Path, name: str) -> tuple[list, list, dict[str, str]]:
    rows = (journal("1", 5.0) + journal("2", 7.0, currency="EURO")
            + [line("3", 1, 1.0, gl_account="4711"), line("3", 2, None),
               line("4", 1, 2.0, document_date=date(1985, 1, 1)), line("4", 1, -2.0)])
    accounts = pl.DataFrame({"gl_account": ["5250000", "1810000", "1810000"],
                             "account_type": ["expense", "bank", "bank"]})
    ctx = context(tmp_path / name, settings(data_docs=True))
    result = validate.validate(ingest_result(rows, master={"accounts": accounts}), ctx)
    summary = result.summary()
    assert "great_expectations_error" not in json.dumps(summary)
    saved = json.loads((ctx.run_dir / "validation.json").read_text("utf-8"))
    assert saved["great_expectations"] == "done"
    return saved["checks"], saved["warnings"], _docs(ctx.run_dir)


@pytest.mark.slow
def test_lean_worker_validates_and_documents_exactly_like_plain_gx(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lean = _gx_run(tmp_path, "lean")
    monkeypatch.setenv("BELEGWACHT_GX_LEAN", "0")
    plain = _gx_run(tmp_path, "plain")
    assert lean[0] == plain[0] and lean[1] == plain[1]
    assert any(c["gx"]["unexpected_count"] for c in lean[0])  # failures were validated
    assert any(c.get("suite") == "master_accounts" for c in lean[0])  # master data too
    assert lean[2].keys() == plain[2].keys() and len(lean[2]) >= 3
    for page in lean[2]:
        assert lean[2][page] == plain[2][page], page


def _canon(value: object) -> object:
    """A pydantic v1 field structure as plain data: every slot of every ModelField/FieldInfo,
    containers recursively, anything else by ``repr`` without memory addresses."""
    from pydantic.v1.fields import FieldInfo, ModelField

    if isinstance(value, (ModelField, FieldInfo)):
        return {type(value).__name__: {n: _canon(getattr(value, n, "<unset>"))
                                       for n in type(value).__slots__ if n != "model_config"}}
    if isinstance(value, dict):
        return {str(k): _canon(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canon(v) for v in value]
    return re.sub(r" at 0x[0-9a-f]+", "", repr(value))


def test_fast_field_copies_copy_pydantic_fields_like_deepcopy() -> None:
    import copy
    from typing import Any, Dict, List, Literal, Optional, Union

    from pydantic.v1 import Field, create_model, validator
    from pydantic.v1.fields import ModelField

    shared = ["a", "b"]

    def positive(cls: type, v: int) -> int:
        return v

    base = create_model(
        "Base", name=(str, Field("x", description="a name", alias="Name")),
        items=(List[int], [1, 2]), options=(Dict[str, Any], Field(default_factory=dict)),
        kind=(Literal["p", "q"], "p"), maybe=(Optional[Union[int, str]], None),
        first=(list, shared), second=(list, shared),
        __validators__={"positive": validator("items", each_item=True,
                                              allow_reuse=True)(positive)})
    plain = copy.deepcopy(base.__fields__)
    plain_sub = create_model("Sub", __base__=base, extra=(int, 3))
    with gxworker.fast_field_copies():
        assert ModelField in copy._deepcopy_dispatch
        fast = copy.deepcopy(base.__fields__)
        fast_sub = create_model("Sub", __base__=base, extra=(int, 3))
    assert ModelField not in copy._deepcopy_dispatch  # only while GX is imported

    assert _canon(fast) == _canon(plain) == _canon(base.__fields__)
    assert _canon(fast_sub.__fields__) == _canon(plain_sub.__fields__)
    assert fast["items"] is not base.__fields__["items"]
    assert fast["items"].field_info is not base.__fields__["items"].field_info
    assert fast["items"].default == [1, 2] and fast["items"].default is not \
        base.__fields__["items"].default  # mutable defaults are copied, not shared
    assert fast["first"].default is fast["second"].default  # one memo: shared stays shared
    assert fast["first"].default is not shared
    assert fast_sub(items=[4]).items == [4] and fast_sub().extra == 3 and fast_sub().first == shared


def test_slots_copier_only_for_classes_deepcopy_copies_by_their_slots() -> None:
    """A class whose slots ``_slots_copier`` would not copy as ``copy.deepcopy`` does keeps
    the generic path: a mangled ``__x`` slot (its attribute is ``_Cls__x``), ``__slots__`` as
    one string, ``__weakref__``, a ``__dict__``, its own ``__deepcopy__``."""
    import copy

    class Plain:
        __slots__ = ("a", "b")

    class Sub(Plain):
        __slots__ = ["c"]

    class Mangled:
        __slots__ = ("__x",)

    class OneString:
        __slots__ = "abc"

    class Weak:
        __slots__ = ("a", "__weakref__")

    class WithDict(Plain):
        pass

    class OwnCopy(Plain):
        __slots__ = ()

        def __deepcopy__(self, memo: dict) -> OwnCopy:
            return self

    assert gxworker._plain_slots(Plain) == ("a", "b")
    assert gxworker._plain_slots(Sub) == ("a", "b", "c")
    for cls in (Mangled, OneString, Weak, WithDict, OwnCopy):
        assert gxworker._plain_slots(cls) is None, cls
    x = Sub()
    x.a, x.c = [1], {"k": [1]}  # b unset
    y = gxworker._slots_copier(gxworker._plain_slots(Sub))(x, {})
    z = copy.deepcopy(x)
    assert (y.a, y.c, hasattr(y, "b")) == (z.a, z.c, hasattr(z, "b")) == ([1], {"k": [1]}, False)
    assert y.a is not x.a and y.c["k"] is not x.c["k"]


def test_fast_field_copies_do_nothing_without_copys_private_table(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # a Python whose copy module has no _deepcopy_dispatch: GX is imported the plain way
    import copy

    monkeypatch.delattr(copy, "_deepcopy_dispatch")
    with gxworker.fast_field_copies():
        pass  # entering and leaving raise nothing


FIELDS = textwrap.dedent("""
    import json, re, sys
    from detect.validation import gxworker
    if sys.argv[1] == "fast":
        with gxworker.fast_field_copies():
            import great_expectations
    else:
        import great_expectations
    from pydantic.v1 import BaseModel
    sys.path.insert(0, sys.argv[2])
    from test_gx_worker_imports import _canon
    seen, stack = set(), [BaseModel]
    while stack:
        for sub in stack.pop().__subclasses__():
            if sub not in seen:
                seen.add(sub)
                stack.append(sub)
    out = {}
    for cls in seen:  # dynamically made models share names: a sorted list per name
        out.setdefault(f"{cls.__module__}.{cls.__qualname__}", []).append(
            json.dumps(_canon(cls.__fields__), sort_keys=True))
    print(json.dumps({k: sorted(v) for k, v in out.items()}, sort_keys=True))
""")


@pytest.mark.slow
def test_gx_models_are_the_same_with_fast_field_copies() -> None:
    """Every pydantic model class GX defines at import has exactly the same fields."""
    dumps = [subprocess.run([sys.executable, "-c", FIELDS, mode, str(ROOT / "tests")],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
             for mode in ("fast", "plain")]
    assert all(d.returncode == 0 for d in dumps), dumps[0].stderr[-2000:] + dumps[1].stderr[-2000:]
    fast, plain = (json.loads(d.stdout) for d in dumps)
    assert len(fast) > 200 and fast == plain


SHARED = textwrap.dedent("""
    import json, sys
    from detect.validation import gxworker
    from detect import modelworker
    gxworker.import_gx()
    failed = modelworker.import_models()
    state = {name: type(sys.modules.get(name)).__name__
             for name in ("scipy.stats", "altair", "jsonschema", "sqlalchemy", "pandas",
                          "matplotlib.pyplot")}
    from detect import models
    import numpy as np
    fitted = models.TailECOD().fit(np.arange(20.0).reshape(10, 2))
    print("PROBE", json.dumps({"failed": repr(failed), "state": state,
                               "scored": len(fitted.decision_function(np.zeros((3, 2))))}))
""")


@pytest.mark.slow
def test_the_shared_worker_keeps_gx_lean_and_the_models_lazy() -> None:
    """GX's lean import, then the models' (``detect.jobworker``): GX's unused modules stay
    deferred or hidden, matplotlib is not loaded, pandas is (GX uses it), and the models
    work."""
    done = subprocess.run([sys.executable, "-c", SHARED], capture_output=True, text=True,
                          cwd=ROOT, timeout=300,
                          env={**os.environ, "BELEGWACHT_LAZY_IMPORTS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(next(x for x in done.stdout.splitlines() if x.startswith("PROBE"))[6:])
    assert out["failed"] == "None" and out["scored"] == 3
    state = out["state"]
    assert {k: state[k] for k in ("altair", "jsonschema", "sqlalchemy", "pandas")} == {
        "altair": "_Deferred", "jsonschema": "_Deferred", "sqlalchemy": "NoneType",
        "pandas": "module"}
    # still deferred, or loaded because a detector's import used it: never half
    assert state["scipy.stats"] in ("_Deferred", "module")
    assert state["matplotlib.pyplot"] in ("NoneType", "_LazyModule")  # never really loaded
