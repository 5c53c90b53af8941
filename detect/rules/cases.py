"""Run each rule's own test cases (``belegwacht rules test``), like sqlfluff's YAML rule cases.

A case gives only the columns that matter; every other column gets a harmless default (a
Thursday morning, a manual entry by MEIER approved by SCHULZ, 100,00 € on account 4000), so a
case reads like the sentence it tests. The case runs through exactly the same code path as a
nightly run: the same views, parameter resolution, SQL wrapper and explanation rendering.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

import duckdb
import polars as pl

from detect.config import Settings, _build
from detect.rules.model import Case, Rule
from detect.rules.params import effective_params
from detect.rules.runner import Availability, run_rule, setup_views
from detect.schema import AMOUNT, BOOKING_SCHEMA, MASTER_SCHEMAS, conform

DEFAULT_ENTITY = "Musterstadt"
DEFAULT_POSTING = date(2024, 3, 14)


@dataclass(frozen=True)
class CaseResult:
    rule_id: str
    case: str
    passed: bool
    message: str = ""


def _money(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value)).quantize(Decimal("0.01"))


def _frame(rows: list[dict[str, Any]], schema: pl.Schema) -> pl.DataFrame:
    """Rows (given columns only) -> frame with the given schema's types; absent columns omitted."""
    names = [n for n in schema.names() if any(n in r for r in rows)]
    data: dict[str, list[Any]] = {n: [r.get(n) for r in rows] for n in names}
    for n in names:
        if schema[n] == AMOUNT:
            data[n] = [_money(v) for v in data[n]]
        elif schema[n] == pl.String():
            data[n] = [None if v is None else str(v) for v in data[n]]
        elif schema[n] == pl.Datetime("us"):
            data[n] = [datetime.fromisoformat(v) if isinstance(v, str) else
                       datetime.combine(v, time()) if type(v) is date else v for v in data[n]]
        elif schema[n] == pl.Date():
            data[n] = [date.fromisoformat(v) if isinstance(v, str) else
                       v.date() if isinstance(v, datetime) else v for v in data[n]]
    return pl.DataFrame(data, schema={n: schema[n] for n in names}, strict=False)


def case_bookings(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Canonical bookings from case rows, defaults filled in (see module docstring)."""
    given = _frame(rows, BOOKING_SCHEMA).with_row_index("_row")
    has = set(given.columns) - {"_row"}
    # a column given as null stays null; a column a row leaves out gets the default
    given = given.with_columns(pl.Series(f"_has_{n}", [n in r for r in rows]) for n in has)

    def col(name: str, default: pl.Expr) -> pl.Expr:
        if name not in has:
            return default
        return pl.when(pl.col(f"_has_{name}")).then(pl.col(name)).otherwise(default)

    posting = col("posting_date", pl.lit(DEFAULT_POSTING))
    journal = col("journal_id", pl.lit("J1"))
    out = given.with_columns(posting.alias("posting_date"), journal.alias("journal_id"))
    out = out.with_columns(
        col("entity", pl.lit(DEFAULT_ENTITY)).alias("entity"),
        col("fiscal_year", pl.col("posting_date").dt.year()).cast(pl.Int32).alias("fiscal_year"),
        col("period", pl.col("posting_date").dt.month()).cast(pl.Int32).alias("period"),
        col("line_no", (pl.int_range(pl.len()).over("journal_id") + 1)).cast(pl.Int32)
        .alias("line_no"),
        col("document_date", pl.col("posting_date")).alias("document_date"),
        col("entered_at", pl.col("posting_date").cast(pl.Datetime("us"))
            + pl.duration(hours=10)).alias("entered_at"),
        col("entered_by", pl.lit("MEIER")).alias("entered_by"),
        col("approved_by", pl.lit("SCHULZ")).alias("approved_by"),
        col("gl_account", pl.lit("4000")).alias("gl_account"),
        col("amount", pl.lit(Decimal("100.00"), AMOUNT)).alias("amount"),
        col("currency", pl.lit("EUR")).alias("currency"),
        col("description", pl.lit("Rechnung Büromaterial")).alias("description"),
        col("document_type", pl.lit("KR")).alias("document_type"),
        col("source", pl.lit("manual")).alias("source"),
        col("cost_center", pl.lit("100")).alias("cost_center"),
        col("source_file", pl.lit("case.yaml")).alias("source_file"),
        col("source_line", pl.col("_row").cast(pl.Int64) + 1).alias("source_line"),
    )
    return conform(out.lazy()).collect()


def case_connection(case: Case, settings: Settings) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.register("_case_bookings", case_bookings(case.rows))
    masters = {}
    for name, rows in case.master.items():
        con.register(f"_case_{name}", _frame(rows, MASTER_SCHEMAS[name]))
        masters[name] = f"_case_{name}"
    setup_views(con, "_case_bookings", "_case_bookings", masters, settings)
    return con


def _keys(hits: pl.DataFrame) -> list[tuple[str, int | None]]:
    return sorted(zip(hits["journal_id"].to_list(), hits["line_no"].to_list(), strict=True),
                  key=lambda k: (k[0], -1 if k[1] is None else k[1]))


def run_case(rule: Rule, case: Case) -> CaseResult:
    settings = _build(Settings, case.settings, "case settings") if case.settings else Settings()
    con = case_connection(case, settings)
    try:
        reason = Availability.probe(con).skip_reason(rule)
        if reason:
            return CaseResult(rule.id, case.name, False, f"rule would be skipped: {reason}")
        params = effective_params(rule.id, rule.defaults(), rule.config_params, settings,
                                  case.params)
        try:
            hits = run_rule(con, rule, params)
        except KeyError as exc:
            return CaseResult(rule.id, case.name, False,
                              f"explain template uses {{{exc.args[0]}}}: neither a query column "
                              "nor a parameter")
        except (duckdb.Error, ValueError) as exc:
            return CaseResult(rule.id, case.name, False, f"query failed: {exc}")
    finally:
        con.close()
    got = _keys(hits)
    if case.expect is None:
        ok = len(got) == case.count
        return CaseResult(rule.id, case.name, ok,
                          "" if ok else f"expected {case.count} hits, got {len(got)}: {got}")
    expected = sorted(case.expect, key=lambda k: (k[0], -1 if k[1] is None else k[1]))
    if rule.level == "journal":
        expected = sorted({(j, None) for j, _ in expected})
    if got == expected:
        blank = hits.filter(pl.col("explanation_de").str.contains(r"\{|\bNone\b"))
        if blank.height:
            return CaseResult(rule.id, case.name, False,
                              f"explanation not fully rendered: {blank['explanation_de'][0]}")
        return CaseResult(rule.id, case.name, True)
    return CaseResult(rule.id, case.name, False, f"expected {expected}, got {got}")


def run_cases(rules: list[Rule]) -> list[CaseResult]:
    """Every case of every rule given; a case never raises, it fails with a message."""
    return [run_case(rule, case) for rule in rules for case in rule.cases]
