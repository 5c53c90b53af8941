"""Explanation templates -> DuckDB SQL expressions, so every hit's text is built inside the query
(vectorised) instead of in a Python loop.

A template is plain text with ``{column}`` or ``{column:format}`` placeholders. Columns come from
the rule query's output; a placeholder that names a parameter is filled once with its value.
Formats: ``money`` (German ``1.234,56 €``), ``num`` (2 decimals), ``int`` (thousands separator),
``pct`` (share 0..1 as percent), ``date``, ``datetime``, ``list``, ``text``. Without a format the
column type decides: DECIMAL -> money, DOUBLE -> num, DATE -> date, TIMESTAMP -> datetime,
lists -> list, everything else -> text.
"""

from __future__ import annotations

import string
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from detect import fmt

FORMATS = ("money", "num", "int", "pct", "date", "datetime", "list", "text")
NULL_TEXT = "–"


def sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def placeholders(template: str) -> list[tuple[str, str]]:
    """(name, format) of every ``{...}`` in the template."""
    return [(f, spec or "") for _, f, spec, _ in string.Formatter().parse(template) if f]


def _swap_de(expr: str) -> str:
    """1,234.56 -> 1.234,56."""
    return f"replace(replace(replace({expr}, ',', '§'), '.', ','), '§', '.')"


def default_format(duck_type: str) -> str:
    t = duck_type.upper()
    if t.startswith("DECIMAL"):
        return "money"
    if t in ("DOUBLE", "FLOAT", "REAL"):
        return "num"
    if t == "DATE":
        return "date"
    if t.startswith("TIMESTAMP"):
        return "datetime"
    if t.endswith("[]"):
        return "list"
    return "text"


def column_sql(col: str, spec: str, duck_type: str, lang: str, currency_symbol: str = "€") -> str:
    """SQL expression rendering column ``col`` as text in ``lang``."""
    c = quote_ident(col)
    kind = spec or default_format(duck_type)
    if kind == "money":
        body = f"format('{{:,.2f}}', abs({c})::DOUBLE)"
        if lang == "de":
            expr = (f"(CASE WHEN {c} < 0 THEN '-' ELSE '' END || {_swap_de(body)} || "
                    f"' {currency_symbol}')")
        else:
            expr = f"(CASE WHEN {c} < 0 THEN '-' ELSE '' END || '{currency_symbol}' || {body})"
    elif kind == "num":
        body = f"format('{{:,.2f}}', {c}::DOUBLE)"
        expr = _swap_de(body) if lang == "de" else body
    elif kind == "int":
        body = f"format('{{:,}}', round({c})::BIGINT)"
        expr = _swap_de(body) if lang == "de" else body
    elif kind == "pct":
        body = f"format('{{:,.1f}}', 100 * {c}::DOUBLE)"
        expr = f"({_swap_de(body)} || ' %')" if lang == "de" else f"({body} || '%')"
    elif kind == "date":
        expr = f"strftime({c}::DATE, '{'%d.%m.%Y' if lang == 'de' else '%Y-%m-%d'}')"
    elif kind == "datetime":
        expr = (f"strftime({c}::TIMESTAMP, "
                f"'{'%d.%m.%Y %H:%M' if lang == 'de' else '%Y-%m-%d %H:%M'}')")
    elif kind == "list":
        expr = f"array_to_string({c}, ', ')"
    elif kind == "text":
        expr = f"{c}::VARCHAR"
    else:
        raise ValueError(f"unknown format {spec!r} (known: {', '.join(FORMATS)})")
    return f"coalesce({expr}, {sql_literal(NULL_TEXT)})"


def value_text(value: Any, spec: str, lang: str) -> str:
    """A parameter value rendered once in Python (not per hit)."""
    if value is None:
        return NULL_TEXT
    if isinstance(value, list):
        return ", ".join(value_text(v, spec, lang) for v in value)
    if spec == "money" or (not spec and isinstance(value, Decimal)):
        return fmt.money(value, lang)
    if spec == "pct":
        return fmt.percent(float(value), lang)
    if isinstance(value, (date, datetime)):
        return fmt.day(value, lang)
    if isinstance(value, int) and not isinstance(value, bool) and not spec:
        return fmt.number(value, lang, 0)
    if spec in ("num", "int") or (isinstance(value, float) and not spec):
        return fmt.number(value, lang, 2 if spec == "num" or isinstance(value, float) and not
                          float(value).is_integer() else 0)
    return str(value)


def template_sql(template: str, columns: dict[str, str], params: dict[str, Any],
                 lang: str) -> str:
    """One SQL string expression for the whole template.

    ``columns`` maps output column -> DuckDB type. Raises KeyError naming a placeholder that is
    neither a column nor a parameter.
    """
    parts: list[str] = []
    for literal, field, spec, _ in string.Formatter().parse(template):
        if literal:
            parts.append(sql_literal(literal))
        if not field:
            continue
        if field in columns:
            parts.append(column_sql(field, spec or "", columns[field], lang))
        elif field in params:
            parts.append(sql_literal(value_text(params[field], spec or "", lang)))
        else:
            raise KeyError(field)
    return " || ".join(parts) if parts else "''"
