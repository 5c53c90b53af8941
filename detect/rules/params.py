"""Rule parameters: the rule file's defaults, values derived from ``belegwacht.toml``, per-entity
overrides, in that order.

Config-derived values (procurement thresholds, materiality, office hours, keywords, service
users ...) live once in the settings because several rules share them; a rule names the ones it
uses under ``config_params`` and sees them as ``$name`` in its query like its own parameters.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from detect.config import Settings

CONFIG_PARAMS: dict[str, tuple[str, Callable[[Settings], Any]]] = {
    "procurement_thresholds": ("thresholds.procurement: Vergabe-Wertgrenzen (EUR)",
                               lambda s: [float(x) for x in s.thresholds.procurement]),
    "materiality": ("thresholds.materiality: amount from which a line is material",
                    lambda s: float(s.thresholds.materiality)),
    "approval_margin": ("thresholds.approval_margin: 'just below' = within this share",
                        lambda s: float(s.thresholds.approval_margin)),
    "office_start_hour": ("office_hours.start_hour", lambda s: int(s.office_hours.start_hour)),
    "office_end_hour": ("office_hours.end_hour", lambda s: int(s.office_hours.end_hour)),
    "workdays": ("office_hours.workdays: ISO weekdays (1 = Monday)",
                 lambda s: [int(d) for d in s.office_hours.workdays]),
    "description_keywords": ("description_keywords: words that make a text suspicious",
                             lambda s: [str(k).lower() for k in s.description_keywords]),
    "service_users": ("service_users: technical / interface accounts",
                      lambda s: [str(u).upper() for u in s.service_users]),
    "generic_users": ("generic_users: shared or generic accounts",
                      lambda s: [str(u).upper() for u in s.generic_users]),
    "manual_sources": ("manual_sources: values of `source` that mean keyed in by a person",
                       lambda s: [str(u).lower() for u in s.manual_sources]),
    "currency": ("currency: reporting currency", lambda s: s.currency),
    "fiscal_year_start_month": ("fiscal_year_start_month",
                                lambda s: int(s.fiscal_year_start_month)),
}
"""Name -> (where it comes from, how to read it from the settings)."""

_PLACEHOLDER = re.compile(r"(?<![\w$])\$([A-Za-z_]\w*)")


_LITERAL_OR_COMMENT = re.compile(r"'(?:[^']|'')*'|--[^\n]*")
"""Literals and comments in one left-to-right pass: an apostrophe in a comment ("vendor's")
must not open a literal, and ``--`` inside a literal is no comment."""


def strip_comments(query: str) -> str:
    """The query without its ``--`` comments (string literals kept as they are)."""
    return _LITERAL_OR_COMMENT.sub(lambda m: m.group(0) if m.group(0).startswith("'") else "",
                                   query)


def query_params(query: str) -> list[str]:
    """``$name`` placeholders in a query, in order of first use (string literals excluded)."""
    stripped = _LITERAL_OR_COMMENT.sub(lambda m: "''" if m.group(0).startswith("'") else "",
                                       query)
    seen: dict[str, None] = {}
    for match in _PLACEHOLDER.finditer(stripped):
        seen.setdefault(match.group(1), None)
    return list(seen)


def effective_params(rule_id: str, defaults: dict[str, Any], config_names: list[str],
                     settings: Settings, case_params: dict[str, Any] | None = None
                     ) -> dict[str, Any]:
    """Rule defaults < config-derived values < ``[rules.<ID>]`` in belegwacht.toml < case."""
    base = dict(defaults)
    for name in config_names:
        base[name] = CONFIG_PARAMS[name][1](settings)
    params = settings.rule_params(rule_id, base)
    params.update(case_params or {})
    return params
