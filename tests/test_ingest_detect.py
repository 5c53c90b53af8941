"""``--format auto``: every genuine sample and our fixture deliveries are recognised by content."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from detect.config import Settings
from detect.errors import IngestError
from detect.ingest import detect_format, expand_sources, ingest

DATA = Path(__file__).parents[1].parent / "shared" / "data"
FIX = Path(__file__).parent / "fixtures"

GENUINE = [
    ("aicpa_ads_sample", "ads"),
    ("saft_no_example", "saft"),
    ("saft_pt_demo", "saft"),
    ("datev_extf510_sample", "datev"),
    ("datev_extf700_ruby_gem", "datev"),
    ("datev_extf700_samples", "datev"),
    ("sap_bkpf_bseg_us_locale", "sap"),
]


def _delivery(folder: Path) -> list[Path]:
    """The folder's files minus the provenance notes the sample collection adds."""
    return [f for f in expand_sources([folder]) if f.name not in ("SOURCE.txt", "LICENSE")]


@pytest.mark.parametrize(("folder", "expected"), GENUINE)
def test_genuine_samples_are_recognised(folder: str, expected: str) -> None:
    path = DATA / folder
    if not path.exists():
        pytest.skip(f"genuine sample folder {path} not available")
    if importlib.util.find_spec(f"detect.ingest.{expected}") is None:
        pytest.skip(f"format module detect.ingest.{expected} does not exist yet")
    assert detect_format(_delivery(path)) == expected
    for f in _delivery(path):           # each primary file alone, too (renamed = same answer)
        if f.suffix.lower() in (".csv", ".xml") and f.name.startswith(("GL_", "Example", "saft",
                                                                         "EXTF_Buch", "BKPF")):
            assert detect_format([f]) == expected


@pytest.mark.parametrize(("folder", "expected"), [
    ("ads/delivery", "ads"), ("gdpdu/delimited", "gdpdu"), ("gdpdu/fixed", "gdpdu"),
    ("saft", "saft")])
def test_fixture_deliveries_are_recognised(folder: str, expected: str) -> None:
    assert detect_format(expand_sources([FIX / folder])) == expected


def test_content_not_name_decides(tmp_path: Path) -> None:
    ads = tmp_path / "export_2024.txt"
    shutil.copy(FIX / "ads" / "delivery" / "GL_Detail_20240101_20241231.csv", ads)
    saft = tmp_path / "data.bin"
    shutil.copy(FIX / "saft" / "saft_quirks.xml", saft)
    assert detect_format([ads]) == "ads"
    assert detect_format([saft]) == "saft"


def test_unknown_table_is_not_guessed(tmp_path: Path) -> None:
    with pytest.raises(IngestError) as err:
        detect_format([FIX / "mapped" / "infoma_journal.csv"])
    assert "cannot recognise the format of infoma_journal.csv" in str(err.value)
    assert "--format csv" in str(err.value)


def test_dtds_alone_are_not_a_delivery() -> None:
    path = DATA / "gdpdu_dtd"
    if not path.exists():
        pytest.skip(f"{path} not available")
    with pytest.raises(IngestError, match="cannot recognise"):
        detect_format(_delivery(path))


def test_configured_profile_makes_unknown_tables_csv(tmp_path: Path) -> None:
    settings = Settings(mapping=str(Path(__file__).parents[1] / "mappings" /
                                    "example_infoma.toml"))
    result = ingest([FIX / "mapped"], "auto", settings, tmp_path / "w")
    assert result.format == "csv" and result.bookings.collect().height == 4


def test_folder_with_only_empty_files(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    empty = tmp_path / "in" / "GL_Detail.csv"
    empty.write_bytes(b"")
    with pytest.raises(IngestError, match="file is empty") as err:
        ingest([tmp_path / "in"], "auto", Settings(), tmp_path / "w")
    assert str(empty) in str(err.value)


def test_generated_demo_delivery_reads_as_one_ads_delivery(tmp_path: Path) -> None:
    demo = Path(__file__).parents[1] / "sample_data" / "demo"
    if not (demo / "Chart_Of_Accounts.csv").exists():
        pytest.skip("sample_data/demo has not been generated")
    result = ingest([demo], "auto", Settings(), tmp_path / "w")
    assert result.format == "ads"
    assert set(result.master) >= {"accounts", "vendors", "users", "vendor_changes",
                                  "cost_centers"}
    df = result.bookings.collect()
    assert df.height > 1000 and df["ingest_issue"].null_count() == df.height
    vendors = result.master["vendors"]
    assert vendors["bank_account"].null_count() < vendors.height
    assert df["entered_at"].null_count() == 0
    assert result.ignored == []
