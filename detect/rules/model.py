"""What a rule is, in memory: the parsed and validated content of one ``rules/<family>/<ID>.yaml``.

Rules are data, not code: the dataclasses here only carry what the file says, so that the
loader can validate it once and the runner, the case runner and the docs all read one shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SEVERITIES: tuple[str, ...] = ("low", "medium", "high", "critical")
LEVELS: tuple[str, ...] = ("line", "journal")
MASTER_NAMES: tuple[str, ...] = ("accounts", "vendors", "vendor_changes", "users", "cost_centers")

SCENARIOS: tuple[str, ...] = (
    "duplicate_payment", "near_duplicate_payment", "split_invoice", "weekend_posting",
    "night_posting", "holiday_posting", "self_approval", "above_approval_limit",
    "just_below_approval_limit", "just_below_procurement_threshold", "rare_account_pair",
    "round_amount_new_vendor", "new_vendor_payment", "one_off_bank_account", "vendor_bank_change",
    "backdated", "forward_posting", "closed_period_posting", "amount_outlier",
    "outside_usual_accounts", "service_user_manual", "suspicious_description", "manual_cash",
    "repeated_same_amount", "reversal_after_period_end", "unbalanced_journal", "rare_user",
    "ends_in_nines",
)
"""Scenario names of the labelled sample ledger (docs/CONTRACTS.md)."""

KEY_COLUMNS: tuple[str, ...] = ("entity", "fiscal_year", "journal_id", "line_no")

LANGUAGES: tuple[str, ...] = ("de", "en")
"""Languages of the rule texts; English is the fallback of a third-party rule in English only."""


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    doc: dict[str, str] = field(default_factory=dict)
    """What the parameter does, per language ("de", "en"); only "en" for a plain-English doc."""

    def doc_text(self, lang: str = "de") -> str:
        """The doc in ``lang``, or the English text when not translated ("" when undocumented)."""
        return self.doc.get(lang) or self.doc.get("en", "")


@dataclass(frozen=True)
class Case:
    """One of the rule's own test cases: a few booking rows and the hits expected from them."""

    name: str
    rows: list[dict[str, Any]]
    expect: list[tuple[str, int | None]] | None
    """Expected (journal_id, line_no) keys; None when only ``count`` is given."""
    count: int | None = None
    master: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    """Overrides of ``Settings`` (e.g. ``{"state": "BY"}``) for this case."""

    @property
    def flags(self) -> bool:
        return bool(self.expect) if self.expect is not None else bool(self.count)


@dataclass(frozen=True)
class Rule:
    id: str
    name: str
    title: dict[str, str]
    family: str
    severity: str
    level: str
    tags: list[str]
    requires: list[str]
    requires_master: list[str]
    params: list[Param]
    config_params: list[str]
    scenarios: list[str]
    why: dict[str, str]
    """Why the rule matters, per language ("de", "en"); only "en" for a plain-English file."""
    explain: dict[str, str]
    falsepositives: dict[str, list[str]]
    """Known false positives per language; only "en" for a plain-English file."""
    query: str
    cases: list[Case]
    path: Path
    example: str = ""

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def why_text(self, lang: str = "de") -> str:
        """The why in ``lang``, or the English text when the file has no such translation."""
        return self.why.get(lang) or self.why.get("en", "")

    def falsepositives_list(self, lang: str = "de") -> list[str]:
        """Known false positives in ``lang``, or the English list when not translated."""
        return list(self.falsepositives.get(lang) or self.falsepositives.get("en", []))

    def has_language(self, lang: str) -> bool:
        """Whether all texts (title, explain, why, false positives, parameter docs) exist in
        ``lang``."""
        return all(lang in texts for texts in (self.title, self.explain, self.why,
                                               self.falsepositives)) \
            and all(lang in p.doc for p in self.params)
