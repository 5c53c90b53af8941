"""The bundled catalog: metadata requirements, every rule's own cases, CLI and generated docs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from detect.cli import main
from detect.rules import SCENARIOS, catalog_markdown, load_catalog, run_cases
from detect.rules.params import query_params
from detect.rules.render import placeholders

ROOT = Path(__file__).resolve().parents[1]
CATALOG = load_catalog()


def test_catalog_has_at_least_30_rules_with_unique_ids_and_names() -> None:
    assert len(CATALOG) >= 30
    assert len({r.id for r in CATALOG}) == len(CATALOG)
    assert len({r.name for r in CATALOG}) == len(CATALOG)
    assert {r.family for r in CATALOG} >= {"integrity", "timing", "users", "amounts",
                                           "procurement", "payments", "accounts", "text",
                                           "benford"}


@pytest.mark.parametrize("rule", CATALOG, ids=lambda r: r.id)
def test_rule_metadata_is_complete(rule) -> None:
    assert rule.path == ROOT / "rules" / rule.family / f"{rule.id}.yaml"
    assert rule.title["de"] and rule.title["en"] and rule.title["de"] != rule.title["en"]
    assert len(rule.why) >= 60, "why must explain the risk in plain language"
    assert rule.falsepositives and all(len(fp) > 5 for fp in rule.falsepositives)
    assert rule.requires
    # both languages use the same placeholders, so neither misses evidence
    assert sorted(placeholders(rule.explain["de"])) == sorted(placeholders(rule.explain["en"])) \
        or {n for n, _ in placeholders(rule.explain["de"])} ^ {
            n for n, _ in placeholders(rule.explain["en"])} <= {"group_de", "group_en", "day_de",
                                                                 "day_en", "kind_de", "kind_en",
                                                                 "finding", "finding_en",
                                                                 "basis", "basis_en"}
    declared = {p.name for p in rule.params} | set(rule.config_params)
    assert set(query_params(rule.query)) == declared, "every parameter is used by the query"
    assert all(p.doc for p in rule.params), "every parameter says what it does"
    assert any(c.flags for c in rule.cases) and any(not c.flags for c in rule.cases)
    assert re.search(r"\bjournal_id\b", rule.query)


def test_every_sample_scenario_has_a_rule_meant_for_it() -> None:
    covered = {s for r in CATALOG for s in r.scenarios}
    assert covered == set(SCENARIOS)


@pytest.mark.slow
def test_every_rule_passes_its_own_cases() -> None:
    results = run_cases(CATALOG)
    failed = [f"{r.rule_id} {r.case}: {r.message}" for r in results if not r.passed]
    assert not failed, "\n".join(failed)
    assert len(results) >= 2 * len(CATALOG)


def test_cli_list_show_and_test(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "list", "--lang", "en"]) == 0
    out = capsys.readouterr().out
    assert f"{len(CATALOG)} rules" in out
    assert re.search(r"PAY001\s+high\s+line\s+Duplicate payment or invoice", out)
    assert main(["rules", "show", "TIM002"]) == 0
    out = capsys.readouterr().out
    assert "TIM002 holiday-posting: Manuelle Buchung an einem Feiertag" in out
    assert "Bekannte Fehlalarme:" in out and "manual_sources = [manual," in out
    assert main(["rules", "test", "JRN001", "-v"]) == 0
    out = capsys.readouterr().out
    assert "ok   JRN001 flags_difference" in out and "2 passed, 0 failed" in out
    assert main(["rules", "show", "NOPE001"]) == 2
    assert "unknown rule 'NOPE001'" in capsys.readouterr().err


def test_committed_docs_match_the_rule_files() -> None:
    committed = (ROOT / "docs" / "rules.md").read_text(encoding="utf-8")
    assert committed == catalog_markdown(CATALOG), "run: python -m detect.rules.doc"
