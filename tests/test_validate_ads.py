"""The genuine AICPA ADS sample through ingest and the validation gate (issue 4, "done when").

Its Effective_Date is 1900-01-01 on most lines (a warning, not a quarantine), four FX valuation
journals do not balance, and log_file.csv disagrees with journal 1500000002 by two cents.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from detect import validate
from detect.errors import DeliveryRejected
from detect.ingest import IngestResult, ingest
from validate_support import context, settings

SAMPLE = Path(__file__).parents[1].parent / "shared" / "data" / "aicpa_ads_sample"
GL = SAMPLE / "GL_Detail_YYYYMMDD_YYYYMMDD.csv"
LOG = SAMPLE / "log_file.csv"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not GL.exists(), reason=f"genuine ADS sample {SAMPLE} not available "
                                               "(../shared/data is outside the repository)"),
]


def _ingest(tmp_path: Path, with_log: bool) -> IngestResult:
    result = ingest([GL], "ads", settings(), tmp_path / "tmp")
    if with_log:
        from detect.ingest.control import read_control_totals
        result.control_totals.append(read_control_totals(LOG))
    return result


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> validate.ValidationResult:
    tmp = tmp_path_factory.mktemp("ads")
    return validate.validate(_ingest(tmp, with_log=True),
                             context(tmp / "var", settings(data_docs=False)))


def test_placeholder_effective_dates_warn_and_nothing_is_quarantined(
        checked: validate.ValidationResult) -> None:
    assert (checked.rows_in, checked.rows_clean, checked.rows_quarantined) == (28160, 28160, 0)
    assert checked.unreliable_columns == ["posting_date"]
    (warning,) = [w for w in checked.warnings if w.startswith("posting_date")]
    assert "23,137 of 28,160 rows (82.2%) hold a placeholder date [1900-01-01 (23,137)]" in warning
    assert "kept, not quarantined" in warning
    assert 'set posting_date_column = "Document_Date"' in warning


def test_mixed_currencies_are_reported(checked: validate.ValidationResult) -> None:
    assert ("currency: the delivery mixes currencies (lines: USD 28,152, EUR 8); journal sums "
            "add amounts regardless of currency, so mixed journals may look unbalanced"
            in checked.warnings)
    assert any(w.startswith("currency: most lines are in USD, the configured currency is EUR")
               for w in checked.warnings)


def test_unbalanced_journals_are_findings(checked: validate.ValidationResult) -> None:
    unbal = checked.journal_findings.filter(pl.col("rule_id") == "VAL-UNBAL").sort("journal_id")
    assert unbal["journal_id"].to_list() == ["100011090", "100011091", "100011092", "100011093"]
    first = json.loads(unbal["evidence"][0])
    assert (first["difference"], first["currencies"]) == ("-233.57", "EUR,USD")


def test_every_journal_not_matching_log_file_is_named(checked: validate.ValidationResult) -> None:
    ctrl = checked.journal_findings.filter(pl.col("rule_id") == "VAL-CTRL")
    assert ctrl["journal_id"].to_list() == ["1500000002"]
    evidence = json.loads(ctrl["evidence"][0])
    assert (evidence["debit"], evidence["debit_control"], evidence["debit_difference"]) == (
        "339732014.88", "339732014.90", "-0.02")
    (report,) = checked.control_totals
    assert (report["journals_in_control"], report["mismatches"]) == (13295, 1)
    assert any("1 of 13,295 journals do not reconcile: 1500000002" in w for w in checked.warnings)
    assert all(c.get("agrees_with_gx", True) for c in checked.checks)


def test_strict_control_totals_stop_the_run(tmp_path: Path) -> None:
    with pytest.raises(DeliveryRejected, match="1500000002: debit 339732014.88 delivered vs "
                                               "339732014.90 in control totals"):
        validate.validate(_ingest(tmp_path, with_log=True),
                          context(tmp_path / "var", settings(control_totals="stop")))
