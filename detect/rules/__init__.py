"""The rule engine: loads ``rules/<family>/<ID>.yaml`` and runs each rule as one DuckDB query.

Public surface (used by the pipeline and the CLI)::

    con = connect(ctx, history_glob)         # views: bookings, delivery, journals, holidays,
                                             #        accounts, vendors, vendor_changes, users, cost_centers
    result = run_rules(con, ctx)             # writes run_dir/rule_hits.parquet; .hits, .summary()
    load_catalog(); find_rule(catalog, id); format_catalog_table(catalog, lang)
    describe_rule(rule, lang); rule.why_text(lang); rule.falsepositives_list(lang)
    catalog_table_markdown(catalog); run_cases(rules) -> [CaseResult]

Modules: ``model`` (what a rule is), ``loader`` (files -> validated rules), ``params``
(defaults < config < per-entity overrides), ``render`` (explanations as SQL), ``runner``
(views and execution), ``cases`` (the rules' own tests), ``docs`` (terminal and Markdown).
"""

from detect.rules.cases import CaseResult, run_cases
from detect.rules.docs import (catalog_markdown, catalog_table_markdown, describe_rule,
                               format_catalog_table)
from detect.rules.loader import RuleError, find_rule, load_catalog
from detect.rules.model import SCENARIOS, Case, Param, Rule
from detect.rules.runner import HIT_SCHEMA, RuleRunResult, connect, run_catalog, run_rules

__all__ = [
    "HIT_SCHEMA", "SCENARIOS", "Case", "CaseResult", "Param", "Rule", "RuleError",
    "RuleRunResult", "catalog_markdown", "catalog_table_markdown", "connect", "describe_rule",
    "find_rule",
    "format_catalog_table", "load_catalog", "run_cases", "run_catalog", "run_rules",
]
