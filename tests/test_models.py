"""Outlier ensemble: explanations name the manipulated feature, runs are reproducible, loading
refuses altered model files, the pipeline stage writes its files."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
from sklearn.base import clone

from detect.config import Settings
from detect.explain import fmt_money, fmt_pct, parse_top_features
from detect.models import (BookingOutlierEnsemble, ModelLoadError, fit_and_score, load_ensemble,
                           save_ensemble, score_lines)
from detect.runlog import StepLog
from test_features import set_line, tiny_ledger


@pytest.fixture(scope="module")
def scored() -> tuple[pl.DataFrame, pl.DataFrame]:
    f = tiny_ledger(1500)
    amt = float(f.filter((pl.col("journal_id") == "J00100") & (pl.col("line_no") == 1))
                ["amount"][0])
    f = set_line(f, "J00100", 1, amount=round(amt * 20, 2))
    f = set_line(f, "J00100", 2, amount=-round(amt * 20, 2))
    # USER0 books on accounts 0-2; 500009 belongs to USER3
    f = set_line(f, "J00101", None, entered_by="USER0")
    f = set_line(f, "J00101", 1, gl_account="500009")
    f = set_line(f, "J00102", None, entered_at=datetime(2025, 5, 6, 3, 12),
                 posting_date=date(2025, 5, 6), document_date=date(2025, 5, 3))
    settings = Settings()
    scores, model, meta = fit_and_score(f.lazy(), settings)
    return f, scores


def _line(scores: pl.DataFrame, jid: str, line: int = 1) -> dict:
    hit = (pl.col("journal_id") == jid) & (pl.col("line_no") == line)
    return scores.filter(hit).row(0, named=True)


def _top(scores: pl.DataFrame, jid: str) -> dict:
    """The journal's top line by model score: the one scoring and the app show."""
    return (scores.filter(pl.col("journal_id") == jid)
            .sort(["model_score", "line_no"], descending=[True, False]).row(0, named=True))


def test_amount_20x_is_explained_by_its_amount(scored) -> None:
    _, scores = scored
    r = _line(scores, "J00100")
    top = parse_top_features(r["top_features"])
    assert top[0]["feature"] in ("amount_z_account", "amount_log")
    assert top[0]["contribution"] > 5
    assert "liegt über" in r["model_reasons_de"] or "ist höher als" in r["model_reasons_de"]
    assert r["model_reasons_en"].startswith("amount ")
    assert r["model_score"] > 0.99
    assert len(top) == Settings().models.top_features


def test_user_never_on_account_is_explained_by_user_account_rarity(scored) -> None:
    _, scores = scored
    r = _line(scores, "J00101")
    names = [t["feature"] for t in parse_top_features(r["top_features"])]
    assert "user_account_rarity" in names[:2]
    assert "Benutzer USER0 hat sonst nie auf Konto 500009 gebucht" in r["model_reasons_de"]
    assert "user USER0 has never otherwise posted to account 500009" in r["model_reasons_en"]


def test_3am_entry_is_explained_by_hour(scored) -> None:
    f, scores = scored
    r = _line(scores, "J00102")
    assert parse_top_features(r["top_features"])[0]["feature"] == "off_hours"
    user = f.filter(pl.col("journal_id") == "J00102")["entered_by"][0]
    assert r["model_reasons_de"].startswith(
        f"erfasst um 03:12 Uhr, außerhalb der Bürozeiten (6–20 Uhr; {user} sonst bei 0,")
    assert "entered at 03:12" in r["model_reasons_en"]
    assert r["model_score"] > 0.95


def test_ordinary_lines_score_lower_than_manipulated(scored) -> None:
    _, scores = scored
    median = scores["model_score"].median()
    assert 0.3 < median < 0.7      # a percentile scale: typical lines sit in the middle
    assert scores["model_score"].is_between(0, 1).all()
    assert scores.columns == ["entity", "fiscal_year", "journal_id", "line_no", "model_score",
                              "model_reasons_de", "model_reasons_en", "top_features"]


def test_same_input_and_seed_give_same_scores(scored) -> None:
    f, scores = scored
    again, _, _ = fit_and_score(f.sample(fraction=1.0, shuffle=True, seed=3).lazy(), Settings())
    assert again.equals(scores)

    def sampled(seed: int) -> pl.DataFrame:   # a fit sample smaller than the history
        s = Settings()
        s.models.fit_sample, s.models.seed = 1000, seed
        s.models.detectors = ["iforest", "ecod"]
        return fit_and_score(f.lazy(), s)[0]

    a = sampled(7)
    assert a.equals(sampled(7))
    assert not np.allclose(a["model_score"].to_numpy(), sampled(8)["model_score"].to_numpy())


def test_estimator_conventions_and_batches() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 3))
    est = BookingOutlierEnsemble(detectors=("iforest", "ecod"), random_state=1, batch_size=64,
                                 max_samples=256, directions=(0, 0, 0))
    assert clone(est).get_params() == est.get_params()
    est.fit(X)
    whole = BookingOutlierEnsemble(detectors=("iforest", "ecod"), random_state=1,
                                   max_samples=256, directions=(0, 0, 0)).fit(X)
    Y = np.vstack([X[:5], [[9.0, 9.0, 0]]])
    np.testing.assert_allclose(est.decision_function(Y), whole.decision_function(Y))
    assert est.decision_function(Y)[-1] > 0.97
    assert est.decision_function(Y)[-1] > est.decision_function(X).max() - 0.02
    assert set(est.detector_scores(Y)) == {"iforest", "ecod"}


@pytest.mark.slow  # HBOS is compiled by numba on first use (~6 s)
def test_hbos_can_be_switched_on() -> None:
    X = np.random.default_rng(0).normal(size=(400, 3))
    hb = BookingOutlierEnsemble(detectors=("hbos", "ecod"), directions=(0, 0, 0)).fit(X)
    assert hb.decision_function(np.array([[9.0, 9.0, 0.0]]))[0] > 0.9
    assert set(hb.detector_scores(X[:3])) == {"hbos", "ecod"}


def test_save_load_roundtrip_and_tamper_refusal(tmp_path: Path) -> None:
    X = np.random.default_rng(0).normal(size=(300, 2))
    est = BookingOutlierEnsemble(detectors=("iforest", "ecod"), random_state=3, max_samples=256,
                                 directions=(1, 0)).fit(X)
    save_ensemble(est, tmp_path, {"run_id": "r1", "features": ["a", "b"]})
    meta = json.loads((tmp_path / "ensemble.json").read_text())
    assert meta["params"]["random_state"] == 3 and meta["versions"]["numpy"]
    assert meta["format"] == "belegwacht-ensemble-1"
    loaded, meta2 = load_ensemble(tmp_path)
    np.testing.assert_array_equal(loaded.decision_function(X), est.decision_function(X))
    blob = tmp_path / "ensemble.joblib"
    blob.write_bytes(blob.read_bytes() + b"\0")
    with pytest.raises(ModelLoadError, match="sha256"):
        load_ensemble(tmp_path)
    (tmp_path / "ensemble.json").unlink()
    with pytest.raises(ModelLoadError, match="missing"):
        load_ensemble(tmp_path)


def _digest(a: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


def test_scores_have_the_bits_of_the_pyod_derived_ecod() -> None:
    """Frozen from the code before TailECOD and the ensemble stopped deriving from PyOD's
    ECOD and scikit-learn's BaseEstimator (13ac485): the standalone classes give the same
    bits for the raw and training scores, threshold_, labels_, predict, the tail scores, the
    ensemble's percentiles and the whole stage on a ledger."""
    from detect.models import TailECOD
    from test_features import tiny_ledger

    rng = np.random.default_rng(11)
    X = np.column_stack([rng.normal(size=3000), np.round(rng.exponential(size=3000), 1),
                         rng.integers(0, 5, 3000).astype(float)]).astype(np.float32)
    Y = np.column_stack([rng.normal(scale=2, size=500), np.round(rng.exponential(size=500), 2),
                         rng.integers(-1, 7, 500).astype(float)]).astype(np.float32)
    frozen = {"max": ("3f2668bb8572af8b", 2.9310259896317206, "9fd13736d6999b4f",
                      "dd5b177be97e9611", 1.6076395644021362, 1.0116128128750135),
              "sum": ("049e5aaca4865881", 4.503031090901469, "d508e8caa1d83cd7",
                      "7902d6eb2359080f", 2.59137574258852, 1.4872736397109196)}
    for agg, (train, threshold, scores, labels, mu, sigma) in frozen.items():
        det = TailECOD(directions=(0, 1, 1), aggregate=agg).fit(X)
        assert _digest(det.decision_scores_) == train and det.threshold_ == threshold
        assert det.labels_.sum() == 300 and det.labels_.dtype == np.int_
        assert _digest(det.decision_function(Y)) == scores
        assert _digest(det.predict(Y)) == labels
        assert _digest(det.tail_scores(Y)) == "1e132ce713f6596a"
        assert (det._mu, det._sigma, det._classes, det.n_features_in_) == (mu, sigma, 2, 3)
        assert det.get_params() == {"aggregate": agg, "contamination": 0.1,
                                    "directions": (0, 1, 1)}
    ens = BookingOutlierEnsemble(directions=(0, 1, 1)).fit(X)
    assert _digest(ens.decision_function(Y)) == "c0a796a550738367"
    assert _digest(ens.decision_function(X)) == "7282a5e3284395d0"
    scores, _, _ = fit_and_score(tiny_ledger(400).lazy(), Settings())
    assert _digest(scores["model_score"].to_numpy()) == "7ab19882c90309ac"


def test_detector_interface_and_params() -> None:
    from detect.models import NotFittedError, TailECOD

    with pytest.raises(ValueError, match="contamination"):
        TailECOD(contamination=0.7)
    with pytest.raises(NotFittedError):
        TailECOD().predict(np.zeros((2, 1)))
    est = BookingOutlierEnsemble(detectors=("ecod", "hbos"), n_bins=7)
    assert repr(est) == "BookingOutlierEnsemble(detectors=('ecod', 'hbos'), n_bins=7)"
    assert est.set_params(n_bins=9, random_state=5) is est
    assert (est.n_bins, est.random_state) == (9, 5)
    with pytest.raises(ValueError, match="Invalid parameter"):
        est.set_params(bins=3)
    twin = clone(est)
    assert twin is not est and twin.get_params() == est.get_params()


def test_files_of_older_runs_load_with_pyods_envelope(tmp_path: Path) -> None:
    """Runs before our envelope saved with ``pyod.utils.persistence.save`` and a sidecar
    without ``format``: they still load (through PyOD), the hash still guards them; an unknown
    format is refused."""
    import hashlib

    from pyod.utils.persistence import save

    X = np.random.default_rng(0).normal(size=(300, 2))
    for detectors in (("ecod",), ("iforest", "ecod")):
        est = BookingOutlierEnsemble(detectors=detectors, random_state=3, max_samples=256,
                                     directions=(1, 0)).fit(X)
        folder = tmp_path / "_".join(detectors)
        folder.mkdir()
        save(est, folder / "ensemble.joblib", metadata={"run": "r0"})
        digest = hashlib.sha256((folder / "ensemble.joblib").read_bytes()).hexdigest()
        (folder / "ensemble.json").write_text(json.dumps({"sha256": digest, "run_id": "r0"}))
        loaded, meta = load_ensemble(folder)
        assert meta["run_id"] == "r0"
        np.testing.assert_array_equal(loaded.decision_function(X), est.decision_function(X))
    (folder / "ensemble.json").write_text(json.dumps({"sha256": digest, "format": "x-9"}))
    with pytest.raises(ModelLoadError, match="unknown model format"):
        load_ensemble(folder)


def test_score_lines_scores_only_the_delivery(tmp_path: Path) -> None:
    f = tiny_ledger(300)
    f.filter(pl.col("journal_id") >= "J00290").write_parquet(tmp_path / "bookings.parquet")
    ctx = SimpleNamespace(run_dir=tmp_path, run_id="r1", entity="Testdorf", settings=Settings(),
                          log=StepLog(quiet=True), rescore_history=False)
    out = score_lines(f.lazy(), ctx)
    assert out.height == 20 and out["journal_id"].min() == "J00290"
    assert pl.read_parquet(tmp_path / "model_scores.parquet").equals(out)
    meta = json.loads((tmp_path / "models" / "ensemble.json").read_text())
    assert meta["history_lines"] == 600 and meta["scored_lines"] == 20
    assert load_ensemble(tmp_path / "models")[1]["sha256"] == meta["sha256"]
    ctx.rescore_history = True
    assert score_lines(f.lazy(), ctx).height == 600


def test_tiny_history_skips_models(tmp_path: Path) -> None:
    ctx = SimpleNamespace(run_dir=tmp_path, run_id="r1", entity="Testdorf", settings=Settings(),
                          log=StepLog(quiet=True), rescore_history=False)
    out = score_lines(tiny_ledger(10).lazy(), ctx)
    assert out.height == 0
    assert "skipped" in json.loads((tmp_path / "models" / "ensemble.json").read_text())


def test_number_formats() -> None:
    df = pl.DataFrame({"a": [9950.0, -1234567.891, 0.5, 1000.0], "p": [0.9973, 1.0, 0.0, 0.5]})
    out = df.select(de=fmt_money(pl.col("a"), "de"), en=fmt_money(pl.col("a"), "en"),
                    pde=fmt_pct(pl.col("p"), "de"), pen=fmt_pct(pl.col("p"), "en"))
    assert out["de"].to_list() == ["9.950,00 €", "1.234.567,89 €", "0,50 €", "1.000,00 €"]
    assert out["en"].to_list() == ["9,950.00 €", "1,234,567.89 €", "0.50 €", "1,000.00 €"]
    assert out["pde"].to_list() == ["99,7 %", "100,0 %", "0,0 %", "50,0 %"]
    assert out["pen"][0] == "99.7%"


def test_new_vendor_and_one_off_bank_account_are_explained() -> None:
    f = tiny_ledger(1500)
    f = f.with_columns(pl.when(pl.col("vendor_id") == "V1").then(pl.lit("DE01"))
                       .otherwise(None).alias("bank_account"))
    v1 = f.filter(pl.col("vendor_id") == "V1")["journal_id"].unique().sort()
    f = set_line(f, v1[-1], None, bank_account="DE99")                  # paid once elsewhere
    f = set_line(f, "J01400", None, vendor_id="V_NEW", entered_at=datetime(2025, 10, 8, 10, 0),
                 posting_date=date(2025, 10, 8), document_date=date(2025, 10, 5))
    scores, _, _ = fit_and_score(f.lazy(), Settings())
    bank = _top(scores, v1[-1])
    assert parse_top_features(bank["top_features"])[0]["feature"] == "bank_rarity"
    n = v1.len()
    assert f"Bankverbindung von Kreditor V1 nur in 1 von {n} Zahlungen verwendet" \
        in bank["model_reasons_de"]
    new = _top(scores, "J01400")
    assert parse_top_features(new["top_features"])[0]["feature"] == "vendor_new"
    assert new["model_reasons_en"].startswith("vendor V_NEW is new (0 days since creation")


def test_only_top_lines_of_journals_that_can_be_shown_are_explained(scored) -> None:
    f, _ = scored
    s = Settings()
    hits = pl.DataFrame({"entity": ["Testdorf"], "fiscal_year": [2025], "journal_id": ["J00005"]})
    scores, _, meta = fit_and_score(f.lazy(), s, explain_journals=hits)
    explained = scores.filter(pl.col("top_features").is_not_null())
    assert meta["explained_lines"] == explained.height
    # each explained line is its journal's top line
    top = scores.group_by("journal_id").agg(pl.col("model_score").max().alias("m"))
    assert explained.join(top, on="journal_id").filter(
        pl.col("model_score") < pl.col("m")).height == 0
    jids = set(explained["journal_id"].to_list())
    assert "J00005" in jids                         # a rule-hit journal, whatever its score
    assert _top(scores, "J00005")["model_score"] < s.scoring.model_floor  # ... even below it
    assert {"J00100", "J00101", "J00102"} <= jids   # manipulated: above the model floor
    # a journal below the floor without rule hits is not explained
    low = (scores.group_by("journal_id").agg(pl.col("model_score").max())
           .filter(pl.col("model_score") < s.scoring.model_floor)["journal_id"].to_list())
    assert set(low) - {"J00005"} and not (set(low) - {"J00005"}) & jids
    assert explained.height < scores.height / 10
    assert scores.filter(pl.col("top_features").is_null())["model_reasons_de"].null_count() \
        == scores.height - explained.height


def _sorted_column_tails(train: np.ndarray, X: np.ndarray, directions: list[int]) -> np.ndarray:
    """The tail scores as the sorted-column search computed them before the lookup tables."""
    n, out = len(train), np.empty(X.shape)
    for j in range(X.shape[1]):
        col = np.sort(train[:, j])
        upper = (n - np.searchsorted(col, X[:, j], "left") + 1) / (n + 1)
        p = upper if directions[j] > 0 else np.minimum(np.minimum(
            upper, (np.searchsorted(col, X[:, j], "right") + 1) / (n + 1)) * 2, 1.0)
        out[:, j] = -np.log(np.minimum(p, 1.0))
    return out


def test_tail_tables_equal_the_sorted_column_search() -> None:
    """The per-feature lookup tables give exactly the tails of searching the sorted training
    column: at training values, between them, below and above all, with ties, in float32."""
    from detect.models import TailECOD

    rng = np.random.default_rng(4)
    train = np.column_stack([rng.integers(0, 5, 3000), rng.normal(size=3000),
                             np.round(rng.exponential(size=3000), 1)]).astype(np.float32)
    X = np.vstack([train[:500], train[:200] + np.float32(0.05),
                   np.array([[-9, -9, -9], [99, 99, 99]], dtype=np.float32)])
    est = TailECOD(directions=(1, 0, 1)).fit(train.astype(np.float64))
    want = _sorted_column_tails(train.astype(np.float64), X.astype(np.float64), [1, 0, 1])
    np.testing.assert_array_equal(est.tail_scores(X), want)                     # float32 rows
    np.testing.assert_array_equal(est.tail_scores(X.astype(np.float64)), want)  # float64 rows
    between = np.full((1, 3), 0.123456789)  # not a float32 value: compared in float64
    np.testing.assert_array_equal(est.tail_scores(between),
                                  _sorted_column_tails(train.astype(np.float64), between,
                                                       [1, 0, 1]))


def test_percentile_is_the_mid_rank_among_training_scores() -> None:
    rng = np.random.default_rng(5)
    X = np.round(rng.normal(size=(2000, 3)), 1)
    est = BookingOutlierEnsemble(detectors=("ecod",)).fit(X)
    ref = np.sort(est.detectors_["ecod"].decision_scores_)
    raw = np.r_[ref[::37], ref[0] - 1, ref[-1] + 1, (ref[10] + ref[11]) / 2]
    want = (np.searchsorted(ref, raw, "left") + np.searchsorted(ref, raw, "right")) \
        / (2.0 * len(ref))
    np.testing.assert_array_equal(est._percentile("ecod", raw), want)


def test_delivery_rows_by_key_hash_and_exact_fallback() -> None:
    from detect.models import _target_rows

    frame = pl.DataFrame({"entity": ["E"] * 6, "fiscal_year": [2025] * 6,
                          "journal_id": ["1", "1", "2", "3", "3", "4"],
                          "line_no": [1, 2, 1, 1, 2, 1]}).with_columns(
        pl.col("fiscal_year").cast(pl.Int32), pl.col("line_no").cast(pl.Int32))
    assert _target_rows(frame, None) is None
    assert _target_rows(frame, frame.reverse()) is None      # all lines: no gather needed
    part = frame[[4, 1, 1]]                                  # duplicates in the delivery
    np.testing.assert_array_equal(_target_rows(frame, part), [1, 4])
    # a delivery key missing from the history takes the exact join: no stray rows
    ghost = pl.concat([frame[[2]], frame[[0]].with_columns(pl.lit("9").alias("journal_id"))])
    np.testing.assert_array_equal(_target_rows(frame, ghost), [2])
    # as many lines as the history but not the same keys: a repeated or a foreign key
    np.testing.assert_array_equal(_target_rows(frame, frame[[0, 0, 2, 3, 4, 5]]),
                                  [0, 2, 3, 4, 5])
    foreign = pl.concat([frame[:5], ghost[1:]])
    np.testing.assert_array_equal(_target_rows(frame, foreign), [0, 1, 2, 3, 4])


def test_whole_delivery_in_the_read_order_is_found_without_hashing(monkeypatch) -> None:
    """A first run: the delivery is the history in the order the features read it
    (``FeatureFrame.order``); put in the frame's order its keys are compared exactly, no key
    is hashed. Any other order, or other keys, take the hash path as before."""
    import detect.models as models

    frame = pl.DataFrame({"entity": ["E"] * 6, "fiscal_year": [2025] * 6,
                          "journal_id": ["1", "1", "2", "3", "3", "4"],
                          "line_no": [1, 2, 1, 1, 2, 1]}).with_columns(
        pl.col("fiscal_year").cast(pl.Int32), pl.col("line_no").cast(pl.Int32))
    read = np.array([3, 0, 5, 1, 4, 2])  # frame row i was line read[i] of the input
    stored = frame[np.argsort(read)]      # the input as read: stored[read] == frame
    hashed = []
    real_hash = models._key_hash
    monkeypatch.setattr(models, "_key_hash", lambda *a: hashed.append(1) or real_hash(*a))
    assert models._target_rows(frame, stored, read) is None
    assert models._target_rows(frame, frame) is None  # read in key order: order None
    assert not hashed
    # other orders and keys still go by the hashes
    assert models._target_rows(frame, stored.reverse(), read) is None and hashed
    np.testing.assert_array_equal(
        models._target_rows(frame, stored.with_columns(pl.lit("9").alias("journal_id")),
                            read), [])


def test_row_sum_has_numpys_bits() -> None:
    """``row_sum`` sums columns in NumPy's pairwise order: the same bits as summing the rows
    of the matrix (signed zeros included), for any number of columns."""
    from detect.models import row_sum

    rng = np.random.default_rng(6)
    for n in [*range(1, 41), 64, 127, 128, 129, 200, 300]:
        m = rng.exponential(size=(2000, n)) * rng.choice([1e-9, 1e-3, 1.0, 1e3, 1e9],
                                                         size=(2000, n))
        m[rng.random(m.shape) < 0.2] = -0.0
        m[:3] = -0.0  # rows of only -0.0: NumPy's sum is 0.0
        want = m.sum(axis=1)
        got = row_sum([np.ascontiguousarray(m[:, j]) for j in range(n)])
        np.testing.assert_array_equal(got.view(np.int64), want.view(np.int64), err_msg=str(n))


@pytest.mark.parametrize("aggregate", ["max", "sum"])
def test_chunked_ecod_scores_equal_the_matrix_formula(monkeypatch, aggregate) -> None:
    """``TailECOD.decision_function`` works in row chunks, column by column: the scores are
    bit for bit those of the whole tail matrix (max + sum / 1000, or the sum)."""
    import detect.models as models

    rng = np.random.default_rng(7)
    train = np.column_stack([rng.integers(0, 5, 3000), rng.normal(size=3000),
                             np.round(rng.exponential(size=3000), 1)] * 5).astype(np.float32)
    est = models.TailECOD(directions=(1, 0, 1) * 5, aggregate=aggregate).fit(
        train.astype(np.float64))
    X = np.vstack([train[:700], train[:300] + np.float32(0.05)])
    for rows in (X, X.astype(np.float64), np.asfortranarray(X)):
        tails = est.tail_scores(rows)
        want = tails.max(axis=1) + tails.sum(axis=1) * 1e-3 if aggregate == "max" \
            else tails.sum(axis=1)
        monkeypatch.setattr(models, "SCORE_CHUNK", 97)
        chunked = est.decision_function(rows)
        monkeypatch.setattr(models, "SCORE_CHUNK", 1 << 14)
        np.testing.assert_array_equal(chunked, want)
        np.testing.assert_array_equal(est.decision_function(rows), want)
    whole = BookingOutlierEnsemble(directions=(1, 0, 1) * 5, ecod_aggregate=aggregate).fit(
        train.astype(np.float64))
    monkeypatch.setattr(models, "SCORE_CHUNK", 97)
    small = whole.decision_function(X)
    monkeypatch.setattr(models, "SCORE_CHUNK", 1 << 14)
    np.testing.assert_array_equal(small, whole.decision_function(X))


_LAZY_SCRIPT = """
import hashlib, json, sys
from pathlib import Path
from types import SimpleNamespace
sys.path.insert(0, {tests!r})
from detect.config import Settings
from detect.models import load_ensemble, score_lines
from detect.runlog import StepLog
from test_features import tiny_ledger
settings = Settings()
settings.models.detectors = {detectors!r}
ctx = SimpleNamespace(run_dir=Path({out!r}), run_id="r1", entity="Testdorf",
                      settings=settings, log=StepLog(quiet=True), rescore_history=False)
scores = score_lines(tiny_ledger(400).lazy(), ctx)   # features, fit, score, texts, save
load_ensemble(Path({out!r}) / "models")
loaded = sorted(m for m in ("pandas.core.frame", "matplotlib.figure", "mpl_toolkits.mplot3d",
                            "sklearn", "pyod", "sklearn.ensemble") if m in sys.modules)
import pandas, matplotlib.pyplot as plt  # a deferred module that is touched simply loads
ok = pandas.DataFrame({{"a": [1]}}).shape == (1, 1) and callable(plt.figure)
print(json.dumps({{"loaded": loaded, "ok": ok, "scores": hashlib.sha256(
    scores.write_ipc(None).getvalue()).hexdigest()}}))
"""


def _run_lazy(tmp_path: Path, flag: str, detectors: tuple[str, ...] = ("ecod",)) -> dict:
    import os
    import subprocess
    import sys

    out = tmp_path / f"{flag}_{'_'.join(detectors)}"
    out.mkdir()
    script = _LAZY_SCRIPT.format(tests=str(Path(__file__).parent), out=str(out),
                                 detectors=list(detectors))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "BELEGWACHT_LAZY_IMPORTS": flag},
                          cwd=Path(__file__).parent.parent, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_default_model_imports_neither_pyod_nor_sklearn(tmp_path: Path) -> None:
    """The default ensemble (ECOD alone) is fitted, scored, explained, saved and loaded in a
    fresh interpreter without PyOD or scikit-learn in ``sys.modules`` (their import cost the
    model worker ~1 CPU s per run), lazy imports on or off."""
    for flag in ("0", "1"):
        assert _run_lazy(tmp_path, flag)["loaded"] == []


def test_deferred_imports_change_no_score(tmp_path: Path) -> None:
    """With IForest configured, PyOD is imported on use (under ``_deferred_imports`` in the
    model worker): the scores and texts are the same with lazy imports on and off, and a
    deferred module that is touched simply loads. (Since ``pyod.models.ecod`` is no longer
    imported, matplotlib is not imported either way; pandas is touched by scikit-learn.)"""
    both = ("ecod", "iforest")
    lazy, eager = _run_lazy(tmp_path, "1", both), _run_lazy(tmp_path, "0", both)
    assert {"sklearn.ensemble", "pyod"} <= set(lazy["loaded"]) and lazy["ok"]
    assert {"sklearn.ensemble", "pyod"} <= set(eager["loaded"])
    assert lazy["scores"] == eager["scores"]


def test_deferred_imports_only_where_the_worker_asks(monkeypatch) -> None:
    import sys
    import types

    from detect.models import _defer_wanted

    monkeypatch.delenv("BELEGWACHT_LAZY_IMPORTS", raising=False)
    main = types.ModuleType("__main__")
    main.__spec__ = SimpleNamespace(name="detect.cli")
    monkeypatch.setitem(sys.modules, "__main__", main)
    assert not _defer_wanted()
    monkeypatch.setenv("BELEGWACHT_LAZY_IMPORTS", "0")
    assert not _defer_wanted()
    monkeypatch.setenv("BELEGWACHT_LAZY_IMPORTS", "1")
    assert _defer_wanted()


def test_sorted_search_equals_searchsorted(monkeypatch) -> None:
    import detect.models as models

    rng = np.random.default_rng(8)
    values = np.unique(np.round(rng.normal(size=20_000), 3))
    keys = np.r_[values[::7], np.round(rng.normal(size=5000), 4), -9.0, 9.0, np.nan, values[:3]]
    for small in (False, True):
        if small:
            monkeypatch.setattr(models, "SORTED_SEARCH_MIN", 1 << 30)
        np.testing.assert_array_equal(models.search(values, keys),
                                      np.searchsorted(values, keys, "left"))


@pytest.mark.parametrize("with_jk", [False, True])
def test_explain_mask_picks_top_lines_above_the_floor_or_of_hit_journals(with_jk: bool) -> None:
    """The top line(s) of each journal; with ``journals`` only those at or above model_floor
    or with hits. An empty ``journals`` (no hits yet) is the floor alone; a hit journal not
    in ``scores`` adds nothing."""
    from detect.models import explain_mask

    settings = Settings()
    floor = settings.scoring.model_floor
    scores = pl.DataFrame({
        "entity": ["E"] * 6, "fiscal_year": [2024] * 6,
        "journal_id": ["1", "1", "2", "2", "3", "4"], "line_no": [1, 2, 1, 2, 1, 1],
        "model_score": [floor + 0.1, floor - 0.2, floor - 0.3, floor - 0.3, floor - 0.1,
                        floor]})
    if with_jk:
        scores = scores.with_columns(pl.Series("_jk", [0, 0, 1, 1, 2, 3]))
    top = [True, False, True, True, True, True]
    assert explain_mask(scores, settings).to_list() == top
    none = scores.select("entity", "fiscal_year", "journal_id").clear()
    assert explain_mask(scores, settings, none).to_list() == \
        [True, False, False, False, False, True]
    hits = pl.DataFrame({"entity": ["E", "E"], "fiscal_year": [2024, 2024],
                         "journal_id": ["2", "9"]})
    assert explain_mask(scores, settings, hits).to_list() == \
        [True, False, True, True, False, True]
    assert explain_mask(scores.clear(), settings, hits).to_list() == []


def test_tune_allocator_reuses_freed_big_blocks() -> None:
    """After ``tune_allocator`` a freed 40 MB array's memory serves the next one (glibc's
    dynamic threshold stops at 32 MB, so without it each is a fresh mmap, faulted in page by
    page). Counted as minor page faults in a fresh process, NumPy's huge-page advice off."""
    import subprocess
    import sys

    code = """
import resource, sys
import numpy as np
np._core.multiarray._set_madvise_hugepage(False)
from detect.models import tune_allocator
if sys.argv[1] == "1":
    assert tune_allocator()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    a = np.ones(5 << 20)  # 40 MB
    del a
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
    if sys.platform != "linux":
        pytest.skip("mallopt is glibc's")
    faults = [int(subprocess.run([sys.executable, "-c", code, flag], capture_output=True,
                                 text=True, check=True, cwd=Path(__file__).parents[1])
                  .stdout.split()[-1]) for flag in ("0", "1")]
    assert faults[1] < faults[0] / 3, faults
