"""Outlier ensemble per entity: fit on the history, score this delivery, explain each score.

Why an ensemble: IForest sees combinations of features (a large amount *and* a rare user),
HBOS and ECOD see each feature's tail; they fail differently, and averaging their ranks is
robust to any one of them being badly calibrated. Why ranks: raw scores of different
detectors live on different scales; each detector's score is turned into its percentile among
the training lines' scores (a rank against the fit sample, so a line's score does not depend on
which other lines are scored in the same batch), and the percentiles are averaged -> 0..1.

ECOD here is ``TailECOD``, our inductive ECOD following PyOD's detector interface (``fit``,
``decision_function``, ``predict``, ``decision_scores_``, ``threshold_``, ``labels_``): PyOD
recomputes the empirical CDFs on training + scored rows at every ``decision_function`` call,
which makes a score depend on the batch and costs memory proportional to both. ``TailECOD``
keeps the sorted training columns as lookup tables over their distinct values
(``searchsorted``); its per-feature tail scores ``-log P(tail)`` are also the explanations.
PyOD provides IForest and HBOS when configured (imported on use).

Why NumPy only: the default ensemble (``["ecod"]``) imports neither PyOD nor scikit-learn
(importing ``pyod.models.ecod`` cost the model worker ~1.0 CPU s per run, ``sklearn.base``
0.83 and ``scipy.stats`` 0.54 of it); ``BookingOutlierEnsemble`` and ``TailECOD`` keep
scikit-learn's parameter conventions (``get_params``/``set_params``, ``sklearn.base.clone``).

Persistence: ``models/ensemble.joblib`` (our versioned envelope: a joblib dump of a dict with
the format, the library versions and the model) with ``ensemble.json`` (format, parameters,
features, versions, sha256 of the joblib). ``load_ensemble`` refuses a file whose hash does not
match the sidecar and only then unpickles it; files of older runs (PyOD's envelope, no
``format`` in the sidecar) load through ``pyod.utils.persistence.load(trusted=True)``.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.util
import inspect
import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

DEFERRED_IMPORTS = ("matplotlib.pyplot", "pandas")
"""Modules PyOD's and scikit-learn's import pulls in but the model stage never calls:
``pyod.models.ecod`` imports ``matplotlib.pyplot`` for its plot method (with
``mpl_toolkits.mplot3d``, ~0.35 CPU s), ``sklearn.utils.fixes`` imports ``pandas`` in case an
input is a DataFrame (~0.3 CPU s). In the model worker they are imported lazily
(``_deferred_imports``) when IForest or HBOS are configured (the default imports no PyOD)."""


class _LazyFinder(importlib.abc.MetaPathFinder):
    """Finds ``names`` with the other finders and loads them with ``importlib.util.LazyLoader``:
    the module object exists at once, its code runs on the first attribute access."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = frozenset(names)

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name not in self.names:
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None) if finder is not self else None
            spec = find(name, path, target) if find is not None else None
            if spec is not None:
                if spec.loader is None or not hasattr(spec.loader, "exec_module"):
                    return None  # not a loader LazyLoader can wrap: imported as usual
                spec.loader = importlib.util.LazyLoader(spec.loader)
                return spec
        return None  # not installed: the import fails as usual


def _defer_wanted() -> bool:
    """Lazy imports only where ``BELEGWACHT_LAZY_IMPORTS=1``: the run's worker process
    (``detect.jobworker`` sets it when it has a models part) and tests.

    Why not everywhere: before Python 3.12.3 a lazy module is not thread-safe on its first use
    (a second thread can see it half-executed). In the worker the models import after GX and
    GX's thread starts only after the models' imports; the job's process has threads that might
    import (the publish pool, scoring's preparation)."""
    return os.environ.get("BELEGWACHT_LAZY_IMPORTS", "") == "1"


@contextmanager
def _deferred_imports(names: tuple[str, ...]) -> Iterator[None]:
    """While inside, the first import of one of ``names`` gives a lazy module (a module that
    is imported already stays as it is). Whatever touches a lazy module later simply loads
    it: nothing breaks, the cost only moves there."""
    if not _defer_wanted():
        yield
        return
    finder = _LazyFinder(names)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


from detect import explain
from detect.errors import UserError
from detect.runlog import max_rss_mb
from detect.schema import key_hash
from detect.features import (DIRECTIONS, JOURNAL, KEY, active_features, amount_percentiles,
                             build_features)

MODEL_SCORE_SCHEMA = pl.Schema({
    "entity": pl.String(), "fiscal_year": pl.Int32(), "journal_id": pl.String(),
    "line_no": pl.Int32(), "model_score": pl.Float64(), "model_reasons_de": pl.String(),
    "model_reasons_en": pl.String(), "top_features": pl.String(),
})
MIN_LINES = 50
"""Below this many history lines no model is fitted (nothing to learn 'usual' from)."""
KNOWN_DETECTORS = ("iforest", "hbos", "ecod")


MALLOC_SETTINGS = ((-3, 256 << 20), (-1, 1 << 30), (-2, 64 << 20))
"""glibc ``mallopt`` (M_MMAP_THRESHOLD 256 MB, M_TRIM_THRESHOLD 1 GB, M_TOP_PAD 64 MB) for
``tune_allocator``."""


def tune_allocator() -> bool:
    """Let glibc malloc keep freed memory for the next allocation: a process-wide setting for
    the model worker (not for the job's own process, whose peak RSS at 10M it would raise).

    Why: NumPy's column-sized arrays (8 MB per 1M lines) are above glibc's dynamic mmap
    threshold, so each one was a fresh ``mmap`` zero-filled page by page and ``munmap``-ed on
    free: the model worker took ~300k minor page faults and ~0.7 s of system time for 1M
    lines. With the big blocks served from the heap and the heap not trimmed below 1 GB they
    are reused (1M lines: ~-60k faults, -0.2 s system, -0.2..0.3 CPU s; peak RSS +0..60 MB).
    The scores are the same bits: only where memory comes from changes. Returns False where
    it does not apply (not glibc)."""
    import ctypes
    import ctypes.util

    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in MALLOC_SETTINGS)


class ModelLoadError(UserError):
    """A saved model is missing, altered or not from this tool: it is not unpickled."""


class NotFittedError(ValueError, AttributeError):
    """``predict`` before ``fit`` (the bases of scikit-learn's error of that name)."""


class Params:
    """scikit-learn's estimator conventions without importing scikit-learn: the constructor's
    keyword arguments are the parameters, stored unchanged under their names; ``get_params``,
    ``set_params`` and the repr follow from them, so ``sklearn.base.clone`` works.

    Why not ``sklearn.base.BaseEstimator``: importing it costs ~0.8 CPU s per process (the
    model worker's whole default stage needs none of it)."""

    @classmethod
    def _get_param_names(cls) -> list[str]:
        params = inspect.signature(cls.__init__).parameters.values()
        return sorted(p.name for p in params if p.name != "self" and p.kind != p.VAR_KEYWORD)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The parameters by name. ``deep`` is accepted for scikit-learn's API; no parameter of
        these classes holds an estimator, so there is nothing nested to add."""
        return {key: getattr(self, key) for key in self._get_param_names()}

    def set_params(self, **params: Any) -> "Params":
        names = self._get_param_names()
        for key, value in params.items():
            if key not in names:
                raise ValueError(f"Invalid parameter {key!r} for estimator {self!r}. "
                                 f"Valid parameters are: {names!r}.")
            setattr(self, key, value)
        return self

    def __setstate__(self, state: dict[str, Any]) -> None:
        # files written while the classes derived from scikit-learn's BaseEstimator hold its
        # version tag in the state; nothing reads it now
        state = dict(state)
        state.pop("_sklearn_version", None)
        self.__dict__.update(state)

    def __repr__(self) -> str:
        defaults = {name: p.default for name, p in
                    inspect.signature(type(self).__init__).parameters.items()}
        changed = [f"{k}={v!r}" for k, v in self.get_params(deep=False).items()
                   if not (k in defaults and _same(defaults[k], v))]
        return f"{type(self).__name__}({', '.join(changed)})"


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - e.g. arrays: shown as changed
        return False


class TailECOD(Params):
    """Inductive ECOD: per-feature empirical tail probabilities against the training sample.

    Follows PyOD's detector interface with the same values as when it derived from PyOD's
    ``ECOD`` (``decision_scores_``, ``threshold_``/``labels_`` from ``contamination``,
    ``predict``, ``_classes``/``_mu``/``_sigma``), without importing PyOD.

    ``directions[j]`` = +1 scores only the upper tail of feature j (e.g. rarity), 0 both tails.
    ``aggregate``: "sum" (PyOD's ECOD: all tails add up) or "max" (the line is as unusual as
    its most unusual feature). "max" ranked the labelled anomalies far better on both
    benchmark ledgers: one extreme property (a night entry by a day worker) is what an auditor
    wants to see, and summing 15 ordinary tails drowns it.
    """

    def __init__(self, contamination: float = 0.1, directions: tuple[int, ...] | None = None,
                 aggregate: str = "max"):
        if isinstance(contamination, (float, int)) and not 0.0 < contamination <= 0.5:
            raise ValueError(f"contamination must be in (0, 0.5], got: {contamination:f}")
        self.contamination = contamination
        self.directions = directions
        self.aggregate = aggregate

    def fit(self, X: np.ndarray, y: Any = None) -> "TailECOD":
        # Float32 (the feature frame's) as it is: the tables and the training scores are the
        # same as from its float64 copy (every float32 is a float64), the sorts of ``np.unique``
        # and the searches run over half the bytes (200k lines: ~0.03 CPU s less)
        X = np.asarray(X)
        if X.dtype != np.float32:
            X = X.astype(np.float64, copy=False)
        self._classes = 2  # PyOD's binary default; y is ignored (unsupervised)
        if y is not None:
            self._classes = len(np.unique(y))
        self.n_features_in_ = X.shape[1]
        self.n_train_ = X.shape[0]
        dirs = self.directions if self.directions is not None else (0,) * X.shape[1]
        self.directions_ = np.asarray(dirs, dtype=np.int8)
        self.values_, self.tails_ = [], []
        for j in range(X.shape[1]):
            values, tails = self._tail_table(X[:, j], int(self.directions_[j]))
            self.values_.append(values)
            self.tails_.append(tails)
        self.decision_scores_ = self.decision_function(X)
        self._process_decision_scores()
        return self

    def _process_decision_scores(self) -> "TailECOD":
        """``threshold_`` (the training scores' 1 - contamination percentile) and ``labels_``
        (1 above it), as PyOD's ``BaseDetector`` computes them for a numeric contamination."""
        if not isinstance(self.contamination, (float, int)):
            raise UserError("TailECOD takes a numeric contamination",
                            hint="e.g. 0.1 (PyThresh objects need PyOD's own detectors)")
        self.threshold_ = np.percentile(self.decision_scores_, 100 * (1 - self.contamination))
        self.labels_ = (self.decision_scores_ > self.threshold_).astype("int").ravel()
        self._mu = np.mean(self.decision_scores_)
        self._sigma = np.std(self.decision_scores_)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """1 for lines scoring above ``threshold_``, else 0 (PyOD's ``predict``)."""
        if not all(hasattr(self, a) for a in ("decision_scores_", "threshold_", "labels_")):
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet.")
        return (self.decision_function(X) > self.threshold_).astype("int").ravel()

    def _tail_table(self, col: np.ndarray, direction: int) -> tuple[np.ndarray, np.ndarray]:
        """The ECDF of one training column as a lookup table over its distinct values.

        ``tails[2k + 1]`` is the tail score of a value equal to ``values[k]``, ``tails[2k]``
        of a value strictly between ``values[k-1]`` and ``values[k]`` (``tails[2m]``: above
        the largest). Identical to searching the sorted training column, but the search runs
        over the distinct values (most features have < 2,000; they stay in the CPU cache) and
        the probabilities and logs are computed once per table entry instead of per line:
        scoring 1M lines x 15 features took 1.3 s that way, 0.35 s with the tables."""
        values, counts = np.unique(col, return_counts=True)
        n = self.n_train_
        below = np.concatenate([[0], np.cumsum(counts)])   # training values < values[k]
        upper_gap = (n - below + 1) / (n + 1)
        upper_hit = (n - below[:-1] + 1) / (n + 1)
        if direction > 0:
            p_gap, p_hit = upper_gap, upper_hit
        else:
            p_gap = np.minimum(np.minimum(upper_gap, (below + 1) / (n + 1)) * 2, 1.0)
            p_hit = np.minimum(np.minimum(upper_hit, (below[1:] + 1) / (n + 1)) * 2, 1.0)
        tails = np.empty(2 * len(values) + 1)
        tails[0::2] = -np.log(np.minimum(p_gap, 1.0))
        tails[1::2] = -np.log(np.minimum(p_hit, 1.0))
        narrow = values.astype(np.float32)
        if np.array_equal(narrow, values):  # the features are Float32: search in half the bytes
            values = narrow
        return values, tails

    def _tables(self, dtype: np.dtype) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per feature the (values, tails) lookup table to search columns of ``dtype`` in: a
        Float32 table is widened for Float64 columns (exact), once per call, not per chunk."""
        return [(values.astype(np.float64) if values.dtype != dtype else values, tails)
                for values, tails in zip(self.values_, self.tails_)]

    @staticmethod
    def _column_tails(table: tuple[np.ndarray, np.ndarray], col: np.ndarray) -> np.ndarray:
        """One feature's tail scores: a search over the distinct training values and a gather."""
        values, tails = table
        if col.dtype != values.dtype:  # compare in float64 (exact for float32 values)
            col = col.astype(np.float64)
        k = search(values, col)
        hit = values.take(k, mode="clip") == col
        k <<= 1
        k += hit
        return tails.take(k)

    def tail_scores(self, X: np.ndarray) -> np.ndarray:
        """-log P(a training value is at least as extreme), per feature; 0 = typical."""
        X = np.asarray(X)
        out = np.empty(X.shape, dtype=np.float64)
        for j, table in enumerate(self._tables(X.dtype)):  # ~15 features, vectorised over rows
            out[:, j] = self._column_tails(table, X[:, j])
        return out

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """The aggregate of the tail scores, computed ``SCORE_CHUNK`` rows at a time column by
        column: no (rows x features) Float64 matrix (120 MB per 1M lines, freshly faulted in,
        and summed along its short rows); the chunk's columns stay in the CPU cache. The
        result has the same bits as ``tail_scores(X).max(axis=1) + .sum(axis=1) * 1e-3``
        (``row_sum``). 1M lines: 0.82 -> 0.5 CPU s with the percentiles."""
        if self.aggregate not in ("max", "sum"):
            raise UserError(f"unknown ECOD aggregate {self.aggregate!r}", hint="use max or sum")
        X = np.asarray(X)
        tables = self._tables(X.dtype)
        out = np.empty(len(X), dtype=np.float64)
        for start in range(0, len(X), SCORE_CHUNK):
            part = X[start:start + SCORE_CHUNK]
            cols = [self._column_tails(table, part[:, j]) for j, table in enumerate(tables)]
            if self.aggregate == "max":
                # ties on the max are broken by the sum, scaled far below one tail unit
                top = cols[0].copy()
                for col in cols[1:]:
                    np.maximum(top, col, out=top)
                out[start:start + len(part)] = top + row_sum(cols) * 1e-3
            else:
                out[start:start + len(part)] = row_sum(cols)
        return out


SORTED_SEARCH_MIN = 1 << 12
"""Tables of at least this many values are searched with the keys sorted first (``search``)."""


def search(values: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """``np.searchsorted(values, keys, "left")``; in a large table with the keys sorted first.

    Why: a table beyond the CPU cache (amount_z_account's ~165k distinct values, the ~200k
    training scores of the percentiles) costs a cache miss per step of each binary search; with
    ascending keys NumPy starts each search at the previous result and the steps stay close:
    16k keys in 165k values 0.11 -> 0.06 CPU s per 1M lines, the argsort included. Each key's
    result is the same, whatever the order it is searched in."""
    if len(values) < SORTED_SEARCH_MIN or len(keys) < 2:
        return np.searchsorted(values, keys, "left")
    order = np.argsort(keys)
    out = np.empty(len(keys), dtype=np.intp)
    out[order] = np.searchsorted(values, keys[order], "left")
    return out


SCORE_CHUNK = 1 << 14
"""Rows per chunk of ``TailECOD.decision_function`` (16k rows x 15 features x 8 bytes: ~2 MB,
the columns of a chunk stay in the CPU cache; 8k-32k measured alike)."""


def row_sum(cols: list[np.ndarray]) -> np.ndarray:
    """``np.stack(cols, axis=1).sum(axis=1)`` with the same bits, without the matrix.

    NumPy sums each row of a C-contiguous matrix pairwise: up to 7 values in order, up to 128
    in 8 partial sums (values i, i+8, i+16, ...) combined as ``((0+1)+(2+3))+((4+5)+(6+7))``
    and the rest added in order, more split in halves (a multiple of 8); the reduction starts
    from 0.0 (so -0.0 turns 0.0). Summing in any other order could change the last bit of a
    score. ``tests/test_models.py`` checks this against NumPy for 1..300 columns."""

    def pairwise(part: list[np.ndarray]) -> np.ndarray:
        n = len(part)
        if n < 8:
            res = part[0].copy()
            for col in part[1:]:
                res += col
            return res
        if n <= 128:
            acc = [col.copy() for col in part[:8]]
            i = 8
            while i < n - n % 8:
                for j in range(8):
                    acc[j] += part[i + j]
                i += 8
            res = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
            for col in part[i:]:
                res += col
            return res
        half = n // 2
        half -= half % 8
        return pairwise(part[:half]) + pairwise(part[half:])

    total = pairwise(cols)
    total += 0.0
    return total


class BookingOutlierEnsemble(Params):
    """Rank-averaged ensemble of outlier detectors (scikit-learn estimator conventions: ``Params``):
    our ``TailECOD``, and PyOD's IForest and HBOS when configured.

    ``decision_function`` returns 0..1: the mean over detectors of the score's percentile
    among the training scores (higher = more unusual). ``tail_scores`` gives the per-feature
    ECOD tail scores used for explanations.
    """

    def __init__(self, detectors: tuple[str, ...] = ("ecod",), n_estimators: int = 100,
                 max_samples: int = 2048, n_bins: int = 20,
                 directions: tuple[int, ...] | None = None, ecod_aggregate: str = "max",
                 batch_size: int = 500_000, random_state: int = 42):
        self.detectors = detectors
        self.ecod_aggregate = ecod_aggregate
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.n_bins = n_bins
        self.directions = directions
        self.batch_size = batch_size
        self.random_state = random_state

    def _make(self, name: str, n_rows: int) -> Any:
        # PyOD imported on use: the default ECOD-only model loads neither PyOD nor scikit-learn
        if name == "iforest":
            with _deferred_imports(DEFERRED_IMPORTS):
                from pyod.models.iforest import IForest

            return IForest(n_estimators=self.n_estimators,
                           max_samples=max(2, min(self.max_samples, n_rows)),
                           random_state=self.random_state, n_jobs=1)
        if name == "hbos":
            with _deferred_imports(DEFERRED_IMPORTS):
                from pyod.models.hbos import HBOS

            return HBOS(n_bins=self.n_bins)
        if name == "ecod":
            return TailECOD(directions=self.directions, aggregate=self.ecod_aggregate)
        raise UserError(f"unknown detector {name!r} in [models] detectors",
                        hint=f"known detectors: {', '.join(KNOWN_DETECTORS)}")

    def fit(self, X: np.ndarray, y: Any = None) -> "BookingOutlierEnsemble":
        """Fits the detectors on ``X``; ``TailECOD`` takes a Float32 ``X`` as it is (see
        ``TailECOD.fit``), the others a C-contiguous float64 copy."""
        X = np.asarray(X)
        if X.dtype != np.float32:
            X = np.ascontiguousarray(X, dtype=np.float64)
        wide = None
        names = list(dict.fromkeys(self.detectors))
        if not names:
            raise UserError("[models] detectors is empty", hint="e.g. [\"iforest\", \"hbos\"]")
        self.detectors_ = {}
        for name in names:
            det = self._make(name, len(X))
            if name != "ecod" and wide is None:
                wide = np.ascontiguousarray(X, dtype=np.float64)
            self.detectors_[name] = det.fit(X if name == "ecod" else wide)
        # distinct training scores and how many lie below each: one search per scored line
        self.train_scores_ = {}
        for name, det in self.detectors_.items():
            values, counts = np.unique(det.decision_scores_, return_counts=True)
            self.train_scores_[name] = (values, np.concatenate([[0], np.cumsum(counts)]))
        self.explainer_ = (self.detectors_["ecod"] if "ecod" in self.detectors_
                           else TailECOD(directions=self.directions,
                                         aggregate=self.ecod_aggregate).fit(X))
        self.n_features_in_ = X.shape[1]
        return self

    def _percentile(self, name: str, raw: np.ndarray) -> np.ndarray:
        """Mid-rank of ``raw`` among the training scores, in [0, 1]."""
        values, below = self.train_scores_[name]
        k = search(values, raw)
        hit = values.take(k, mode="clip") == raw
        return (2 * below[k] + hit * (below.take(k + 1, mode="clip") - below[k])) \
            / (2.0 * below[-1])

    def detector_scores(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """Each detector's percentile score (0..1), scored in batches of ``batch_size``.

        ``X`` may be the feature frame's Float32: ``TailECOD`` widens one column at a time
        (no float64 copy of the batch); the other detectors get a float64 copy, as at fit."""
        X = np.asarray(X)
        out = {name: np.empty(len(X)) for name in self.detectors_}
        for start in range(0, len(X), self.batch_size):
            part, wide = X[start:start + self.batch_size], None
            for name, det in self.detectors_.items():
                if isinstance(det, TailECOD):  # by cache-sized chunks, raw scores included
                    for at in range(0, len(part), SCORE_CHUNK):
                        chunk = part[at:at + SCORE_CHUNK]
                        out[name][start + at:start + at + len(chunk)] = self._percentile(
                            name, det.decision_function(chunk))
                    continue
                if wide is None:
                    wide = np.ascontiguousarray(part, dtype=np.float64)
                out[name][start:start + len(part)] = self._percentile(
                    name, det.decision_function(wide))
        return out

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        scores = self.detector_scores(X)
        return np.mean(np.stack(list(scores.values())), axis=0)

    def tail_scores(self, X: np.ndarray) -> np.ndarray:
        return self.explainer_.tail_scores(X)


# --------------------------------------------------------------------------- persistence

def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("pyod", "scikit-learn", "numpy", "polars", "belegwacht"):
        try:
            out[name] = version(name)
        except Exception:  # noqa: BLE001 - a missing distribution is recorded, not fatal
            out[name] = "?"
    return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


MODEL_FORMAT = "belegwacht-ensemble-1"
"""The envelope ``save_ensemble`` writes (in the joblib and in ``ensemble.json``). Files of
runs before it (no ``format`` in the sidecar) are PyOD's ``persistence`` envelope."""


def save_ensemble(model: BookingOutlierEnsemble, folder: Path, meta: dict[str, Any]) -> Path:
    """Write ``ensemble.joblib`` (our envelope: format, versions, run, model) and
    ``ensemble.json`` (format, params, versions, sha256).

    Why our own envelope: PyOD's ``persistence.save`` imports PyOD and scikit-learn (~1 CPU s
    per run) to record their versions; the default model uses neither."""
    import joblib

    folder.mkdir(parents=True, exist_ok=True)
    blob = folder / "ensemble.joblib"
    versions = _versions()
    joblib.dump({"format": MODEL_FORMAT, "versions": versions,
                 "metadata": {"run": meta.get("run_id")}, "model": model}, blob)
    sidecar = {
        "sha256": _sha256(blob),
        "params": {k: (list(v) if isinstance(v, tuple) else v)
                   for k, v in model.get_params().items()},
        "versions": versions,
        **meta,
    }
    sidecar["format"] = MODEL_FORMAT
    (folder / "ensemble.json").write_text(json.dumps(sidecar, indent=2, default=str), "utf-8")
    return blob


def load_ensemble(folder: Path) -> tuple[BookingOutlierEnsemble, dict[str, Any]]:
    """Load a saved ensemble only if its sha256 matches the sidecar written with it: nothing is
    unpickled before. Our envelope with joblib; a file of an older run (PyOD's envelope, the
    sidecar without ``format``) with ``pyod.utils.persistence.load``, which imports PyOD."""
    blob, sidecar = folder / "ensemble.joblib", folder / "ensemble.json"
    if not blob.exists() or not sidecar.exists():
        raise ModelLoadError("saved model or its ensemble.json is missing", file=str(folder))
    try:
        meta = json.loads(sidecar.read_text("utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"unreadable sidecar: {exc}", file=str(sidecar)) from exc
    if not isinstance(meta, dict) or meta.get("sha256") != _sha256(blob):
        raise ModelLoadError("model file does not match the sha256 in ensemble.json; "
                             "refusing to unpickle it", file=str(blob),
                             hint="re-run the scoring to fit a fresh model")
    fmt = meta.get("format")
    if fmt == MODEL_FORMAT:
        import joblib

        envelope = joblib.load(blob)
        if not isinstance(envelope, dict) or envelope.get("format") != MODEL_FORMAT:
            raise ModelLoadError("file is not a saved ensemble of this format", file=str(blob))
        model = envelope.get("model")
    elif fmt is None:  # written before MODEL_FORMAT: PyOD's versioned envelope
        from pyod.utils.persistence import load

        model = load(blob, trusted=True)
    else:
        raise ModelLoadError(f"unknown model format {fmt!r}", file=str(sidecar),
                             hint="saved by a newer belegwacht? re-run the scoring")
    if not isinstance(model, BookingOutlierEnsemble):
        raise ModelLoadError("file does not hold a BookingOutlierEnsemble", file=str(blob))
    return model, meta


# --------------------------------------------------------------------------- pipeline stage

def _delivery_keys(ctx: Any) -> pl.DataFrame | None:
    path = Path(ctx.run_dir) / "bookings.parquet"
    if getattr(ctx, "rescore_history", False) or not path.exists():
        return None
    return pl.read_parquet(path, columns=KEY).with_columns(
        pl.col("fiscal_year").cast(pl.Int32), pl.col("line_no").cast(pl.Int32))


def _key_hash(frame: pl.DataFrame, cols: list[str] = KEY) -> pl.Series:
    """``schema.key_hash`` of each row's line (or, with ``JOURNAL``, journal) key."""
    return frame.select(key_hash(cols)).to_series()


def _target_rows(frame: pl.DataFrame, targets: pl.DataFrame | None,
                 order: np.ndarray | None = None) -> np.ndarray | None:
    """Row positions of ``frame`` whose key is in ``targets`` (None = all rows: the
    delivery is the whole history, as on a first run). ``order``: the feature frame's
    ``FeatureFrame.order`` (its rows' positions in the history as read).

    A first run's delivery is the history in the order it is stored: put in the frame's
    order by ``order`` its keys are the frame's, compared exactly (1M lines: 0.03 CPU s
    against 0.09 for the hash sums below, which remain for any other order).

    Why hashes: a semi join over the four key columns (two strings) cost ~0.3 s per 1M lines,
    a 64-bit hash of each key and ``is_in`` a tenth of that. Exactness: the delivery's lines
    are all in the history (it was merged into it), so the hash matches are exactly the
    delivery unless two keys collide; a collision shows as more matches than distinct
    delivery hashes, and then the exact semi join is used."""
    if targets is None:
        return None
    if targets.height == frame.height and (targets if order is None else
                                           targets.rechunk()[order]).equals(frame.select(KEY)):
        return None  # (one chunk first: a gather over the file's row groups took 2x as long)
    if targets.height == frame.height:
        # as many delivery lines as history lines: the delivery is the whole history (a first
        # run) if their keys' hashes add up to the same sum (mod 2^64; a missing, foreign or
        # repeated key changes it unless hashes collide, the risk the paths below take too).
        # 1M lines: 0.16 -> 0.07 CPU s (no distinct set of the hashes, no membership test)
        have = _key_hash(frame).to_numpy().sum(dtype=np.uint64)
        if have == _key_hash(targets).to_numpy().sum(dtype=np.uint64):
            return None
    wanted = _key_hash(targets).unique()
    hit = _key_hash(frame).is_in(wanted.implode())
    rows = np.flatnonzero(hit.to_numpy())
    if len(rows) == len(wanted):  # every delivery key is in the history: no collision
        return None if len(rows) == frame.height else rows
    exact = frame.select(KEY).with_row_index("_row").join(
        targets.select(KEY).unique(), on=KEY, how="semi")
    return np.sort(exact.get_column("_row").to_numpy())


def _vendors(ctx: Any) -> pl.DataFrame | None:
    path = Path(ctx.run_dir) / "master" / "vendors.parquet"
    return pl.read_parquet(path) if path.exists() else None


def empty_scores() -> pl.DataFrame:
    return pl.DataFrame(schema=MODEL_SCORE_SCHEMA)


def explain_mask(scores: pl.DataFrame, settings: Any,
                 journals: pl.DataFrame | None = None) -> pl.Series:
    """Which scored lines get reason texts: the lines at their journal's top model score, for
    journals that can show them.

    Why: scoring and the app read only a journal's top line (ties included, as either may be
    shown), and scoring prints the model's words only for journals at or above
    ``[scoring] model_floor``; the app also shows them for every item, i.e. for journals with
    rule hits (``journals``). Composing the texts for every line cost ~7 CPU s per 1M lines.
    ``journals=None`` explains the top line(s) of every journal. ``scores`` must be sorted by
    KEY (``fit_and_score``'s are)."""
    # ``scores`` is sorted by KEY: a journal is a run of equal keys, numbered without a
    # group-by over the string key (that held ~250 MB per 1M lines); the journal maxima are
    # numpy reductions over the runs (a window ``max().over`` took ~5 s at 10M lines)
    if scores.height == 0:
        return pl.Series("explain", [], dtype=pl.Boolean)
    if "_jk" in scores.columns:  # the feature frame's journal number: no string comparisons
        new = pl.col("_jk").ne_missing(pl.col("_jk").shift())
    else:
        new = pl.any_horizontal([pl.col(c).ne_missing(pl.col(c).shift()) for c in JOURNAL])
    first = scores.select(new.alias("_new")).to_series().to_numpy()
    starts = np.flatnonzero(first)
    journal = np.cumsum(first) - 1
    score = scores.get_column("model_score").to_numpy()
    best = np.maximum.reduceat(score, starts)
    top = score == best[journal]
    if journals is None:
        return pl.Series("explain", top)
    floor = min(max(settings.scoring.model_floor, 0.0), 0.999)
    if journals.height == 0:  # no hit journals (the worker's first pass): no hashing
        return pl.Series("explain", top & (best >= floor)[journal])
    # journals with hits by a 64-bit hash of their key, not a join over the string key (a
    # collision could only add reason texts to one more journal, never drop any); only the
    # key columns are gathered at the journal starts (all columns: 0.03 CPU s per 1M lines)
    wanted = _key_hash(journals, JOURNAL).unique()
    hit = _key_hash(scores.select(JOURNAL)[starts], JOURNAL).is_in(wanted.implode()).to_numpy()
    return pl.Series("explain", top & ((best >= floor) | hit)[journal])


@dataclass
class Scored:
    """The model stage between scoring and explaining (``fit_score`` -> ``explain_scored``).

    Why two phases: only the reason texts need the rule hits (which journals get words); the
    model worker (``detect.modelworker``) fits and scores while the rules run and explains once
    they are done. ``frame`` is the feature frame (kept for the explained lines' context),
    ``keys`` the scored lines' keys, ``_jk`` and ``model_score``, ``rows`` their positions in
    ``frame`` (None = all rows). ``model`` None: nothing was fitted (``meta["skipped"]``)."""

    meta: dict[str, Any]
    model: BookingOutlierEnsemble | None = None
    frame: pl.DataFrame | None = None
    keys: pl.DataFrame | None = None
    rows: np.ndarray | None = None
    used: list[str] = field(default_factory=list)


def fit_score(bookings: pl.LazyFrame, settings: Any, *, targets: pl.DataFrame | None = None,
              vendors: pl.DataFrame | None = None, log: Any = None,
              features: Any = None) -> Scored:
    """Features -> fit on a sample of the history -> score ``targets`` (keys) or all lines.

    ``features``: ``build_features(bookings, settings, vendors, percentiles=False)`` computed
    already (the model worker's guess, ``modelworker.ModelPart.guess``, once it has checked
    that ``bookings`` is the file it was computed from); ``bookings`` is then not read."""
    cfg = settings.models
    clock, cpu = time.perf_counter(), time.process_time()
    ff = features if features is not None else \
        build_features(bookings, settings, vendors, percentiles=False)
    frame = ff.frame
    used, dropped = active_features(frame)
    meta: dict[str, Any] = {"features": used, "dropped_features": dropped, "notes": ff.notes,
                            "history_lines": frame.height, "seed": cfg.seed,
                            "seconds": {"features": round(time.perf_counter() - clock, 2)},
                            "cpu_seconds": {"features": round(time.process_time() - cpu, 2)},
                            "peak_rss_mb": {"features": max_rss_mb()}}
    if frame.height < MIN_LINES or not used:
        meta["skipped"] = f"history has {frame.height} lines and {len(used)} usable features"
        if log is not None:
            log.warn(f"outlier models skipped: {meta['skipped']}")
        return Scored(meta)
    fit_cols = frame.select(used)  # the sample copies only the features, not the context
    sample = fit_cols.sample(n=min(cfg.fit_sample, frame.height), seed=cfg.seed) \
        if frame.height > cfg.fit_sample else fit_cols
    del fit_cols
    meta["fit_lines"] = sample.height
    clock, cpu = time.perf_counter(), time.process_time()
    # the Float32 features as stored: the ensemble widens them only for IForest/HBOS
    model = BookingOutlierEnsemble(
        detectors=tuple(cfg.detectors), directions=tuple(DIRECTIONS[n] for n in used),
        batch_size=cfg.batch_size, random_state=cfg.seed).fit(sample.to_numpy())
    del sample
    meta["seconds"]["fit"] = round(time.perf_counter() - clock, 2)
    meta["cpu_seconds"]["fit"] = round(time.process_time() - cpu, 2)
    meta["peak_rss_mb"]["fit"] = max_rss_mb()
    clock, cpu = time.perf_counter(), time.process_time()
    # the lines to score as row positions in the (key-sorted) frame: gathers instead of
    # joins over the four string key columns
    rows = _target_rows(frame, targets, ff.order)
    keys = frame.select(KEY + ["_jk"])
    keys = keys if rows is None else keys[rows]
    score = np.empty(keys.height)
    for start in range(0, keys.height, cfg.batch_size):
        part = frame.select(used).slice(start, cfg.batch_size) if rows is None \
            else frame.select(used)[rows[start:start + cfg.batch_size]]
        # Float32 as stored: the ensemble widens only for the detectors that need it
        score[start:start + part.height] = model.decision_function(part.to_numpy())
    keys = keys.with_columns(pl.Series("model_score", score))
    meta["seconds"]["score"] = round(time.perf_counter() - clock, 2)
    meta["cpu_seconds"]["score"] = round(time.process_time() - cpu, 2)
    meta["peak_rss_mb"]["score"] = max_rss_mb()
    return Scored(meta, model, frame, keys, rows, used)


def explain_scored(scored: Scored, settings: Any, explain_journals: pl.DataFrame | None = None
                   ) -> tuple[pl.DataFrame, BookingOutlierEnsemble | None, dict[str, Any]]:
    """Reason texts for the lines ``explain_mask`` picks (with ``explain_journals``, e.g. the
    journals with rule hits); the other lines' texts are null. Releases ``scored``'s frames."""
    meta, model, frame, keys, rows = (scored.meta, scored.model, scored.frame, scored.keys,
                                      scored.rows)
    scored.frame = scored.keys = None
    if model is None:  # nothing was fitted (meta["skipped"])
        return empty_scores(), None, meta
    if frame is None or keys is None:  # not an empty result: the scores are gone
        raise RuntimeError("explain_scored: this Scored was explained already")
    used = scored.used
    clock, cpu = time.perf_counter(), time.process_time()
    mask = explain_mask(keys, settings, explain_journals).to_numpy()
    picked = np.flatnonzero(mask)
    lines = picked if rows is None else rows[picked]
    sub = frame[lines].hstack(amount_percentiles(frame, lines))
    del frame
    text = explain.explain(sub, model.tail_scores(sub.select(used).to_numpy()), used,
                           settings.models.top_features, settings)
    # texts only on the picked lines: scattered into null columns by position, not joined
    idx = pl.Series(picked, dtype=pl.Int64)
    out = keys.with_columns(
        pl.repeat(None, keys.height, dtype=pl.String, eager=True).alias(c)
        .scatter(idx, text.get_column(c))
        for c in text.columns)
    meta["explained_lines"] = sub.height
    meta["seconds"]["explain"] = round(time.perf_counter() - clock, 2)
    meta["cpu_seconds"]["explain"] = round(time.process_time() - cpu, 2)
    meta["peak_rss_mb"]["explain"] = max_rss_mb()
    return out.select(list(MODEL_SCORE_SCHEMA)).cast(dict(MODEL_SCORE_SCHEMA)), model, meta


def fit_and_score(bookings: pl.LazyFrame, settings: Any, *, targets: pl.DataFrame | None = None,
                  vendors: pl.DataFrame | None = None, log: Any = None,
                  explain_journals: pl.DataFrame | None = None
                  ) -> tuple[pl.DataFrame, BookingOutlierEnsemble | None, dict[str, Any]]:
    """Features -> fit on a sample of the history -> score ``targets`` (keys) or all lines.

    Every scored line gets ``model_score``; only the lines chosen by ``explain_mask`` (with
    ``explain_journals``, e.g. the journals with rule hits) get reason texts and
    ``top_features``, the others null."""
    scored = fit_score(bookings, settings, targets=targets, vendors=vendors, log=log)
    return explain_scored(scored, settings, explain_journals)


def start_stage(bookings: pl.LazyFrame, ctx: Any, features: Any = None) -> Scored:
    """The pipeline stage's first phase (needs no rule hits): fit and score the delivery's
    lines (``ctx.run_dir``'s ``bookings.parquet``; all lines with ``rescore_history``);
    ``features``: see ``fit_score``."""
    return fit_score(bookings, ctx.settings, targets=_delivery_keys(ctx), vendors=_vendors(ctx),
                     log=ctx.log, features=features)


def explain_stage(scored: Scored, ctx: Any, explain_journals: pl.DataFrame | None = None
                  ) -> tuple[pl.DataFrame, BookingOutlierEnsemble | None, dict[str, Any]]:
    """Reason texts (``explain_scored``) and the run's model metadata; notes to ``ctx.log``."""
    scores, model, meta = explain_scored(scored, ctx.settings, explain_journals)
    meta["run_id"] = ctx.run_id
    meta["entity"] = ctx.entity
    meta["scored_lines"] = scores.height
    if meta.get("dropped_features"):
        ctx.log.info("features without information (constant, dropped): "
                     + ", ".join(meta["dropped_features"]))
    return scores, model, meta


def save_stage(scores: pl.DataFrame, model: BookingOutlierEnsemble | None,
               meta: dict[str, Any], ctx: Any) -> None:
    """``models/`` (the ensemble and ``ensemble.json``) and ``model_scores.parquet`` into the
    run folder. The model worker does this after handing the scores to the job."""
    run_dir = Path(ctx.run_dir)
    if model is not None:
        save_ensemble(model, run_dir / "models", meta)
    else:
        (run_dir / "models").mkdir(parents=True, exist_ok=True)
        (run_dir / "models" / "ensemble.json").write_text(
            json.dumps(meta, indent=2, default=str), "utf-8")
    scores.write_parquet(run_dir / "model_scores.parquet")


def score_lines(bookings: pl.LazyFrame, ctx: Any,
                explain_journals: pl.DataFrame | None = None) -> pl.DataFrame:
    """Pipeline stage: writes ``model_scores.parquet`` and ``models/`` into the run folder.

    ``explain_journals``: frame with the journal key columns (e.g. the rule hits) whose top
    line gets reason texts even below ``[scoring] model_floor``; None explains every journal's
    top line. In one process: ``start_stage`` -> ``explain_stage`` -> ``save_stage``, the
    phases ``detect.modelworker`` runs in a worker."""
    scores, model, meta = explain_stage(start_stage(bookings, ctx), ctx, explain_journals)
    save_stage(scores, model, meta, ctx)
    return scores
