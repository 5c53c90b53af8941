"""The validation gate on IngestResults built in the test: outputs, findings, state, policies."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from detect import validate
from detect.errors import AlreadyProcessed, DeliveryRejected
from detect.ingest import ControlTotals
from detect.privacy import load_key, pseudonymise_iban
from detect.schema import BOOKING_SCHEMA, MASTER_SCHEMAS
from detect.validation.journals import HIT_SCHEMA
from validate_support import context, ingest_result, journal, line, publish, settings

IBAN = "DE89370400440532013000"


def _run(tmp_path: Path, rows: list[dict], **kw) -> validate.ValidationResult:
    cfg = settings(**kw.pop("validation", {"data_docs": False}))
    return validate.validate(ingest_result(rows, **kw), context(tmp_path / "var", cfg))


def test_outputs_schema_pseudonyms_docs_and_json(tmp_path: Path) -> None:
    rows = journal("1001", 250.0, bank_account="DE89 3704 0044 0532 0130 00") + journal(
        "1002", 99.5) + [line("1003", 1, 10.0, currency="EURO")]
    result = _run(tmp_path, rows, validation={})  # with Data Docs
    clean = pl.read_parquet(result.clean_path)
    assert clean.schema == BOOKING_SCHEMA
    assert clean.height == 4 and result.rows_quarantined == 1
    assert clean["amount"].sum() == Decimal("0.00")
    banks = clean["bank_account"].drop_nulls().unique().to_list()
    assert len(banks) == 1 and banks[0].startswith("DE**3000#") and IBAN not in banks[0]
    quarantine = pl.read_parquet(result.quarantine_path)
    assert quarantine.columns[:4] == ["source_file", "source_line", "expectation", "reason"]
    assert "ingest_issue" in quarantine.columns and "_row" not in quarantine.columns
    assert quarantine.row(0, named=True)["reason"] == "currency not ISO 4217: currency=EURO"
    assert quarantine["source_line"].to_list() == [6]
    run_dir = result.clean_path.parent
    assert result.docs_index == run_dir / "data_docs" / "index.html"
    html = result.docs_index.read_text(encoding="utf-8")
    assert "bookings" in html
    assert list((run_dir / "data_docs" / "validations").rglob("*.html"))
    saved = json.loads((run_dir / "validation.json").read_text(encoding="utf-8"))
    assert saved["outcome"] == "passed" and saved["rows_quarantined"] == 1
    assert saved["data_docs"] == "data_docs/index.html"
    json.dumps(result.summary())  # the manifest embeds it
    assert result.summary()["headline"][0] == (
        "quarantined 1 of 5 rows (currency not ISO 4217: 1) -> quarantine.parquet")
    # the evidence of the single-line journal 1003 is gone with its line: no finding for it
    assert result.journal_findings.height == 0


def test_duplicate_keeps_first_occurrence(tmp_path: Path) -> None:
    rows = journal("7", 10.0) + [line("7", 2, -10.0, description="again")]
    result = _run(tmp_path, rows)
    clean = pl.read_parquet(result.clean_path)
    quarantine = pl.read_parquet(result.quarantine_path)
    assert clean.sort("line_no")["source_line"].to_list() == [2, 3]
    assert quarantine["source_line"].to_list() == [4]
    assert quarantine["expectation"].to_list() == ["duplicate_line"]
    assert result.journal_findings.height == 0  # the kept lines still balance


def test_unbalanced_journal_finding_in_rule_hit_shape(tmp_path: Path) -> None:
    rows = [line("55", 1, 100.0), line("55", 2, -99.98)] + journal("56", 5.0)
    result = _run(tmp_path, rows, validation={"data_docs": False, "journal_gap_max": 0})
    hits = result.journal_findings
    assert hits.schema == HIT_SCHEMA
    hit = hits.row(0, named=True)
    assert (hit["rule_id"], hit["family"], hit["severity"]) == ("VAL-UNBAL", "validation", "high")
    assert (hit["entity"], hit["fiscal_year"], hit["journal_id"], hit["line_no"]) == (
        "Teststadt", 2024, "55", None)
    assert hit["explanation_de"] == ("Beleg 55 ist nicht ausgeglichen: Soll 100,00, "
                                     "Haben 99,98, Differenz 0,02.")
    assert json.loads(hit["evidence"]) == {"debit": "100.00", "credit": "99.98",
                                           "difference": "0.02", "lines": "2",
                                           "currencies": "EUR", "quarantined_lines": "0"}
    stored = pl.read_parquet(result.clean_path.parent / "validation_findings.parquet")
    assert stored.equals(hits)


def test_balance_tolerance(tmp_path: Path) -> None:
    rows = [line("55", 1, 100.0), line("55", 2, -99.98)]
    result = _run(tmp_path, rows, validation={"data_docs": False, "balance_tolerance": 0.05})
    assert result.journal_findings.height == 0


def test_gap_and_backwards_numbering_across_runs(tmp_path: Path) -> None:
    data = tmp_path / "var"
    first = [r for j in ("1001", "1002", "1003", "1005") for r in journal(j, 1.0)]
    ctx = context(data, settings(data_docs=False))
    result = validate.validate(ingest_result(first), ctx)
    gap = result.journal_findings.filter(pl.col("rule_id") == "VAL-GAP").row(0, named=True)
    assert gap["journal_id"] == "1005"
    assert json.loads(gap["evidence"]) == {"missing": "1", "missing_from": "1004",
                                           "missing_to": "1004"}
    publish(ctx)
    # the next delivery continues at 1008: 1006 and 1007 are missing between the runs
    second = [r for j in ("1008", "1009") for r in journal(j, 1.0)]
    result = validate.validate(ingest_result(second), context(data, settings(data_docs=False)))
    gaps = result.journal_findings.filter(pl.col("rule_id") == "VAL-GAP")
    assert gaps["explanation_en"].to_list() == [
        "Gap in journal numbering before journal 1008: 2 number(s) missing (1006 to 1007)."]
    # that run was never published: it does not count as "already processed"
    again = [r for j in ("1002", "1003") for r in journal(j, 1.0)]
    with pytest.raises(DeliveryRejected, match=r"1002\.\.1003 .* below 1005"):
        validate.validate(ingest_result(again), context(data, settings(data_docs=False)))
    ok = validate.validate(ingest_result(again),
                           context(data, settings(data_docs=False, journal_order="off")))
    assert ok.rows_clean == 4


def test_already_processed_counts_only_published_runs(tmp_path: Path) -> None:
    data = tmp_path / "var"
    rows = journal("1", 5.0)
    ctx = context(data, settings(data_docs=False))
    validate.validate(ingest_result(rows, sha="aaa"), ctx)
    # not yet published (e.g. the run failed later): a retry is allowed
    ctx2 = context(data, settings(data_docs=False))
    validate.validate(ingest_result(rows, sha="aaa"), ctx2)
    publish(ctx2)
    with pytest.raises(AlreadyProcessed, match=f"already processed as run {ctx2.run_id}"):
        validate.validate(ingest_result(rows, sha="aaa"), context(data, settings()))
    assert validate.already_processed(data, "Teststadt", ["aaa"]) == ctx2.run_id
    assert validate.already_processed(data, "Teststadt", ["aaa", "bbb"]) is None
    again = validate.validate(ingest_result(rows, sha="aaa"),
                              context(data, settings(data_docs=False, reprocess=True)))
    assert again.rows_clean == 2
    assert any("already processed in run" in w for w in again.warnings)


def _control(journals: dict[str, tuple[str, str, int | None]]) -> ControlTotals:
    frame = pl.DataFrame(
        {"journal_id": list(journals), "debit": [Decimal(v[0]) for v in journals.values()],
         "credit": [Decimal(v[1]) for v in journals.values()],
         "lines": [v[2] for v in journals.values()]},
        schema={"journal_id": pl.String, "debit": pl.Decimal(18, 2),
                "credit": pl.Decimal(18, 2), "lines": pl.Int64})
    return ControlTotals("ctl.csv", frame, {})


def test_control_totals_warn_policy_names_every_journal_to_the_cent(tmp_path: Path) -> None:
    rows = [r for j in range(1, 13) for r in journal(str(j), 10.0)]
    control = _control({str(j): ("10.01" if j > 0 else "10.00", "10.00", 2)
                        for j in range(1, 13)})
    result = _run(tmp_path, rows, control_totals=[control])
    ctrl = result.journal_findings.filter(pl.col("rule_id") == "VAL-CTRL")
    assert ctrl.height == 12
    assert result.review_hits().equals(ctrl)  # handed to scoring with the rule hits
    assert json.loads(ctrl["evidence"][0])["debit_difference"] == "-0.01"
    warning = next(w for w in result.warnings if w.startswith("control totals ctl.csv"))
    assert "12 of 12 journals do not reconcile" in warning
    assert "and 2 more (all in validation.json)" in warning
    saved = json.loads((result.clean_path.parent / "validation.json").read_text("utf-8"))
    assert len(saved["control_totals"][0]["journals"]) == 12
    assert saved["control_totals"][0]["journals"][0] == {
        "journal_id": "1", "debit": "10.00", "credit": "10.00", "lines": 2,
        "debit_control": "10.01", "credit_control": "10.00", "lines_control": 2,
        "problem": "amounts differ", "debit_difference": "-0.01", "credit_difference": "0.00"}


def test_control_totals_stop_policy_and_line_counts(tmp_path: Path) -> None:
    rows = journal("1", 10.0) + journal("2", 20.0)
    control = _control({"1": ("10.00", "10.00", 2), "2": ("20.00", "20.00", 3)})
    with pytest.raises(DeliveryRejected, match="2: 2 lines, control says 3") as info:
        _run(tmp_path, rows, control_totals=[control],
             validation={"data_docs": False, "control_totals": "stop"})
    saved = json.loads(next((tmp_path / "var" / "runs").glob("*/validation.json")).read_text())
    assert saved["outcome"] == "rejected"
    assert "validation.json" in str(info.value)


def test_control_totals_that_reconcile(tmp_path: Path) -> None:
    rows = journal("1", 10.0) + journal("2", 20.0)
    overall = ControlTotals("sum.csv", None, {"line_count": 4, "debit": Decimal("30.00"),
                                               "credit": Decimal("30.00")})
    result = _run(tmp_path, rows, control_totals=[overall, _control(
        {"1": ("10.00", "10.00", 2), "2": ("20.00", "20.00", None)})])
    assert result.warnings == [] and result.journal_findings.height == 0
    assert "control totals sum.csv: overall figures reconcile" in result.headline
    assert "control totals ctl.csv: 2 journals checked, 0 do not reconcile" in result.headline


def test_placeholder_column_is_a_warning_with_a_remedy(tmp_path: Path) -> None:
    rows = [r for j in range(1, 6) for r in journal(str(j), 1.0, posting_date=date(1900, 1, 1),
                                                   document_date=date(2024, 3, j))]
    rows += journal("6", 1.0)
    result = _run(tmp_path, rows)
    assert result.rows_quarantined == 0 and result.unreliable_columns == ["posting_date"]
    (warning,) = result.warnings
    assert warning.startswith("posting_date: 10 of 12 rows (83.3%) hold a placeholder date "
                              "[1900-01-01 (10)]; they are kept, not quarantined")
    assert "document_date looks right in 100.0% of these rows" in warning
    # an implausible document date is still caught: its check does not depend on posting_date
    rows[0]["document_date"] = date(1980, 1, 1)
    result = _run(tmp_path / "b", rows)
    assert result.quarantine_reasons == {"document date implausible": 1}


def test_master_data_ibans_pseudonymised_and_checked(tmp_path: Path) -> None:
    vendors = pl.DataFrame({"vendor_id": ["K1", "K1"], "vendor_name": ["A", "A"],
                            "bank_account": [IBAN, None]}).cast(
        {c: t for c, t in MASTER_SCHEMAS["vendors"].items() if c in ("vendor_id", "vendor_name",
                                                                     "bank_account")})
    changes = pl.DataFrame({"vendor_id": ["K1"], "changed_at": [None], "field": ["bank_account"],
                            "old_value": ["DE02120300000000202051"], "new_value": [IBAN],
                            "changed_by": ["MEIER"]},
                           schema=dict(MASTER_SCHEMAS["vendor_changes"]))
    accounts = pl.DataFrame({"gl_account": ["5250000", "1810000"],
                             "account_type": ["expense", "bank"]})
    master = {"vendors": vendors, "vendor_changes": changes, "accounts": accounts}
    data = tmp_path / "var"
    ctx = context(data, settings(data_docs=False))
    (ctx.run_dir / "master").mkdir()
    vendors.write_parquet(ctx.run_dir / "master" / "vendors.parquet")
    rows = journal("1", 5.0) + [line("2", 1, 1.0, gl_account="4711")]
    result = validate.validate(ingest_result(rows, master=master), ctx)
    expected = pseudonymise_iban(pl.DataFrame({"b": [IBAN]}), "b", load_key(data))["b"][0]
    assert master["vendors"]["bank_account"].to_list() == [expected, None]
    on_disk = pl.read_parquet(ctx.run_dir / "master" / "vendors.parquet")
    assert on_disk["bank_account"].to_list() == [expected, None]
    assert master["vendor_changes"]["new_value"].to_list() == [expected]
    assert result.quarantine_reasons == {"account not in chart of accounts": 1}
    assert "master data vendors: vendor_id listed twice in 2 of 2 rows" in " ".join(
        result.warnings)


def test_large_delivery_is_sampled_for_gx_but_checked_in_full(tmp_path: Path) -> None:
    rows = [r for j in range(1, 301) for r in journal(str(10_000 + j), float(j))]
    rows[10]["currency"] = "EURO"
    rows[401]["currency"] = "EURO"
    result = _run(tmp_path, rows, validation={"data_docs": False, "gx_rows": 200,
                                              "batch_rows": 80, "journal_gap_max": 0})
    assert result.quarantine_reasons == {"currency not ISO 4217": 2}
    currency = next(c for c in result.checks if c["key"] == "currency_not_iso4217")
    assert currency["failing_rows"] == 2
    assert 0 < currency["gx"]["element_count"] < 600  # GX saw whole journals of a sample
    assert currency["agrees_with_gx"]  # the masks' count on GX's sample was compared
    assert all(c["agrees_with_gx"] for c in result.checks if "agrees_with_gx" in c)


def test_truncation_detected_without_help_from_the_ingest(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text("Beleg;Konto;Betrag\n1;5250000;10,00\n1;1810000;-10,00\n2;52", "utf-8")
    rows = [dict(r, source_file=str(path)) for r in journal("1", 10.0)]
    cut = rows + [line("2", 1, None, gl_account="52", source_file=str(path), source_line=4)]
    with pytest.raises(DeliveryRejected, match="last line has no line end and is incomplete "
                                               r"\(no amount\)") as info:
        _run(tmp_path, cut)
    assert info.value.line == 4 and info.value.file == str(path)
    # no final line end, but the last line is complete: not truncated
    path.write_text("Beleg;Konto;Betrag\n1;5250000;10,00\n1;1810000;-10,00", "utf-8")
    assert _run(tmp_path / "b", rows).rows_clean == 2


def test_thresholds_per_entity_from_belegwacht_toml(tmp_path: Path) -> None:
    from detect.config import load_settings

    toml = tmp_path / "belegwacht.toml"
    toml.write_text("[validation]\nplaceholder_share_warn = 0.5\n\n"
                    "[entities.Nebenstadt.validation]\nplaceholder_share_warn = 0.9\n"
                    'control_totals = "stop"\n', "utf-8")
    rows = [r for j in range(1, 4) for r in journal(str(j), 1.0, posting_date=date(1900, 1, 1))]
    rows += journal("4", 1.0) + journal("5", 1.0)  # 60 % placeholders
    for entity, quarantined in (("Teststadt", 0), ("Nebenstadt", 6)):
        cfg = load_settings(toml, entity=entity)
        cfg.validation.data_docs = False
        result = validate.validate(ingest_result([dict(r, entity=entity) for r in rows]),
                                   context(tmp_path / entity, cfg))
        assert result.rows_quarantined == quarantined
    assert load_settings(toml, entity="Nebenstadt").validation.control_totals == "stop"


def _fake_gx(tmp_path: Path, monkeypatch, body: str) -> None:
    """A ``great_expectations`` package whose import runs ``body``, first on the GX worker's
    path (the worker is a child process: it inherits PYTHONPATH)."""
    import os

    fake = tmp_path / "fake_gx"
    (fake / "great_expectations").mkdir(parents=True)
    (fake / "great_expectations" / "__init__.py").write_text(body, "utf-8")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(fake), *filter(None, [os.environ.get("PYTHONPATH")])]))


def test_a_failing_gx_does_not_stop_the_gate(tmp_path: Path, monkeypatch) -> None:
    _fake_gx(tmp_path, monkeypatch, 'raise ImportError("great_expectations is broken")\n')
    rows = journal("1", 5.0) + [line("2", 1, 1.0, currency="EURO")]
    result = _run(tmp_path, rows, validation={})
    assert result.quarantine_reasons == {"currency not ISO 4217": 1}
    assert result.docs_index is None
    assert any(w.startswith("Great Expectations could not validate this delivery (ImportError")
               for w in result.warnings)
    saved = json.loads((result.clean_path.parent / "validation.json").read_text("utf-8"))
    assert saved["great_expectations"] == "failed"


def test_a_crashing_gx_worker_is_reported_like_a_failing_gx(tmp_path: Path, monkeypatch) -> None:
    """The worker dies without writing a result (here: in GX's import): same warning and
    ``"failed"`` status as any GX failure, the gate's results stand, nothing is left behind."""
    _fake_gx(tmp_path, monkeypatch, "import os\nos._exit(7)\n")
    rows = journal("1", 5.0) + [line("2", 1, 1.0, currency="EURO")]
    result = _run(tmp_path, rows, validation={})
    job_dir = result._pending.job.job_dir
    assert result.rows_quarantined == 1 and result.docs_index is None
    assert any(w.startswith("Great Expectations could not validate this delivery "
                            "(GxWorkerError: the GX worker process exited with code 7")
               for w in result.warnings)
    saved = json.loads((result.clean_path.parent / "validation.json").read_text("utf-8"))
    assert saved["great_expectations"] == "failed" and saved["data_docs"] is None
    assert not job_dir.exists()


def test_a_gx_worker_that_cannot_start_is_reported_like_a_failing_gx(tmp_path: Path,
                                                                      monkeypatch) -> None:
    import sys

    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    result = _run(tmp_path, journal("1", 5.0) + [line("2", 1, 1.0, currency="EURO")],
                  validation={})
    assert result.rows_quarantined == 1 and result.docs_index is None
    assert any(w.startswith("Great Expectations could not validate this delivery (GxWorkerError: "
                            "the GX worker process could not be started (FileNotFoundError")
               for w in result.warnings)
    saved = json.loads((result.clean_path.parent / "validation.json").read_text("utf-8"))
    assert saved["great_expectations"] == "failed"


def test_job_folders_of_dead_processes_are_removed(tmp_path: Path, monkeypatch) -> None:
    """A run killed after its worker finished leaves its job folder: the next job removes it
    (its process is gone), but never a folder of a live process."""
    import subprocess
    import sys
    import tempfile

    from detect.validation import gxrun

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    left = tmp_path / f"{gxrun.JOB_PREFIX}run1-p{dead}-abc12345"
    live = tmp_path / f"{gxrun.JOB_PREFIX}run2-p1-abc12345"  # pid 1 always exists
    unnamed = tmp_path / f"{gxrun.JOB_PREFIX}run3-xyz"  # no pid: kept until a day old
    for folder in (left, live, unnamed):
        folder.mkdir()
    new = gxrun.GxJob.new_dir("run4")
    assert new.parent == tmp_path and new.name.startswith(f"{gxrun.JOB_PREFIX}run4-p")
    assert not left.exists() and live.exists() and unnamed.exists()


_ORPHAN = """
import os, signal, sys, time
from pathlib import Path
import threading
from detect.validation.gxrun import GxJob

job_dir = Path(sys.argv[1])
(job_dir / "job.json").write_text("{}")
box = []
if sys.argv[2] == "thread":  # started from a thread that has ended: no PDEATHSIG, getppid
    t = threading.Thread(target=lambda: box.append(GxJob(job_dir)))
    t.start(); t.join()
else:
    box.append(GxJob(job_dir))
print(box[0].pid, flush=True)
time.sleep(1.5)  # the worker is inside the (fake, endless) import of GX now
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("started_from", ["main", "thread"])
def test_the_gx_worker_dies_with_a_killed_parent(tmp_path: Path, monkeypatch,
                                                 started_from: str) -> None:
    import os
    import subprocess
    import sys
    import time

    _fake_gx(tmp_path, monkeypatch, "import time\ntime.sleep(300)\n")
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    done = subprocess.run([sys.executable, "-c", _ORPHAN, str(job_dir), started_from],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == -9, done.stderr
    pid = int(done.stdout.split()[0])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        stat = Path(f"/proc/{pid}/stat")
        if stat.exists() and stat.read_text().split(") ")[1].startswith("Z"):
            break  # exited; a zombie until its new parent reaps it
        time.sleep(0.1)
    else:
        os.kill(pid, 9)
        pytest.fail("the GX worker outlived its killed parent")
    deadline = time.monotonic() + 5
    while job_dir.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not job_dir.exists()  # nobody would collect it: the worker removed it


def test_own_suite_with_a_typo_is_a_config_error(tmp_path: Path) -> None:
    from detect.errors import ConfigError
    from detect.validation.suites import BUNDLED_DIR

    own = tmp_path / "suites"
    own.mkdir()
    raw = json.loads((BUNDLED_DIR / "bookings.json").read_text("utf-8"))
    raw["expectations"].append({"type": "expect_column_values_to_not_be_null",
                                "kwargs": {"column": "gl_acount"},
                                "meta": {"key": "typo", "reason": "typo"}})
    (own / "bookings.json").write_text(json.dumps(raw), "utf-8")
    with pytest.raises(ConfigError, match="expectation typo names unknown column.s. gl_acount"):
        _run(tmp_path, journal("1", 1.0),
             validation={"data_docs": False, "expectations_dir": str(own)})


def test_quarantining_much_of_a_delivery_points_at_the_mapping(tmp_path: Path) -> None:
    rows = [r for j in range(1, 4) for r in journal(str(j), 1.0, posting_date=date(2023, 5, 1))]
    rows += [r for j in range(4, 11) for r in journal(str(j), 1.0)]
    result = _run(tmp_path, rows)
    assert result.rows_quarantined == 6
    assert ("30% of the rows were quarantined, 6 of them for 'posting date outside fiscal year': "
            "that many usually means a wrong mapping") in " ".join(result.warnings)


def test_gx_runs_in_the_background_and_is_merged_before_publishing(tmp_path: Path) -> None:
    """validate() returns before Great Expectations is done; reading the result (the pipeline:
    summary() when it publishes) waits for it and completes validation.json and the docs."""
    import threading

    rows = journal("1", 5.0) + [line("2", 1, 1.0, currency="EURO")]
    threads = threading.active_count()
    result = _run(tmp_path, rows, validation={})  # with Data Docs
    # GX runs in a worker process: no thread of this process imports anything meanwhile
    assert threading.active_count() == threads
    job_dir = result._pending.job.job_dir
    run_dir = result.clean_path.parent
    early = json.loads((run_dir / "validation.json").read_text(encoding="utf-8"))
    assert early["great_expectations"] == "running" and early["data_docs"] is None
    assert all(c["gx"] is None for c in early["checks"])
    assert early["rows_quarantined"] == 1  # the gate's own results are complete already
    summary = result.summary()
    saved = json.loads((run_dir / "validation.json").read_text(encoding="utf-8"))
    assert saved["great_expectations"] == "done" and saved["data_docs"] == "data_docs/index.html"
    assert (run_dir / "data_docs" / "index.html").exists()
    currency = next(c for c in saved["checks"] if c["key"] == "currency_not_iso4217")
    assert currency["gx"]["unexpected_count"] == 1 and currency["agrees_with_gx"]
    assert summary["headline"][-1] == "data docs: data_docs/index.html"
    assert {"gx_setup", "gx_bookings", "gx_cpu", "gx_wait"} <= set(saved["timings"])
    assert saved["timings"]["gx_cpu"] > 0.5  # the worker's own CPU: interpreter, GX import
    assert result._pending is None and not job_dir.exists()  # collected, job folder removed

