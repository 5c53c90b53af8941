"""Rule texts in two languages: the {de, en} and plain-English forms of why/falsepositives, the
language switch of `rules show`, and the README catalog block of `python -m detect.rules.doc`."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_rules import GOOD_RULE

from detect.rules import RuleError, catalog_table_markdown, describe_rule, load_catalog
from detect.rules.doc import BEGIN, END, main as doc_main, readme_with_table
from detect.rules.loader import load_rule

ROOT = Path(__file__).resolve().parents[1]

# the engine tests' minimal rule, with its why and false positives left to each test
RULE = (GOOD_RULE.replace("why: Big amounts matter.", "WHY")
        .replace("falsepositives: [none]", "FALSEPOSITIVES"))
assert "WHY" in RULE and "FALSEPOSITIVES" in RULE

BILINGUAL_WHY = """why:
  de: >
    Große Beträge verdienen
    einen Blick.
  en: Big amounts matter."""
BILINGUAL_FP = """falsepositives:
  de: [Jahresabschlussbuchungen, Zuschüsse]
  en: [Year-end entries, Grants]"""


def write(tmp_path: Path, why: str, fps: str) -> Path:
    path = tmp_path / "amounts" / "TST001.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(RULE.replace("WHY", why).replace("FALSEPOSITIVES", fps), encoding="utf-8")
    return path


def test_bilingual_texts_load_per_language(tmp_path: Path) -> None:
    rule = load_rule(write(tmp_path, BILINGUAL_WHY, BILINGUAL_FP))
    assert rule.why == {"de": "Große Beträge verdienen einen Blick.", "en": "Big amounts matter."}
    assert rule.why_text("de") == "Große Beträge verdienen einen Blick."
    assert rule.why_text("en") == "Big amounts matter."
    assert rule.falsepositives_list("de") == ["Jahresabschlussbuchungen", "Zuschüsse"]
    assert rule.falsepositives_list("en") == ["Year-end entries", "Grants"]
    assert rule.has_language("en") and not rule.has_language("de")   # the param doc is English
    text = describe_rule(rule, "de")
    assert "Warum:\n  Große Beträge verdienen einen Blick." in text
    assert "Bekannte Fehlalarme:\n  - Jahresabschlussbuchungen\n  - Zuschüsse" in text
    assert "nur auf Englisch" not in text


def test_plain_english_form_is_accepted_and_shown_as_english_only(tmp_path: Path) -> None:
    rule = load_rule(write(tmp_path, "why: Big amounts\n  matter.",
                           "falsepositives: [Year-end entries]"))
    assert rule.why == {"en": "Big amounts matter."}
    assert rule.falsepositives == {"en": ["Year-end entries"]}
    assert rule.why_text("de") == "Big amounts matter."          # English fallback
    assert rule.falsepositives_list("de") == ["Year-end entries"]
    assert not rule.has_language("de") and rule.has_language("en")
    german = describe_rule(rule, "de")
    assert "Warum (nur auf Englisch):\n  Big amounts matter." in german
    assert "Bekannte Fehlalarme (nur auf Englisch):\n  - Year-end entries" in german
    english = describe_rule(rule, "en")
    assert "Why:\n  Big amounts matter." in english and "Englisch" not in english


def test_parameter_docs_in_both_languages_or_plain_english(tmp_path: Path) -> None:
    path = write(tmp_path, BILINGUAL_WHY, BILINGUAL_FP)
    plain = load_rule(path)
    assert plain.params[0].doc == {"en": "flag above this"}
    assert plain.params[0].doc_text("de") == "flag above this"           # English fallback
    assert not plain.has_language("de")                                  # the doc is English only
    path.write_text(path.read_text(encoding="utf-8").replace(
        'doc: "flag above this"', 'doc: {de: "markiert darüber", en: "flag above this"}'),
        encoding="utf-8")
    rule = load_rule(path)
    assert rule.params[0].doc_text("de") == "markiert darüber" and rule.has_language("de")
    assert "  limit = 1000  – markiert darüber" in describe_rule(rule, "de")
    assert "  limit = 1000  – flag above this" in describe_rule(rule, "en")
    path.write_text(path.read_text(encoding="utf-8").replace('de: "markiert darüber", ', ""),
                    encoding="utf-8")
    with pytest.raises(RuleError, match="param 'limit' doc needs non-empty texts for both"):
        load_rule(path)


@pytest.mark.parametrize(("why", "fps", "message"), [
    ("why:\n  en: Big amounts matter.", BILINGUAL_FP,
     "why needs non-empty texts for both 'de' and 'en'"),
    ("why: {de: '', en: Big amounts matter.}", BILINGUAL_FP,
     "why needs non-empty texts for both 'de' and 'en'"),
    ("why: {de: Groß, en: Big, fr: Grand}", BILINGUAL_FP,
     "why has unknown language(s) fr (use de and en)"),
    ("why: [Big amounts]", BILINGUAL_FP, "why must be a text or {de: ..., en: ...}"),
    (BILINGUAL_WHY, "falsepositives:\n  en: [Year-end entries]",
     "falsepositives.de must not be empty"),
    (BILINGUAL_WHY, "falsepositives: {de: [Zuschüsse], en: [Year-end entries, Grants]}",
     "falsepositives.de has 1 item(s), falsepositives.en 2: each false positive needs both"),
    (BILINGUAL_WHY, "falsepositives: {de: Zuschüsse, en: [Grants]}",
     "falsepositives.de must be a list of strings"),
    (BILINGUAL_WHY, "falsepositives: []", "falsepositives must not be empty"),
])
def test_incomplete_translations_are_refused_naming_the_file(tmp_path: Path, why: str, fps: str,
                                                             message: str) -> None:
    path = write(tmp_path, why, fps)
    with pytest.raises(RuleError) as err:
        load_rule(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


# --- README catalog block -------------------------------------------------------------------------

CATALOG = load_catalog()


def test_catalog_table_links_each_rule_to_its_section() -> None:
    table = catalog_table_markdown(CATALOG, link="docs/rules.md")
    lines = table.splitlines()
    assert lines[0] == "| ID | title | severity | level | needs |"
    assert len(lines) == 2 + len(CATALOG)
    assert ("| [PAY001](docs/rules.md#pay001-duplicate-payment) | Duplicate payment or invoice "
            "(Doppelte Zahlung oder Rechnung) | high | line | vendor_id, reference, amount |"
            ) in lines
    docs = (ROOT / "docs" / "rules.md").read_text(encoding="utf-8")
    assert catalog_table_markdown(CATALOG) in docs and "### PAY001 duplicate-payment" in docs


def readme_copy(tmp_path: Path) -> Path:
    """A temp copy of the real README with a stale rules block (appended if it has no markers)."""
    real = ROOT / "README.md"
    text = real.read_text(encoding="utf-8") if real.exists() else "# Belegwacht\n"
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + f"{BEGIN}\nold table\n" + text[text.index(END):]
    else:
        text += f"\n## Rules\n\n{BEGIN}\nold table\n{END}\n\nAfter the table.\n"
    path = tmp_path / "README.md"
    path.write_text(text, encoding="utf-8")
    return path


def test_doc_fills_the_readme_block_and_check_sees_both_files(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]
                                                              ) -> None:
    readme, doc = readme_copy(tmp_path), tmp_path / "rules.md"
    before = readme.read_text(encoding="utf-8")
    assert doc_main(["--check"], doc_path=doc, readme_path=readme) == 1
    err = capsys.readouterr().err
    assert f"{doc} is out of date" in err and f"{readme} is out of date" in err
    assert readme.read_text(encoding="utf-8") == before      # --check writes nothing
    assert doc_main([], doc_path=doc, readme_path=readme) == 0
    after = readme.read_text(encoding="utf-8")
    table = catalog_table_markdown(CATALOG, link="docs/rules.md")
    assert after == before.replace(f"{BEGIN}\nold table\n{END}", f"{BEGIN}\n{table}{END}")
    assert after.split(BEGIN)[0] == before.split(BEGIN)[0]    # the rest is untouched
    assert after.split(END)[1] == before.split(END)[1]
    assert "old table" not in after and after.count(table) == 1
    assert doc.read_text(encoding="utf-8").startswith("# Rules\n")
    assert doc_main(["--check"], doc_path=doc, readme_path=readme) == 0
    assert doc_main([], doc_path=doc, readme_path=readme) == 0   # idempotent
    assert readme.read_text(encoding="utf-8") == after


def test_doc_only_touches_the_readme_between_markers(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    doc = tmp_path / "rules.md"
    plain = tmp_path / "README.md"
    plain.write_text("# Belegwacht\n\nNo rules block here.\n", encoding="utf-8")
    assert doc_main([], doc_path=doc, readme_path=plain) == 0
    assert plain.read_text(encoding="utf-8") == "# Belegwacht\n\nNo rules block here.\n"
    assert readme_with_table("no markers", CATALOG) is None
    capsys.readouterr()
    plain.write_text(f"# B\n{END}\n{BEGIN}\n", encoding="utf-8")
    assert doc_main([], doc_path=doc, readme_path=plain) == 2
    assert "exactly one <!-- rules:begin --> followed by one <!-- rules:end -->" in \
        capsys.readouterr().err
    assert plain.read_text(encoding="utf-8") == f"# B\n{END}\n{BEGIN}\n"
