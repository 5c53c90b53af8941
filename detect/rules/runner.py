"""Run the catalog: one DuckDB query per rule over the entity's booking history.

Rules see the whole history (a duplicate payment may span two deliveries) but, unless the run
re-scores history, only hits on journals of this delivery are kept. A rule whose required
columns are empty or whose master data is absent is skipped with the reason; a rule whose query
fails at run time is reported as failed and the others still run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import duckdb
import holidays as holidays_lib
import polars as pl

from detect.config import Settings
from detect.errors import ConfigError
from detect.rules.loader import load_catalog
from detect.rules.model import KEY_COLUMNS, MASTER_NAMES, Rule
from detect.rules.params import CONFIG_PARAMS, effective_params, query_params, strip_comments
from detect.rules.render import quote_ident, sql_literal, template_sql
from detect.schema import BOOKING_SCHEMA, MASTER_SCHEMAS

HIT_SCHEMA = pl.Schema({
    "rule_id": pl.String(), "family": pl.String(), "severity": pl.String(),
    "entity": pl.String(), "fiscal_year": pl.Int32(), "journal_id": pl.String(),
    "line_no": pl.Int32(), "explanation_de": pl.String(), "explanation_en": pl.String(),
    "evidence": pl.String(),
})
"""``rule_hits.parquet`` (docs/CONTRACTS.md)."""

_DUCK_TYPES = {
    pl.String(): "VARCHAR", pl.Int32(): "INTEGER", pl.Int64(): "BIGINT", pl.Date(): "DATE",
    pl.Datetime("us"): "TIMESTAMP", pl.Boolean(): "BOOLEAN", pl.Decimal(18, 2): "DECIMAL(18,2)",
}

MANUAL_MACRO = "_manual_source"
"""Macro ``setup_views`` defines: whether a ``source`` value means keyed in by a person
(``manual_sources`` of the settings, compared in lower case; an empty source counts as manual)."""

DERIVED_COLUMNS: dict[str, tuple[str, str, str]] = {
    "manual_entry": (f"{MANUAL_MACRO}(source)", "BOOLEAN", "manual_sources"),
}
"""Columns the engine adds to ``bookings`` (and ``journals``): name -> (SQL over the line, DuckDB
type, the setting it reads). Copied with the history when a rule names one, so a flag several
rules filter on is computed once per run instead of once per rule and line (``manual_entry``:
~0,03 CPU s per rule at 1M lines). They follow the entity's settings, not ``[rules.<ID>]``."""

JOURNAL_AGGREGATES: dict[str, tuple[str, str]] = {
    "posting_date": ("min(posting_date)", "DATE"),
    "last_posting_date": ("max(posting_date)", "DATE"),
    "document_date": ("min(document_date)", "DATE"),
    "entered_at": ("min(entered_at)", "TIMESTAMP"),
    "period": ("max(period)", "INTEGER"),
    "entered_by": ("arg_min(entered_by, line_no)", "VARCHAR"),
    "approved_by": ("max(approved_by)", "VARCHAR"),
    "source": ("arg_min(source, line_no)", "VARCHAR"),
    "document_type": ("arg_min(document_type, line_no)", "VARCHAR"),
    "reversal_of": ("max(reversal_of)", "VARCHAR"),
    "description": ("arg_min(description, line_no)", "VARCHAR"),
    "manual_entry": (f"{MANUAL_MACRO}(arg_min(source, line_no))", "BOOLEAN"),
    "n_lines": ("count(*)", ""),
    "debit_total": ("coalesce(sum(amount) FILTER (WHERE amount > 0), 0)", ""),
    "balance": ("coalesce(sum(amount), 0)", ""),
}
"""Columns of ``journals`` (besides the keys) and how they aggregate the lines; the type is that
of the typed null that stands in for a column no rule reads (empty: always computed)."""


def journals_select(columns: set[str] | None = None) -> str:
    """One row per journal; many journal-level rules read this instead of aggregating again.

    ``columns`` (see ``catalog_columns``) leaves out the aggregates no rule reads (the
    ``arg_min`` over texts are the dear part); they stay as typed nulls in the same shape."""
    parts = [f"{expr} AS {name}" if columns is None or not dtype or name in columns
             else f"CAST(NULL AS {dtype}) AS {name}"
             for name, (expr, dtype) in JOURNAL_AGGREGATES.items()]
    return ("SELECT entity, fiscal_year, journal_id,\n       " + ",\n       ".join(parts)
            + "\nFROM bookings GROUP BY entity, fiscal_year, journal_id\n")


JOURNALS_SELECT = journals_select()
"""All of ``journals`` (the view of ``setup_views``; cases and tests read it)."""


MAX_HIT_SHARE = 0.2
"""A rule that flags more than this share of the journals describes the data, not anomalies:
its hits are dropped and the run says so (``[rules.<ID>] max_hit_share`` overrides)."""
MIN_POPULATION = 200
"""... but only when the history has at least this many journals to judge by."""


def _duck_type(dtype: pl.DataType) -> str:
    return _DUCK_TYPES.get(dtype, "VARCHAR")


def _conform_select(source_sql: str, schema: pl.Schema, present: set[str]) -> str:
    cols = [f"CAST({quote_ident(n)} AS {_duck_type(t)}) AS {quote_ident(n)}" if n in present
            else f"CAST(NULL AS {_duck_type(t)}) AS {quote_ident(n)}" for n, t in schema.items()]
    return f"SELECT {', '.join(cols)} FROM {source_sql}"


def _placeholders_to_null(select_sql: str, settings: Settings) -> str:
    """Placeholder dates (1900-01-01 ...) mean "unknown": rules must not read them as dates."""
    dates = [d for d in settings.validation.placeholder_dates if len(d) == 10]
    if not dates:
        return select_sql
    listed = ", ".join(f"DATE {sql_literal(d)}" for d in dates)
    cols = []
    for name, dtype in BOOKING_SCHEMA.items():
        c = quote_ident(name)
        if dtype == pl.Date():
            cols.append(f"CASE WHEN {c} IN ({listed}) THEN NULL ELSE {c} END AS {c}")
        elif dtype == pl.Datetime("us"):
            cols.append(f"CASE WHEN CAST({c} AS DATE) IN ({listed}) THEN NULL ELSE {c} END AS {c}")
        else:
            cols.append(c)
    return f"SELECT {', '.join(cols)} FROM ({select_sql})"


def _manual_sql(column: str, settings: Settings) -> str:
    """The rules' test for a manual entry, once for all of them (``manual_sources`` is
    lower-cased by ``CONFIG_PARAMS``; a null source is manual)."""
    listed = ", ".join(sql_literal(v) for v in CONFIG_PARAMS["manual_sources"][1](settings))
    return f"coalesce(list_contains([{listed}]::VARCHAR[], lower({column})), true)"


def _columns_of(con: duckdb.DuckDBPyConnection, source_sql: str) -> set[str]:
    return set(con.sql(f"SELECT * FROM {source_sql} LIMIT 0").columns)


def holiday_frame(settings: Settings, years: list[int]) -> pl.DataFrame:
    """Public holidays of settings.country / settings.state for ``years``."""
    return _holidays(settings.country, settings.state, settings.language, tuple(sorted(years)))


_HOLIDAYS_PACKAGE = "holidays.countries"


def _holiday_class(country: str) -> Any:
    """The ``holidays`` class of ``country``, loaded from its own module only; None where the
    caller should take ``holidays.country_holidays``.

    ``country_holidays`` reaches the class through the package ``holidays.countries``, whose
    ``__init__`` imports all 279 country modules to return one (~0,045 CPU s, once per process,
    in every run's rules stage); the country's own file takes ~0,004. The module goes into
    ``sys.modules`` under its usual name, so a later import of the package reuses it. None
    (the usual way, with its errors) once the package is imported, for a code the registry
    does not list, or if the library's layout is not what this expects."""
    if _HOLIDAYS_PACKAGE in sys.modules:
        return None
    try:
        from holidays.registry import COUNTRIES, IMPORT_LOCK

        module_name = next((m for m, names in COUNTRIES.items() if country in names), None)
        if module_name is None:
            return None
        name = f"{_HOLIDAYS_PACKAGE}.{module_name}"
        with IMPORT_LOCK:  # the library's own lock for its lazy imports
            module = sys.modules.get(name)
            if module is None:
                path = Path(holidays_lib.__file__).parent / "countries" / f"{module_name}.py"
                spec = importlib.util.spec_from_file_location(name, path)
                if spec is None or spec.loader is None:
                    return None
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    sys.modules.pop(name, None)
                    raise
        cls = getattr(module, country, None)
        return cls if isinstance(cls, type) and issubclass(cls, holidays_lib.HolidayBase) else None
    except Exception:  # noqa: BLE001 - the usual way decides and reports
        return None


@lru_cache(maxsize=64)
def _holidays(country: str, state: str, language: str, years: tuple[int, ...]) -> pl.DataFrame:
    if not years:
        return pl.DataFrame(schema={"date": pl.Date(), "name": pl.String()})
    kwargs: dict[str, Any] = {"subdiv": state or None, "years": list(years)}
    cls = _holiday_class(country)

    def calendar(**more: Any) -> Any:
        if cls is None:
            return holidays_lib.country_holidays(country, **kwargs, **more)
        # what ``country_holidays`` passes to the class
        return cls(expand=True, observed=True, prov=None, state=None, categories=None,
                   **kwargs, **more)

    try:
        try:
            cal = calendar(language=language)
        except (NotImplementedError, ValueError) as exc:
            if "language" not in str(exc).lower() and "subdivision" in str(exc).lower():
                raise
            cal = calendar()
    except NotImplementedError as exc:
        raise ConfigError(f"public holidays: {exc}",
                          hint="set country and state (e.g. state = \"NW\") in belegwacht.toml"
                          ) from exc
    return pl.DataFrame({"date": list(cal.keys()), "name": list(cal.values())},
                        schema={"date": pl.Date(), "name": pl.String()}).sort("date")


def setup_views(con: duckdb.DuckDBPyConnection, bookings_source: str, delivery_source: str,
                master_sources: dict[str, str], settings: Settings) -> None:
    """Create the views every rule may use: bookings, delivery, journals, holidays, master data.

    In ``bookings``, placeholder dates (``validation.placeholder_dates``) become null.

    Sources are SQL table expressions (``read_parquet(...)`` or a registered frame). Absent
    master data becomes an empty view of the right shape, so optional joins still work.
    """
    present = _columns_of(con, bookings_source)
    conformed = _conform_select(bookings_source, BOOKING_SCHEMA, present)
    con.execute(f"CREATE OR REPLACE TEMP MACRO {MANUAL_MACRO}(s) AS "
                f"{_manual_sql('s', settings)}")
    derived = ", ".join(f"{expr} AS {quote_ident(name)}"
                        for name, (expr, _, _) in DERIVED_COLUMNS.items())
    # the conformed source stays reachable under its own name: ``materialise_inputs`` copies
    # from it (again, on a second catalog run) while ``bookings`` points at the copy
    con.execute(f"CREATE OR REPLACE VIEW _bookings_source AS SELECT *, {derived} FROM ("
                f"{_placeholders_to_null(conformed, settings)})")
    con.execute("CREATE OR REPLACE VIEW bookings AS SELECT * FROM _bookings_source")
    con.execute("CREATE OR REPLACE VIEW delivery AS SELECT DISTINCT "
                "CAST(entity AS VARCHAR) AS entity, CAST(fiscal_year AS INTEGER) AS fiscal_year, "
                "CAST(journal_id AS VARCHAR) AS journal_id, CAST(line_no AS INTEGER) AS line_no "
                f"FROM {delivery_source}")
    # like ``_bookings_source``: the source keeps its own name, since a view is bound by name
    # when read and ``materialise_inputs`` points ``delivery_journals`` at its copy
    con.execute("CREATE OR REPLACE VIEW _delivery_journals_source AS SELECT DISTINCT "
                "CAST(entity AS VARCHAR) AS entity, CAST(fiscal_year AS INTEGER) AS fiscal_year, "
                f"CAST(journal_id AS VARCHAR) AS journal_id FROM {delivery_source}")
    con.execute("CREATE OR REPLACE VIEW delivery_journals AS "
                "SELECT * FROM _delivery_journals_source")
    con.execute(f"CREATE OR REPLACE VIEW journals AS {JOURNALS_SELECT}")
    for name in MASTER_NAMES:
        schema = MASTER_SCHEMAS[name]
        if name in master_sources:
            cols = _columns_of(con, master_sources[name])
            select = _conform_select(master_sources[name], schema, cols)
        else:
            select = _conform_select("(SELECT 1) AS empty WHERE false", schema, set())
        con.execute(f"CREATE OR REPLACE VIEW {name} AS {select}")
    # one scan of the three dates (the distinct year triples are few), not one scan per date
    # column joined by UNION: 0.07 -> 0.035 CPU s at 1M lines
    years = [r[0] for r in con.execute(
        "SELECT DISTINCT y FROM (SELECT unnest([py, ey, dy]) AS y FROM ("
        "SELECT year(posting_date) AS py, year(entered_at) AS ey, year(document_date) AS dy "
        "FROM bookings GROUP BY ALL)) WHERE y BETWEEN 1900 AND 2200").fetchall()]
    years = sorted({y for year in years for y in (year - 1, year, year + 1)})
    frame = holiday_frame(settings, years)
    con.register("_holidays_frame", frame)
    con.execute("CREATE OR REPLACE TABLE holidays AS SELECT * FROM _holidays_frame")
    con.unregister("_holidays_frame")


def _parquet_source(paths: str | Path | list[str | Path]) -> str:
    items = paths if isinstance(paths, list) else [paths]
    listed = ", ".join(sql_literal(str(p)) for p in items)
    return f"read_parquet([{listed}], union_by_name = true, hive_partitioning = false)"


DUCKDB_THREADS = 2
DUCKDB_MEMORY_LIMIT = "3GB"
"""The nightly job must stay under 6 GB on a 2-core machine shared with other work: DuckDB
spills to ``temp_directory`` beyond this instead of taking all memory and every core."""


def _child_pids() -> list[int]:
    """This process's child processes and theirs (Linux: ``/proc/<pid>/task/<tid>/children``);
    empty where there is no such file."""
    found: list[int] = []
    stack = [os.getpid()]
    while stack:
        pid = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                    children = [int(c) for c in f.read().split()]
            except (OSError, ValueError):
                continue
            found += children
            stack += children
    return found


_TICK_SECONDS = 1 / (os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100)


class ChildLoad:
    """CPU seconds the threads of this process's children (the job's model worker) wanted at
    normal priority since the last call: on a core or waiting for one
    (``/proc/<pid>/task/<tid>/schedstat``; without it, the ticks they got from ``stat``).

    Wanted, not got: on a loaded machine the worker gets a fraction of a core, but it still
    takes one from the catalog's second thread. Niced threads (Great Expectations' part of
    the worker) do not count: they yield their core to the catalog's threads. The children
    are those of the start (the worker is started before the rules); their threads are
    listed again at every call (GX's thread starts during the rules), a thread first seen
    counts from zero, one that ended counts nothing more."""

    def __init__(self, pids: list[int] | None = None) -> None:
        self.pids = _child_pids() if pids is None else pids
        self.last: dict[tuple[int, int], float] = {}
        self._sample(first=True)

    @staticmethod
    def _wanted(task: str) -> float | None:
        """Seconds the task ran or waited to run so far; None for a niced or ended task."""
        try:
            with open(f"{task}/stat", "rb") as f:
                data = f.read()
            fields = data[data.rindex(b")") + 2:].split()
            if int(fields[16]) > 0:  # nice
                return None
            try:
                with open(f"{task}/schedstat", "rb") as f:
                    ran, waited = f.read().split()[:2]
                return (int(ran) + int(waited)) / 1e9
            except (OSError, ValueError):
                return (int(fields[11]) + int(fields[12])) * _TICK_SECONDS  # utime, stime
        except (OSError, ValueError, IndexError):
            return None

    def _sample(self, first: bool = False) -> float:
        wanted, seen = 0.0, {}
        for pid in self.pids:
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for tid in tids:
                now = self._wanted(f"/proc/{pid}/task/{tid}")
                if now is None:
                    continue
                key = (pid, int(tid))
                if not first:
                    wanted += max(0.0, now - self.last.get(key, 0.0))
                seen[key] = now
        self.last = seen
        return wanted

    def __call__(self) -> float:
        return self._sample()


SPARE_CORES = 0.5
"""``ThreadGovernor``: the catalog takes its second DuckDB thread while the job's other
processes want less than the cores minus the catalog's first thread minus this much."""
GOVERNOR_WINDOW_S = 0.1
"""... judged over at least this much wall time (shorter statements add to the next look)."""


class ThreadGovernor:
    """Runs the catalog on one DuckDB thread while the job's other processes (the model
    worker) want the other cores, on the configured threads (``duckdb_config``) once they
    leave one idle.

    A second thread costs ~9 % more CPU (parallel hash tables merged, work handed over) and
    pays only on an otherwise idle core. In the job at 1M lines the model worker takes the
    other core during the first half of the rules and leaves it idle in the second: a fixed
    setting is wrong for one of them. ``adjust`` looks at the CPU the worker wanted since the
    last decision (``ChildLoad``, ~0,25 ms for the worker's 17 threads) and sets ``threads``
    before the next statement. Only the job's own processes count: other work on the machine
    is not the job's to make room for (on one thread a loaded machine would halve the
    catalog's share), and at 10M, where the models run after the rules, the catalog keeps
    its two threads."""

    def __init__(self, con: duckdb.DuckDBPyConnection,
                 load: Callable[[], float] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.con, self.clock = con, clock
        self.most = self.current = int(con.execute(
            "SELECT current_setting('threads')").fetchall()[0][0])
        self.cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                      else os.cpu_count() or 1)
        self.load: Callable[[], float] | None = None
        if self.most > 1:
            self.load = load if load is not None else ChildLoad()
        self.since = clock()
        self.decisions: list[int] = []
        """The thread count of each decision, in order."""

    def adjust(self) -> None:
        if self.load is None:
            return
        now = self.clock()
        wall = now - self.since
        if wall < GOVERNOR_WINDOW_S or wall <= 0:
            return
        self.since = now
        busy = self.load() / wall  # cores the other processes wanted
        want = self.most if self.cores - 1 - busy >= SPARE_CORES else 1
        self.decisions.append(want)
        if want != self.current:
            self.con.execute(f"SET threads = {want}")
            self.current = want


def duckdb_config(temp_dir: Path, threads: int | None = None) -> dict[str, Any]:
    """Connection settings for the rule catalog (threads, memory limit, where to spill).

    ``threads`` (default ``DUCKDB_THREADS``): the most the catalog uses. With 1 it takes ~9 %
    less CPU at 1M lines (6.2 instead of 6.8 CPU s, no parallel hash tables to merge) but ~1.6x
    the wall time on an idle second core; ``ThreadGovernor`` takes it down to 1 only while
    the job's own model worker wants the other core."""
    temp_dir.mkdir(parents=True, exist_ok=True)
    return {"threads": threads or DUCKDB_THREADS, "memory_limit": DUCKDB_MEMORY_LIMIT,
            "temp_directory": str(temp_dir)}


def _reads_all_columns(query: str, table: str) -> bool:
    """Whether the query selects ``*`` straight from ``table`` (``SELECT * FROM bookings``,
    ``SELECT entity, * ...``, ``b.*`` of ``bookings b``, ``COLUMNS(*)``): its output then
    depends on every column.

    Decided on DuckDB's own parse tree (``json_serialize_sql``), so a star anywhere in a select
    list counts. A query it cannot serialise counts as reading every column: copying them all
    is always correct (such a query usually fails at run time anyway)."""
    tree = _parse_tree(strip_comments(query))
    if tree is None:
        return True
    return any(_node_reads_all(node, table.lower()) for node in _select_nodes(tree))


_PARSER: duckdb.DuckDBPyConnection | None = None
_PARSER_LOCK = threading.Lock()


@lru_cache(maxsize=256)
def _parse_tree_text(query: str) -> str:
    """DuckDB's parse tree of ``query`` as JSON, from one in-memory connection kept for the
    process: opening one per query cost ~13 ms each (~0.45 s for the catalog at start-up); the
    lock keeps that connection to one caller at a time."""
    global _PARSER
    with _PARSER_LOCK:
        if _PARSER is None:
            _PARSER = duckdb.connect(config={"threads": 1})
        return _PARSER.execute("SELECT json_serialize_sql(?)", [query]).fetchall()[0][0]


_PREPARSED: dict[str, str] = {}
"""Parse trees ``preparse`` got on the caller's connection (query -> JSON text)."""


def preparse(con: duckdb.DuckDBPyConnection, queries: list[str]) -> None:
    """Parse ``queries`` in one statement on ``con`` (the catalog's own connection): the
    process-wide parser connection costs ~0.02 CPU s to open and one statement per query
    ~0.02 more for the catalog. Only the caller's thread uses ``con``."""
    missing = sorted({q for q in queries if q not in _PREPARSED})
    if not missing:
        return
    if len(_PREPARSED) + len(missing) > 1024:  # bounded like the lru_cache: other catalogs
        _PREPARSED.clear()
    try:
        texts = con.execute("SELECT list_transform(?::VARCHAR[], "
                            "lambda q: json_serialize_sql(q))", [missing]).fetchall()[0][0]
    except duckdb.Error:  # left to the parser connection, query by query
        return
    _PREPARSED.update(zip(missing, texts, strict=True))


def _parse_tree(query: str) -> Any:
    try:
        text = _PREPARSED.get(query)
        tree = json.loads(text if text is not None else _parse_tree_text(query))
    except (duckdb.Error, ValueError):
        return None
    return None if tree.get("error") else tree


def _select_nodes(tree: Any) -> list[dict[str, Any]]:
    """Every SELECT of the tree (CTEs, subqueries, set operations included)."""
    found: list[dict[str, Any]] = []
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if item.get("type") == "SELECT_NODE":
                found.append(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _from_tables(ref: Any) -> list[tuple[str, str]]:
    """(table name, alias) of the base tables a FROM clause joins (not those of subqueries)."""
    if not isinstance(ref, dict):
        return []
    if ref.get("type") == "BASE_TABLE":
        return [(str(ref.get("table_name", "")).lower(), str(ref.get("alias") or "").lower())]
    if ref.get("type") == "JOIN":
        return _from_tables(ref.get("left")) + _from_tables(ref.get("right"))
    return []


def _nodes_of_class(expr: Any, cls: str) -> list[dict[str, Any]]:
    """Expressions of class ``cls`` (``STAR``: ``*``, ``t.*``, ``COLUMNS(...)``;
    ``COLUMN_REF``) in an expression tree, not looking into nested SELECTs (those are judged
    on their own FROM)."""
    found: list[dict[str, Any]] = []
    stack = [expr]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if item.get("type") == "SELECT_NODE" or "subquery" in item:
                continue
            if item.get("class") == cls:
                found.append(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _node_reads_all(node: dict[str, Any], table: str) -> bool:
    tables = _from_tables(node.get("from_table"))
    if not any(name == table for name, _ in tables):
        return False
    names = {alias or name for name, alias in tables if name == table}
    for star in _nodes_of_class(node.get("select_list", []), "STAR"):
        relation = str(star.get("relation_name") or "").lower()
        if not relation or relation in names:
            return True
    # the table's name as a column (``to_json(b)``) is the whole row as a struct
    return any(len(ref.get("column_names", [])) == 1
               and str(ref["column_names"][0]).lower() in names
               for ref in _nodes_of_class([v for k, v in node.items() if k != "from_table"],
                                          "COLUMN_REF"))


def _named(texts: list[str], names: list[str]) -> set[str]:
    return {n for n in names if any(re.search(rf"\b{n}\b", t, re.IGNORECASE) for t in texts)}


def catalog_columns(catalog: list[Rule], con: duckdb.DuckDBPyConnection | None = None
                    ) -> tuple[set[str] | None, set[str] | None]:
    """(booking columns, journal columns) the catalog can see: those a query names (or
    ``requires``); None (all) when a rule selects ``*`` from that view.

    Columns no rule names (``source_file``, ``source_line``, the journal's ``description`` ...)
    then need not be copied or aggregated for the whole history. Derived from the rule files,
    so a new rule needs no change here. ``con``: parse the queries on this connection (see
    ``preparse``) instead of the process-wide parser.
    """
    queries = [strip_comments(r.query) for r in catalog]
    if con is not None:
        preparse(con, queries)
    journal_queries = [q for q in queries if re.search(r"\bjournals\b", q, re.IGNORECASE)]
    journal_cols: set[str] | None = _named(journal_queries, list(JOURNAL_AGGREGATES))
    if any(_reads_all_columns(q, "journals") for q in journal_queries):
        journal_cols = None
    if any(_reads_all_columns(q, "bookings") for q in queries):
        return None, journal_cols
    booking_cols = set(KEY_COLUMNS) | _named(queries + [journals_select(journal_cols)],
                                             list(BOOKING_SCHEMA.names()) + list(DERIVED_COLUMNS))
    for rule in catalog:
        booking_cols |= set(rule.requires)
    return booking_cols, journal_cols


def materialise_inputs(con: duckdb.DuckDBPyConnection, columns: set[str] | None = None) -> None:
    """Scan the history once: every rule reads ``bookings`` (Parquet scan, casts, placeholder
    dates nulled) and the hit filter reads ``delivery_journals``; as views each rule would redo
    that work, as temp tables it is done once (the biggest saving of the catalog at 1M lines).

    ``columns`` (see ``catalog_columns``) limits the copy to the columns rules read; the others
    stay in ``bookings`` as typed nulls so every rule still sees the documented shape.
    """
    types = {n: _duck_type(t) for n, t in BOOKING_SCHEMA.items()}
    types.update({n: dtype for n, (_, dtype, _) in DERIVED_COLUMNS.items()})
    names = [n for n in types if columns is None or n in columns]
    con.execute("CREATE OR REPLACE TEMP TABLE _bookings AS SELECT "
                + ", ".join(quote_ident(n) for n in names) + " FROM _bookings_source")
    view = [quote_ident(n) if n in names else f"CAST(NULL AS {t}) AS {quote_ident(n)}"
            for n, t in types.items()]
    con.execute(f"CREATE OR REPLACE VIEW bookings AS SELECT {', '.join(view)} FROM _bookings")
    # no rule reads ``delivery`` line by line: it stays a view; the hit filter's journal keys
    # are copied by ``materialise_delivery_journals`` only when the filter is needed
    con.execute("CREATE OR REPLACE VIEW delivery_journals AS "
                "SELECT * FROM _delivery_journals_source")


def materialise_delivery_journals(con: duckdb.DuckDBPyConnection) -> None:
    """The delivery's journal keys as a temp table: one pass over the delivery's key columns
    instead of one per rule (the hit filter of every rule reads them)."""
    con.execute("CREATE OR REPLACE TEMP TABLE _delivery_journals AS "
                "SELECT * FROM _delivery_journals_source")
    con.execute("CREATE OR REPLACE VIEW delivery_journals AS SELECT * FROM _delivery_journals")


_SAME_FILE_VARIABLE = "belegwacht_delivery_file_is_history"
"""Set by ``connect`` when the history is one file with the delivery file's exact bytes."""


def _same_bytes(a: Path, b: Path, chunk: int = 1 << 20) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            x, y = fa.read(chunk), fb.read(chunk)
            if x != y:
                return False
            if not x:
                return True


def _history_files(con: duckdb.DuckDBPyConnection,
                   history_glob: str | Path | list[str | Path]) -> list[Path]:
    """The files ``read_parquet`` reads for ``history_glob``, listed by DuckDB's own ``glob``
    (Python's ``glob`` reads ``**`` as one level: it could list one file where DuckDB reads
    several)."""
    items = history_glob if isinstance(history_glob, list) else [history_glob]
    return [Path(row[0]) for item in items
            for row in con.execute("SELECT file FROM glob(?)", [str(item)]).fetchall()]


def delivery_is_whole_history(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether every journal of the history is in this delivery (a first load, a full
    re-export): the delivery filter would then keep every hit, so it is skipped (one semi join
    per rule against all journal keys, ~25 ms each at 1M lines). Compared with ``=`` like the
    filter itself: a journal with a null key is never "in the delivery".

    A first load's history partition is a byte copy of the delivery file (``history.merge``):
    ``connect`` then compares the bytes (~10 ms at 1M lines) and only null keys are left to
    check, instead of collecting the delivery's journal keys (~0.13 CPU s) and an anti join
    against all journals (~0.09 CPU s)."""
    if (con.execute(f"SELECT getvariable('{_SAME_FILE_VARIABLE}')").fetchall()[0][0]
            and con.execute("SELECT NOT EXISTS (SELECT 1 FROM _journals WHERE entity IS NULL "
                            "OR fiscal_year IS NULL OR journal_id IS NULL)").fetchall()[0][0]):
        return True
    # the filter may be needed: its journal keys are copied once here
    materialise_delivery_journals(con)
    return con.execute("SELECT NOT EXISTS (SELECT 1 FROM _journals j ANTI JOIN _delivery_journals d "
                       "ON j.entity = d.entity AND j.fiscal_year = d.fiscal_year "
                       "AND j.journal_id = d.journal_id)").fetchall()[0][0]


def connect(ctx: Any, history_glob: str | Path | list[str | Path],
            threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """An in-process DuckDB with the views the rules read (see ``setup_views``).

    ``history_glob`` is the entity's booking history (path, glob or list); the delivery keys
    come from ``ctx.run_dir / "bookings.parquet"``, master data from ``ctx.run_dir / "master"``.
    ``threads``: see ``duckdb_config``.
    """
    con = duckdb.connect(config=duckdb_config(Path(ctx.run_dir) / "tmp" / "duckdb", threads))
    source = _parquet_source(history_glob)
    cols = _columns_of(con, source)
    delivery_file = Path(ctx.run_dir) / "bookings.parquet"
    if "fiscal_year" not in cols:  # history partitioned by fiscal_year=<y> folders only
        source = source.replace("hive_partitioning = false", "hive_partitioning = true")
    else:
        files = _history_files(con, history_glob)
        same = len(files) == 1 and delivery_file.exists() and _same_bytes(files[0], delivery_file)
        con.execute(f"SET VARIABLE {_SAME_FILE_VARIABLE} = {'true' if same else 'false'}")
    delivery = _parquet_source(delivery_file)
    master_dir = Path(ctx.run_dir) / "master"
    masters = {name: _parquet_source(master_dir / f"{name}.parquet") for name in MASTER_NAMES
               if (master_dir / f"{name}.parquet").exists()}
    setup_views(con, source, delivery, masters, ctx.settings)
    return con


@dataclass
class Availability:
    """Which booking columns hold any value and which master data has rows."""

    columns: set[str]
    master: set[str]

    @classmethod
    def probe(cls, con: duckdb.DuckDBPyConnection) -> Availability:
        names = list(BOOKING_SCHEMA.names())
        counts = con.execute(
            "SELECT " + ", ".join(f"count({quote_ident(n)})" for n in names) + " FROM bookings"
        ).fetchall()[0]
        master = {name for name in MASTER_NAMES
                  if con.execute(f"SELECT count(*) FROM {name}").fetchall()[0][0] > 0}
        return cls({n for n, c in zip(names, counts, strict=True) if c}, master)

    def skip_reason(self, rule: Rule) -> str | None:
        missing_master = [m for m in rule.requires_master if m not in self.master]
        if missing_master:
            return f"needs {', '.join(missing_master)}"
        missing = [c for c in rule.requires if c not in self.columns]
        if missing:
            return f"needs column {', '.join(missing)} (empty in the data)"
        return None


def hit_sql(rule: Rule, columns: dict[str, str], params: dict[str, Any],
            delivery_only: bool, unique_keys: bool = False) -> str:
    """Wrap the rule query: key columns, rendered explanations, evidence JSON, delivery filter.

    The hits are ``DISTINCT`` (a query may return a row twice; a journal-level rule's rows of
    one journal may differ only in lines); ``unique_keys`` (see ``_rule_output``) says no two
    rows share the hit's key, so no two hits can be equal and the ``DISTINCT`` is left out."""
    evidence_cols = [c for c in columns if c not in KEY_COLUMNS]
    evidence = ("to_json(struct_pack(" + ", ".join(
        f"{quote_ident(c)} := h.{quote_ident(c)}" for c in evidence_cols) + "))::VARCHAR"
        if evidence_cols else "'{}'")
    line_no = "h.line_no" if "line_no" in columns else "NULL"
    if rule.level == "journal":
        line_no = "NULL"
    where = ("SEMI JOIN delivery_journals d ON h.entity = d.entity "
             "AND h.fiscal_year = d.fiscal_year AND h.journal_id = d.journal_id"
             if delivery_only else "")
    return f"""
        WITH h AS (SELECT * FROM _rule_out)
        SELECT {'' if unique_keys else 'DISTINCT '}{sql_literal(rule.id)} AS rule_id, {sql_literal(rule.family)} AS family,
               {sql_literal(rule.severity)} AS severity,
               CAST(h.entity AS VARCHAR) AS entity, CAST(h.fiscal_year AS INTEGER) AS fiscal_year,
               CAST(h.journal_id AS VARCHAR) AS journal_id, CAST({line_no} AS INTEGER) AS line_no,
               {template_sql(rule.explain['de'], columns, params, 'de')} AS explanation_de,
               {template_sql(rule.explain['en'], columns, params, 'en')} AS explanation_en,
               {evidence} AS evidence
        FROM h {where}
        """


def run_rule(con: duckdb.DuckDBPyConnection, rule: Rule, params: dict[str, Any],
             delivery_only: bool = True) -> pl.DataFrame:
    """Hits of one rule as a ``HIT_SCHEMA`` frame (all vectorised inside DuckDB)."""
    return run_rule_counted(con, rule, params, delivery_only)[0]


def run_rule_counted(con: duckdb.DuckDBPyConnection, rule: Rule, params: dict[str, Any],
                     delivery_only: bool = True) -> tuple[pl.DataFrame, int]:
    """Hits of one rule, and how many journals of the whole history it flags."""
    columns, flagged, unique = _rule_output(con, rule, params)
    try:
        frame = con.sql(hit_sql(rule, columns, params, delivery_only, unique)).pl()
    finally:
        con.execute("DROP TABLE IF EXISTS _rule_out")
    return frame.cast(dict(HIT_SCHEMA)).select(HIT_SCHEMA.names()), flagged


_KEY_TYPES = {"entity": "VARCHAR", "fiscal_year": "INTEGER", "journal_id": "VARCHAR",
              "line_no": "INTEGER"}
"""The hit's key columns in their ``HIT_SCHEMA`` types: keys already of these types are the
same values after the casts of ``hit_sql``."""


UNIQUE_CHECK_ROWS = 2000
"""A line-level rule's lines are checked for a unique key (to leave out the ``DISTINCT``) only
from this many rows of output on."""


def _rule_output(con: duckdb.DuckDBPyConnection, rule: Rule,
                 params: dict[str, Any]) -> tuple[dict[str, str], int, bool]:
    """Run the rule query into ``_rule_out``: (its columns -> DuckDB types, journals of the
    whole history it flags, whether no two rows share the hit's key).

    The key of a hit is the journal (journal-level rules) or the journal and a non-null line;
    where it is unique, every rendered hit differs from the others in its key, so the
    ``DISTINCT`` over the rendered hits (hashing their texts) can be left out."""
    used = {name: params[name] for name in query_params(rule.query)}
    con.execute(f"CREATE OR REPLACE TEMP TABLE _rule_out AS {rule.query}", used).fetchall()
    # the types of a bound relation, not ``DESCRIBE`` (same type names, ~4x cheaper)
    out = con.sql("SELECT * FROM _rule_out")
    columns = {name: str(dtype) for name, dtype in zip(out.columns, out.types, strict=True)}
    missing = [c for c in ("entity", "fiscal_year", "journal_id") if c not in columns]
    if rule.level == "line" and "line_no" not in columns:
        missing.append("line_no")
    if missing:
        raise ValueError(f"{rule.id}: query must select {', '.join(missing)}")
    # rows with null keys fall into one group here as in ``DISTINCT``
    flagged, rows = con.execute(
        "SELECT count(*), coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM _rule_out "
        "GROUP BY entity, fiscal_year, journal_id)").fetchall()[0]
    typed = all(columns[c] == t for c, t in _KEY_TYPES.items()
                if c != "line_no" or rule.level == "line")
    if rule.level == "journal":
        unique = typed and rows == flagged
    else:
        # a second pass over the lines pays only where the DISTINCT it saves hashes many hits
        unique = typed and rows >= UNIQUE_CHECK_ROWS and con.execute(
            "SELECT count(*) FROM (SELECT DISTINCT entity, fiscal_year, journal_id, line_no "
            "FROM _rule_out WHERE line_no IS NOT NULL)").fetchall()[0][0] == rows
    return columns, flagged, bool(unique)


_HITS_TABLE = "_catalog_hits"
"""The catalog's hits collect in this temp table (``HIT_SCHEMA``): one conversion to Polars
at the end instead of one per rule (~3 ms each) and a concat."""


def _create_hits_table(con: duckdb.DuckDBPyConnection) -> None:
    cols = ", ".join(f"{quote_ident(n)} {_duck_type(t)}" for n, t in HIT_SCHEMA.items())
    con.execute(f"CREATE OR REPLACE TEMP TABLE {_HITS_TABLE} ({cols})")


def _collect_hits(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """All collected hits, sorted by key (nulls first); ties by their texts, so the order does
    not depend on the order rules ran in."""
    frame = con.sql(f"SELECT * FROM {_HITS_TABLE}").pl()
    con.execute(f"DROP TABLE IF EXISTS {_HITS_TABLE}")
    # sorted by Polars: ~2x cheaper than ORDER BY in DuckDB before the conversion
    return frame.cast(dict(HIT_SCHEMA)).select(HIT_SCHEMA.names()).sort(
        ["entity", "fiscal_year", "journal_id", "line_no", "rule_id", "explanation_de",
         "explanation_en", "evidence"], nulls_last=False)


@dataclass
class RuleRunResult:
    hits: pl.DataFrame
    ran: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    noisy: list[dict[str, str]] = field(default_factory=list)
    """Rules whose hits were dropped because they flag a large share of all journals."""
    durations: dict[str, float] = field(default_factory=dict)
    path: Path | None = None
    history_journals: dict[str, int] = field(default_factory=dict)
    """Journals of the whole history each rule that ran flags (before the delivery filter)."""
    history_population: int = 0
    """Journals in the whole history: the denominator of ``history_journals``."""
    threads: dict[str, int] = field(default_factory=dict)
    """DuckDB threads ``ThreadGovernor`` gave the history copy (``copy``), ``journals`` and
    each rule that ran."""

    def history_rates(self) -> dict[str, float]:
        """Share of the history's journals each rule flags. Scoring weighs a rule's hits by
        this instead of the delivery's rate, so a nightly delta of 300 journals scores a
        journal as the full re-export would."""
        if self.history_population <= 0:
            return {}
        return {rule_id: n / self.history_population
                for rule_id, n in sorted(self.history_journals.items())}

    def hits_per_rule(self) -> dict[str, int]:
        if self.hits.is_empty():
            return {}
        counts = self.hits.group_by("rule_id").len().sort("rule_id")
        return dict(zip(counts["rule_id"].to_list(), counts["len"].to_list(), strict=True))

    def summary(self) -> dict[str, Any]:
        reasons: dict[str, int] = {}
        for s in self.skipped:
            reasons[s["reason"]] = reasons.get(s["reason"], 0) + 1
        skipped_text = ""
        if self.skipped:
            skipped_text = f", {len(self.skipped)} skipped (" + "; ".join(
                f"{n} {reason}" if n > 1 else reason for reason, n in sorted(reasons.items())) + ")"
        failed_text = f", {len(self.failed)} FAILED" if self.failed else ""
        if self.noisy:
            failed_text += (f", {len(self.noisy)} dropped as too broad for this data ("
                            + ", ".join(n["rule_id"] for n in self.noisy) + ")")
        journals = self.hits.select(["entity", "fiscal_year", "journal_id"]).unique().height \
            if self.hits.height else 0
        headline = [f"rules: {len(self.ran)} run{skipped_text}{failed_text}, "
                    f"{self.hits.height} hits on {journals} journals"]
        headline += [f"rule {f['rule_id']} failed: {f['reason']}" for f in self.failed]
        return {
            "headline": headline,
            "ran": self.ran,
            "skipped": self.skipped,
            "failed": self.failed,
            "noisy": self.noisy,
            "hits": self.hits.height,
            "journals_hit": journals,
            "hits_per_rule": self.hits_per_rule(),
            "history_population": self.history_population,
            "history_journals": dict(sorted(self.history_journals.items())),
            "durations": {k: round(v, 3) for k, v in self.durations.items()},
            "threads": self.threads,
        }


def check_rule_settings(settings: Settings, catalog: list[Rule], log: Any = None) -> None:
    """A misspelt parameter in ``[rules.<ID>]`` must not be ignored silently."""
    by_id = {r.id: r for r in catalog}
    for rule_id, values in settings.rules.items():
        rule = by_id.get(rule_id)
        if rule is None:
            if log is not None:
                log.warn(f"belegwacht.toml [rules.{rule_id}]: no such rule in the catalog")
            continue
        known = {p.name for p in rule.params} | set(rule.config_params) | {"enabled",
                                                                             "max_hit_share"}
        unknown = sorted(set(values) - known)
        # an engine column follows the entity's settings: a per-rule value would be ignored
        query = strip_comments(rule.query)
        for name, (_, _, setting) in DERIVED_COLUMNS.items():
            if setting in values and re.search(rf"\b{name}\b", query, re.IGNORECASE):
                raise ConfigError(
                    f"[rules.{rule_id}] {setting}: {rule_id} reads the engine column {name}, "
                    f"which follows {setting} of the entity, not of one rule",
                    file="belegwacht.toml", hint=f"set {setting} for the entity instead")
        if unknown:
            raise ConfigError(f"[rules.{rule_id}] has unknown parameter(s) {', '.join(unknown)}",
                              file="belegwacht.toml",
                              hint=f"parameters of {rule_id}: {', '.join(sorted(known))}")


def run_catalog(con: duckdb.DuckDBPyConnection, settings: Settings, catalog: list[Rule],
                delivery_only: bool = True, log: Any = None) -> RuleRunResult:
    """Run every enabled, runnable rule; never a Python loop over rows, one query per rule."""
    check_rule_settings(settings, catalog, log)
    governor = ThreadGovernor(con)
    booking_cols, journal_cols = catalog_columns(
        [r for r in catalog if settings.rule_enabled(r.id)], con)
    threads: dict[str, int] = {}
    governor.adjust()
    threads["copy"] = governor.current
    materialise_inputs(con, booking_cols)
    governor.adjust()
    threads["journals"] = governor.current
    # many journal-level rules read `journals`: aggregate the history once, not once per rule
    con.execute(f"CREATE OR REPLACE TEMP TABLE _journals AS {journals_select(journal_cols)}")
    con.execute("CREATE OR REPLACE VIEW journals AS SELECT * FROM _journals")
    available = Availability.probe(con)
    population = con.execute("SELECT count(*) FROM _journals").fetchall()[0][0]
    if delivery_only and delivery_is_whole_history(con):
        delivery_only = False
    result = RuleRunResult(hits=pl.DataFrame(schema=HIT_SCHEMA), history_population=population)
    _create_hits_table(con)
    for rule in catalog:
        if not settings.rule_enabled(rule.id):
            result.skipped.append({"rule_id": rule.id, "reason": "disabled in belegwacht.toml"})
            continue
        reason = available.skip_reason(rule)
        if reason:
            result.skipped.append({"rule_id": rule.id, "reason": reason})
            continue
        params = effective_params(rule.id, rule.defaults(), rule.config_params, settings)
        governor.adjust()
        threads[rule.id] = governor.current
        started = time.perf_counter()
        try:
            columns, journals, unique = _rule_output(con, rule, params)
            sql = hit_sql(rule, columns, params, delivery_only, unique)
            limit = float(settings.rules.get(rule.id, {}).get("max_hit_share", MAX_HIT_SHARE))
            # judged on the whole history, so a delivery of weekend entries still gets reported
            noisy = population >= MIN_POPULATION and journals > limit * population
            # a noisy rule's hits are dropped: its hit query is only bound (a broken template
            # still fails the rule), not rendered
            con.execute(f"SELECT * FROM ({sql}) LIMIT 0" if noisy
                        else f"INSERT INTO {_HITS_TABLE} BY NAME {sql}")
            result.ran.append(rule.id)
            result.history_journals[rule.id] = int(journals)
            if noisy:
                reason = (f"flagged {journals} of {population} journals ({journals / population:.0%})"
                          f" - a property of this data rather than an anomaly; hits dropped "
                          f"(max_hit_share {limit})")
                result.noisy.append({"rule_id": rule.id, "reason": reason})
                if log is not None:
                    log.warn(f"rule {rule.id} {reason}", rule_id=rule.id)
        except (duckdb.Error, ValueError, KeyError) as exc:
            message = str(exc).splitlines()[0][:300]
            result.failed.append({"rule_id": rule.id, "reason": message})
            if log is not None:
                log.warn(f"rule {rule.id} failed: {message}", rule_id=rule.id)
        result.durations[rule.id] = time.perf_counter() - started
    # the next rule's ``CREATE OR REPLACE`` replaces ``_rule_out`` (a rule whose query fails
    # never reads it): dropped once here, not after every rule
    con.execute("DROP TABLE IF EXISTS _rule_out")
    result.hits = _collect_hits(con)
    if governor.current != governor.most:  # the connection as the caller configured it
        con.execute(f"SET threads = {governor.most}")
    result.threads = threads
    return result


def run_rules(con: duckdb.DuckDBPyConnection, ctx: Any, master: Any = None) -> RuleRunResult:
    """Run the catalog for one run and write ``ctx.run_dir / "rule_hits.parquet"``.

    ``master`` is accepted for the signature in docs/CONTRACTS.md; master data comes from the
    views ``connect`` created.
    """
    started = time.perf_counter()
    result = run_catalog(con, ctx.settings, load_catalog(),
                         delivery_only=not getattr(ctx, "rescore_history", False),
                         log=getattr(ctx, "log", None))
    path = Path(ctx.run_dir) / "rule_hits.parquet"
    result.hits.write_parquet(path)
    result.path = path
    result.durations["total"] = time.perf_counter() - started
    log = getattr(ctx, "log", None)
    if log is not None:
        log.event("rules_done", **{k: v for k, v in result.summary().items()
                                   if k in ("hits", "skipped", "failed")})
    return result


def evidence_of(hits: pl.DataFrame) -> list[dict[str, Any]]:
    """Decode the evidence JSON (for tests and debugging; not used on the hot path)."""
    return [json.loads(e) for e in hits["evidence"].to_list()]
