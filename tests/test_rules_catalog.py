"""The bundled catalog: metadata requirements, every rule's own cases, CLI and generated docs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from detect.cli import main
from detect.rules import SCENARIOS, catalog_markdown, load_catalog, run_cases
from detect.rules.doc import readme_with_table
from detect.rules.params import query_params
from detect.rules.render import placeholders
from detect.rules.runner import DERIVED_COLUMNS

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
    assert rule.has_language("de") and rule.has_language("en"), \
        "shipped rules need why and falsepositives as {de: ..., en: ...}"
    for lang in ("de", "en"):
        assert len(rule.why[lang]) >= 60, "why must explain the risk in plain language"
        assert rule.falsepositives[lang] and all(len(fp) > 5 for fp in rule.falsepositives[lang])
    assert rule.why["de"] != rule.why["en"], "the German why is a translation, not a copy"
    assert len(rule.falsepositives["de"]) == len(rule.falsepositives["en"])
    assert rule.falsepositives["de"] != rule.falsepositives["en"]
    assert rule.requires
    # both languages use the same placeholders, so neither misses evidence
    assert sorted(placeholders(rule.explain["de"])) == sorted(placeholders(rule.explain["en"])) \
        or {n for n, _ in placeholders(rule.explain["de"])} ^ {
            n for n, _ in placeholders(rule.explain["en"])} <= {"group_de", "group_en", "day_de",
                                                                 "day_en", "kind_de", "kind_en",
                                                                 "finding", "finding_en",
                                                                 "basis", "basis_en"}
    declared = {p.name for p in rule.params} | set(rule.config_params)
    # a setting read through an engine column (manual_entry: manual_sources) counts as used
    via_columns = {setting for name, (_, _, setting) in DERIVED_COLUMNS.items()
                   if re.search(rf"\b{name}\b", rule.query)}
    assert set(query_params(rule.query)) | via_columns == declared, \
        "every parameter is used by the query"
    assert all(p.doc.get("de") and p.doc.get("en") for p in rule.params), \
        "every parameter says what it does, as doc: {de: ..., en: ...}"
    assert any(c.flags for c in rule.cases) and any(not c.flags for c in rule.cases)
    assert re.search(r"\bjournal_id\b", rule.query)


def test_german_texts_look_german() -> None:
    """A cheap guard against English left in the German slot: umlauts/ß and German words."""
    german = re.compile(r"[äöüß]|\b(der|die|das|und|nicht|wird|werden|ein|eine)\b", re.I)
    english = re.compile(r"\b(the|and|which|with|is|are)\b")
    for rule in CATALOG:
        assert german.search(rule.why["de"]) and not english.search(rule.why["de"]), rule.id
        for fp in rule.falsepositives["de"]:
            assert not english.search(fp), (rule.id, fp)


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
    assert "Gesetzliche Feiertage" in out and "Notdienste an Feiertagen" in out
    assert main(["rules", "show", "PAY001"]) == 0
    out = capsys.readouterr().out
    assert "window_days = 365  – so viele Tage zurück nach der ersten Buchung suchen" in out
    assert "Public holidays" not in out and "(nur auf Englisch)" not in out
    assert main(["rules", "show", "TIM002", "--lang", "en"]) == 0
    out = capsys.readouterr().out
    assert "Known false positives:" in out and "  - Emergency work on holidays" in out
    assert "Public holidays" in out and "Gesetzliche Feiertage" not in out
    assert main(["rules", "list"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"PAY001\s+hoch\s+Zeile\s+Doppelte Zahlung oder Rechnung", out)
    assert f"{len(CATALOG)} Regeln" in out
    assert main(["rules", "test", "JRN001", "-v"]) == 0
    out = capsys.readouterr().out
    cases = len(next(r for r in CATALOG if r.id == "JRN001").cases)  # the rule's own, today 3
    assert "ok   JRN001 flags_difference" in out and f"{cases} passed, 0 failed" in out
    assert main(["rules", "show", "NOPE001"]) == 2
    assert "unknown rule 'NOPE001'" in capsys.readouterr().err


def test_committed_docs_match_the_rule_files() -> None:
    committed = (ROOT / "docs" / "rules.md").read_text(encoding="utf-8")
    assert committed == catalog_markdown(CATALOG), "run: python -m detect.rules.doc"
    assert "*Warum:* Eine doppelt gebuchte oder doppelt bezahlte Rechnung" in committed
    assert "- Raten- oder Teilzahlungen, die die Rechnungsnummer wiederverwenden" in committed


def test_committed_readme_table_matches_the_rule_files() -> None:
    """Only once the lead has put the markers in README.md; without them nothing to check."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    wanted = readme_with_table(readme, CATALOG)
    if wanted is None:
        pytest.skip("README.md has no <!-- rules:begin --> / <!-- rules:end --> markers yet")
    assert readme == wanted, "run: python -m detect.rules.doc"
