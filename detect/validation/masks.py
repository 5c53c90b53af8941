"""The suite's row-level expectations as vectorised Polars masks.

Great Expectations' pandas engine needs ~18 s for the booking suite on 1M clean rows and minutes
when many rows fail (building COMPLETE result lists), far over the validation budget. So the
*same suite file* is evaluated here, expectation by expectation, with the semantics GX documents
(nulls pass value checks; ``ignore_row_if`` for pairs; uniqueness marks every occurrence), and
GX itself validates a sample for the Data Docs and cross-checks these masks on it
(``detect.validate`` reports any disagreement). Table-level expectations (means, row counts...)
have no row mask: they run in GX only.

``fails(check, params)`` returns a boolean expression, true where the row fails.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import polars as pl

from detect.validation.suites import Check

PARAM = "$PARAMETER"


class Unsupported(Exception):
    """The expectation has no row-level translation (it runs in GX only)."""


def resolve(value: Any, params: dict[str, Any]) -> Any:
    if isinstance(value, dict) and PARAM in value:
        return params[value[PARAM]]
    return value


def _literal(value: Any, dtype: pl.DataType) -> Any:
    """JSON strings as dates when compared with date columns."""
    if isinstance(value, str) and dtype == pl.Date():
        return date.fromisoformat(value)
    if isinstance(value, str) and isinstance(dtype, pl.Datetime):
        return datetime.fromisoformat(value)
    return value


def _between(col: pl.Expr, dtype: pl.DataType, kw: dict[str, Any],
             params: dict[str, Any]) -> pl.Expr:
    lo = _literal(resolve(kw.get("min_value"), params), dtype)
    hi = _literal(resolve(kw.get("max_value"), params), dtype)
    ok = pl.lit(True)
    if lo is not None:
        ok = ok & (col > lo if kw.get("strict_min") else col >= lo)
    if hi is not None:
        ok = ok & (col < hi if kw.get("strict_max") else col <= hi)
    return col.is_not_null() & ~ok


def _pair(check: Check, params: dict[str, Any]) -> pl.Expr:
    kw = check.kwargs
    a, b = pl.col(kw["column_A"]), pl.col(kw["column_B"])
    ignore = kw.get("ignore_row_if", "both_values_are_missing")
    if ignore == "either_value_is_missing":
        skip = a.is_null() | b.is_null()
    elif ignore == "both_values_are_missing":
        skip = a.is_null() & b.is_null()
    else:
        skip = pl.lit(False)
    if check.type == "expect_column_pair_values_a_to_be_greater_than_b":
        ok = (a >= b) if kw.get("or_equal") else (a > b)
    elif check.type == "expect_column_pair_values_to_be_equal":
        ok = a == b
    else:
        raise Unsupported(check.type)
    return ~skip & ~ok.fill_null(False)


def uniqueness(check: Check) -> tuple[list[str], pl.Expr] | None:
    """For uniqueness checks: the key columns and the rows that take no part (GX's
    ``ignore_row_if``); None for other checks. Lets ``rowchecks`` find duplicates with an
    aggregate instead of a window over every row."""
    kw, t = check.kwargs, check.type
    if kw.get("row_condition"):
        return None
    if t == "expect_compound_columns_to_be_unique":
        cols = list(kw["column_list"])
        ignore = kw.get("ignore_row_if", "all_values_are_missing")
        missing = [pl.col(c).is_null() for c in cols]
        skip = (pl.all_horizontal(missing) if ignore == "all_values_are_missing"
                else pl.any_horizontal(missing) if ignore == "any_value_is_missing"
                else pl.lit(False))
        return cols, skip
    if t == "expect_column_values_to_be_unique" and "column" in kw:
        return [kw["column"]], pl.col(kw["column"]).is_null()
    return None


def fails(check: Check, params: dict[str, Any], schema: pl.Schema) -> pl.Expr:
    """True where a row fails ``check`` (nulls pass value checks, as in GX)."""
    kw, t = check.kwargs, check.type
    if kw.get("row_condition"):
        raise Unsupported(f"{t} with row_condition")  # pandas query syntax: GX only
    if t.startswith("expect_column_pair_values"):
        return _pair(check, params)
    if t == "expect_compound_columns_to_be_unique":
        cols, skip = uniqueness(check)  # type: ignore[misc]
        # skipped rows take no part in the comparison at all
        key = pl.when(~skip).then(pl.struct(cols))
        return ~skip & key.is_duplicated()
    if "column" not in kw:
        raise Unsupported(t)
    name = kw["column"]
    col, dtype = pl.col(name), schema[name]
    if t == "expect_column_values_to_not_be_null":
        return col.is_null()
    if t == "expect_column_values_to_be_null":
        return col.is_not_null()
    if t == "expect_column_values_to_be_between":
        return _between(col, dtype, kw, params)
    if t == "expect_column_values_to_be_in_set":
        values = [_literal(v, dtype) for v in resolve(kw["value_set"], params)]
        return col.is_not_null() & ~col.is_in(pl.Series(values, dtype=dtype, strict=False).implode())
    if t == "expect_column_values_to_not_be_in_set":
        values = [_literal(v, dtype) for v in resolve(kw["value_set"], params)]
        return col.is_not_null() & col.is_in(pl.Series(values, dtype=dtype, strict=False).implode())
    if t == "expect_column_values_to_match_regex":
        return col.is_not_null() & ~col.cast(pl.String).str.contains(resolve(kw["regex"], params))
    if t == "expect_column_values_to_not_match_regex":
        return col.is_not_null() & col.cast(pl.String).str.contains(resolve(kw["regex"], params))
    if t == "expect_column_values_to_be_unique":
        return col.is_not_null() & col.is_duplicated()
    if t == "expect_column_value_lengths_to_be_between":
        return _between(col.cast(pl.String).str.len_chars(), pl.Int64(), kw, params)
    raise Unsupported(t)


def row_level(check: Check) -> bool:
    """Whether ``check`` has a row mask (otherwise it is a table-level, GX-only check)."""
    try:
        fails(check, {}, pl.Schema({c: pl.String() for c in check.columns}))
    except Unsupported:
        return False
    except (KeyError, TypeError, ValueError):
        return True  # needs parameters or typed columns, but is translatable
    return True
