"""The broken-delivery corpus: every fixture's documented outcome (EXPECTED.toml) must hold.

Each case is ingested by the real reader (ADS or mapped CSV) and validated; Great Expectations
runs on every case, and its counts must agree with the vectorised checks.
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from detect import validate
from detect.errors import AlreadyProcessed, DeliveryRejected, IngestError
from validate_support import context, ingest_folder, publish, settings

CORPUS = Path(__file__).parent / "fixtures" / "broken"
EXPECTED: dict[str, dict[str, Any]] = tomllib.loads((CORPUS / "EXPECTED.toml").read_text("utf-8"))


def _run(case: dict[str, Any], folder: Path, data_dir: Path) -> tuple[Any, Any]:
    # Data Docs are tested in test_validate.py; GX still validates every case (cross-check)
    cfg = settings(**{"data_docs": False, **case.get("settings", {})})
    control = folder / case["control_totals"] if "control_totals" in case else None
    ingested = ingest_folder(folder, cfg, case.get("format", "ads"), control)
    ctx = context(data_dir, cfg)
    return validate.validate(ingested, ctx), ctx


def test_corpus_is_large_enough_and_documented() -> None:
    folders = {p.name for p in CORPUS.iterdir() if p.is_dir() and not p.name.startswith(".")}
    used = {c.get("folder", name) for name, c in EXPECTED.items()} | {
        c["previous"] for c in EXPECTED.values() if "previous" in c}
    assert len(EXPECTED) >= 15
    assert folders == used, "every fixture folder has an expected outcome, and vice versa"
    assert {c["outcome"] for c in EXPECTED.values()} >= {"stop", "quarantine", "warn", "ok",
                                                         "already_processed"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_case(name: str, tmp_path: Path) -> None:
    case = EXPECTED[name]
    folder = tmp_path / "delivery"
    shutil.copytree(CORPUS / case.get("folder", name), folder)
    data_dir = tmp_path / "var"
    if "previous" in case:
        prev = tmp_path / "previous"
        shutil.copytree(CORPUS / case["previous"], prev)
        _, prev_ctx = _run({}, prev, data_dir)
        publish(prev_ctx)

    outcome = case["outcome"]
    if outcome in ("stop", "already_processed", "ingest_error"):
        error = {"stop": DeliveryRejected, "already_processed": AlreadyProcessed,
                 "ingest_error": IngestError}[outcome]
        with pytest.raises(error) as info:
            _run(case, folder, data_dir)
        assert case["message"] in str(info.value)
        return

    result, ctx = _run(case, folder, data_dir)
    quarantine = pl.read_parquet(result.quarantine_path)
    clean = pl.read_parquet(result.clean_path)
    assert result.rows_in == clean.height + quarantine.height
    assert result.rows_quarantined == quarantine.height == case.get("quarantined", 0)
    assert result.quarantine_reasons == case.get("reasons", {})
    if "reason_text" in case:
        assert case["reason_text"] in quarantine["reason"].str.join("\n").item()
    findings = result.summary()["journal_findings"]
    assert findings == case.get("findings", {})
    disagreements = [w for w in result.warnings if "please report" in w]
    assert disagreements == []
    checks = [c for c in result.checks if c.get("agrees_with_gx") is not None]
    assert checks and all(c["agrees_with_gx"] for c in checks)
    if outcome == "ok":
        assert result.warnings == []
    if outcome == "warn" and case.get("warning"):
        assert any(case["warning"] in w for w in result.warnings), result.warnings
    if outcome == "quarantine":
        # every quarantined row names its file and line
        assert quarantine["source_line"].null_count() == 0
        assert quarantine["source_file"].str.ends_with(".csv").all()


def test_rejected_delivery_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Exit code 3, one clear message, the failed run kept with its validation.json, and no
    published run (CURRENT is not written)."""
    from detect.cli import main

    folder = tmp_path / "delivery"
    shutil.copytree(CORPUS / "control_missing_journal", folder)
    data_dir = tmp_path / "var"
    (tmp_path / "belegwacht.toml").write_text("[validation]\ndata_docs = false\n", "utf-8")
    code = main(["run", str(folder), "--format", "ads", "--data-dir", str(data_dir), "-q",
                 "--config", str(tmp_path / "belegwacht.toml")])
    err = capsys.readouterr().err
    assert code == 3
    assert "delivery rejected: control totals log_file.csv: 1 journal(s) missing" in err
    assert "Traceback" not in err
    assert not (data_dir / "CURRENT").exists()
    (failed,) = (data_dir / "runs").glob("*.failed")
    assert (failed / "validation.json").exists()
    assert str(failed / "validation.json") in err
