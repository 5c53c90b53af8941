"""Detection quality on the labelled demo ledger (sample_data/demo + demo_labels.csv).

Thresholds are regression floors a journal or two below what was measured
(docs/models_scoring.md: combined recall@1 % 0.938, rules only 0.891, models only 0.469,
combined AP 0.873). The issue's goal (combined recall@1 % >= 0.9, better than either signal
alone) is asserted.
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


def test_combined_reaches_the_goal_at_one_percent(metrics) -> None:
    combined = metrics["combined"]
    assert combined["n"] >= 50
    assert combined["recall@1%"] >= 0.9       # measured 0.938 (60 of 64)
    assert combined["recall@0.5%"] >= 0.6     # measured 0.688
    assert combined["recall@2%"] >= 0.92      # measured 0.953
    assert combined["ap"] >= 0.8              # measured 0.873


def test_combined_beats_either_signal_alone(metrics) -> None:
    combined, rules, models = metrics["combined"], metrics["rules only"], metrics["models only"]
    assert combined["recall@1%"] > rules["recall@1%"]     # 0.938 vs 0.891
    # at 2 % the rules alone are one journal ahead (a USR005 hit tied with 52 others at the
    # cut; docs/models_scoring.md); tolerate that one journal
    assert combined["recall@2%"] >= rules["recall@2%"] - 1 / combined["n"] - 1e-9
    assert combined["ap"] > rules["ap"]                   # 0.873 vs 0.862
    assert combined["recall@1%"] > models["recall@1%"]    # vs 0.469
    assert combined["ap"] > models["ap"]


def test_models_alone_find_something(metrics) -> None:
    models = metrics["models only"]
    assert models["recall@1%"] >= 0.4     # measured 0.469; chance level would be 0.01
    assert models["ap"] >= 0.2
