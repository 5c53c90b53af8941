"""Findings export: contract columns, typed XLSX, formula-injection guard, safe round trips."""

from __future__ import annotations

import csv
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest

from detect.cli import main
from detect.errors import UserError
from detect.export import CONTRACT_COLUMNS, export_findings
from detect.pipeline import switch_current
from detect.store import ReviewStore, item_id

HOSTILE = [
    '=HYPERLINK("http://evil.example","klick")',
    "+1+1",
    "-2+3",
    "@SUM(A1:A9)",
    "\tTabulator",
    "\rWagenrücklauf",
    'Zitat "innen" und \'außen\'',
    "Trenner , ; | \\ ende",
    "Zeile 1\nZeile 2\r\nZeile 3",
    "Привет 你好 مرحبا Ωμέγα",
    "'schon gequotet",
    "normal",
]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    n = len(HOSTILE)
    findings = pl.DataFrame({
        "item_id": [item_id("Musterstadt", 2024, f"B{i}") for i in range(n)],
        "entity": ["Musterstadt"] * n, "fiscal_year": [2024] * n,
        "journal_id": [f"B{i}" for i in range(n)], "line_no": [1] * n,
        "posting_date": [date(2024, 3, i + 1) for i in range(n)],
        "gl_account": ["-4711"] + ["4711"] * (n - 1),
        "amount": [Decimal("-1234.56")] + [Decimal(f"{i}.10") for i in range(1, n)],
        "risk_score": [99.5 - i for i in range(n)], "rank": list(range(1, n + 1)),
        "rule_ids": ["PAY001"] * n, "model_score": [0.5] * n,
        "reasons": HOSTILE, "reasons_en": [f"reason {i}" for i in range(n)],
        "description": HOSTILE[::-1], "vendor_id": HOSTILE,
    }, schema_overrides={"amount": pl.Decimal(18, 2), "fiscal_year": pl.Int32,
                         "line_no": pl.Int32})
    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    findings.write_parquet(run_dir / "findings.parquet")
    store = ReviewStore.for_data_dir(tmp_path)
    store.publish_run(SimpleNamespace(entity="Musterstadt", run_id="r1", run_dir=run_dir,
                                      rescore_history=False), findings)
    store.record_decision(item_id("Musterstadt", 2024, "B0"), "confirmed", "=1+1 bestätigt",
                          "anna")
    switch_current(tmp_path, "r1")
    return tmp_path


def guarded(text: str) -> str:
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def test_parquet_keeps_raw_values_and_contract_columns(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "f.parquet"
    assert export_findings(data_dir, None, out) == len(HOSTILE)
    frame = pl.read_parquet(out)
    assert frame.columns[:len(CONTRACT_COLUMNS)] == CONTRACT_COLUMNS
    assert frame["reasons"].to_list() == HOSTILE
    assert frame["status"].to_list() == ["confirmed"] + ["open"] * (len(HOSTILE) - 1)
    assert frame["amount"].dtype == pl.Decimal(18, 2)
    assert frame["amount"][0] == Decimal("-1234.56")
    assert frame["rank"].to_list() == list(range(1, len(HOSTILE) + 1))
    english = export_findings(data_dir, "r1", tmp_path / "en.parquet", lang="en")
    assert english == len(HOSTILE)
    assert pl.read_parquet(tmp_path / "en.parquet")["reasons"][3] == "reason 3"


def test_csv_round_trip_is_safe(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "f.csv"
    export_findings(data_dir, None, out)
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    with open(out, encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["reasons"] for r in rows] == [guarded(t) for t in HOSTILE]
    assert [r["vendor_id"] for r in rows] == [guarded(t) for t in HOSTILE]
    assert rows[0]["gl_account"] == "'-4711" and rows[0]["last_comment"] == "'=1+1 bestätigt"
    # numbers stay numbers: unquoted in the file, negative sign untouched
    assert rows[0]["amount"] == "-1234.56" and rows[0]["risk_score"] == "99.5"
    assert b'\n"Musterstadt",2024,"B0",1,"2024-03-01","\'-4711",-1234.56,99.5,1,' in raw
    assert rows[0]["posting_date"] == "2024-03-01"
    # no text field in the file starts a cell with a formula character
    for row in rows:
        for key, value in row.items():
            if key not in ("amount", "journal_amount", "risk_score", "model_score"):
                assert value[:1] not in ("=", "+", "-", "@", "\t", "\r"), (key, value)
    # polars reads the same back
    back = pl.read_csv(out, infer_schema=False)
    assert back["reasons"].to_list() == [guarded(t) for t in HOSTILE]


def test_xlsx_is_typed_filtered_frozen_and_safe(data_dir: Path, tmp_path: Path) -> None:
    from openpyxl import load_workbook

    out = tmp_path / "f.xlsx"
    assert export_findings(data_dir, None, out) == len(HOSTILE)
    wb = load_workbook(out)
    ws = wb["findings"]
    assert ws.freeze_panes == "A2"
    assert ws.auto_filter.ref == f"A1:{ws.cell(1, ws.max_column).column_letter}{len(HOSTILE) + 1}"
    header = [c.value for c in ws[1]]
    assert header[:len(CONTRACT_COLUMNS)] == CONTRACT_COLUMNS
    col = {name: i + 1 for i, name in enumerate(header)}
    amount = ws.cell(2, col["amount"])
    assert amount.data_type == "n" and amount.value == -1234.56
    assert amount.number_format == "#,##0.00"
    posted = ws.cell(2, col["posting_date"])
    assert posted.is_date and posted.value == datetime(2024, 3, 1)
    assert ws.cell(2, col["risk_score"]).value == 99.5
    assert ws.cell(2, col["rank"]).value == 1
    reasons = [ws.cell(r, col["reasons"]).value for r in range(2, len(HOSTILE) + 2)]
    expected = [guarded(t) for t in HOSTILE]
    # xlsx stores CR as the OOXML escape _x000D_, which Excel and calamine decode; openpyxl not
    assert [r.replace("_x000D_", "\r") for r in reasons] == expected
    back = pl.read_excel(out, sheet_name="findings")
    assert back["reasons"].to_list() == expected and back["vendor_id"].to_list() == expected
    assert back["amount"].dtype == pl.Float64 and back["amount"][0] == -1234.56
    assert back["posting_date"].dtype == pl.Date
    assert ws.cell(2, col["gl_account"]).value == "'-4711"
    for row in ws.iter_rows(min_row=2):
        for cell in row:
            assert cell.data_type != "f", cell.coordinate  # never a formula
    assert wb["about"]["B1"].value == "r1"


def test_export_errors_are_clear(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown export format '.txt'"):
        export_findings(data_dir, None, tmp_path / "f.txt")
    with pytest.raises(UserError, match="no published run 'nope'"):
        export_findings(data_dir, "nope", tmp_path / "f.csv")
    with pytest.raises(UserError, match="no published run yet"):
        export_findings(tmp_path / "empty", None, tmp_path / "f.csv")


def test_cli_export_and_access_log(data_dir: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.xlsx"
    assert main(["export", "findings", "--data-dir", str(data_dir), "-o", str(out)]) == 0
    assert f"wrote {len(HOSTILE)} findings" in capsys.readouterr().out
    log = ReviewStore.for_data_dir(data_dir).access_log()
    assert log[0]["action"] == "export_findings" and "cli.xlsx" in log[0]["detail"]


def test_pseudonymised_export_hides_employee_names_everywhere(demo_data_dir: Path,
                                                              tmp_path: Path) -> None:
    clear_out, masked_out = tmp_path / "clear.parquet", tmp_path / "masked.parquet"
    export_findings(demo_data_dir, None, clear_out)
    export_findings(demo_data_dir, None, masked_out, pseudonymise=True)
    clear, masked = pl.read_parquet(clear_out), pl.read_parquet(masked_out)
    assert clear.height == masked.height
    names = set(clear["entered_by"].drop_nulls())
    assert names and not names & set(masked["entered_by"].drop_nulls())
    assert masked["entered_by"].drop_nulls().str.starts_with("P-").all()
    # the same person gets the same pseudonym in every row, and names vanish from the texts
    pairs = pl.DataFrame({"clear": clear["entered_by"], "masked": masked["entered_by"]}).unique()
    assert pairs["clear"].n_unique() == pairs.height
    in_texts = [n for n in names if clear["reasons"].str.contains(n, literal=True).any()]
    assert in_texts, "some reasons name the entering user (e.g. USR006)"
    for name in in_texts:
        assert not masked["reasons"].str.contains(name, literal=True).any(), name
    assert masked["amount"].to_list() == clear["amount"].to_list()
