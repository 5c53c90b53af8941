"""Detection quality on the labelled demo ledger (sample_data/demo + demo_labels.csv).

Thresholds are regression floors just below what was measured (docs/models_scoring.md); the
issue's goal of combined recall@1 % >= 0.9 is not reached yet and is not asserted.
"""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (ROOT / "sample_data" / "demo_labels.csv").exists()
                       or not (ROOT / "sample_data" / "demo").is_dir(),
                       reason="demo ledger not generated (sample_data/demo, demo_labels.csv)"),
]


@pytest.fixture(scope="module")
def metrics(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    from bench.detection import demo_rankings, evaluate

    rankings, labels, journals = demo_rankings(tmp_path_factory.mktemp("demo"))
    return {name: evaluate(r, labels, journals).filter(pl.col("scenario") == "overall")
            .row(0, named=True) for name, r in rankings.items()}


def test_combined_finds_most_labelled_journals_at_small_budgets(metrics) -> None:
    combined = metrics["combined"]
    assert combined["n"] >= 50
    assert combined["recall@1%"] >= 0.75      # measured 0.81 (goal 0.9 not reached)
    assert combined["recall@2%"] >= 0.80      # measured 0.86-0.875
    assert combined["ap"] >= 0.55             # measured 0.69-0.71


def test_combined_is_not_worse_than_either_signal_alone(metrics) -> None:
    combined, rules, models = metrics["combined"], metrics["rules only"], metrics["models only"]
    one = 1 / combined["n"] + 1e-9            # tolerate one journal: the rules keep changing
    assert combined["recall@1%"] >= rules["recall@1%"] - one
    assert combined["recall@2%"] >= rules["recall@2%"] - one
    assert combined["ap"] >= rules["ap"] - 0.01
    assert combined["recall@1%"] > models["recall@1%"]
    assert combined["ap"] > models["ap"]


def test_models_alone_find_something(metrics) -> None:
    models = metrics["models only"]
    assert models["recall@1%"] >= 0.35    # measured 0.47; chance level would be 0.01
    assert models["ap"] >= 0.2
