"""Human-readable views of the catalog: the terminal table, a rule's documentation page (like
ruff's rule docs) and the Markdown catalog in docs/rules.md - all generated from the rule files.
"""

from __future__ import annotations

import textwrap
from typing import Any

from detect.config import Settings
from detect.rules.model import Param, Rule
from detect.rules.params import CONFIG_PARAMS

HEADINGS = {
    "de": {"what": "Was sie prüft", "why": "Warum", "params": "Parameter",
           "config": "Aus belegwacht.toml", "fp": "Bekannte Fehlalarme", "needs": "Benötigt",
           "example": "Beispiel", "scenarios": "Szenarien", "none": "keine",
           "severity": "Schweregrad", "level_word": "Ebene", "family": "Familie",
           "title": "Titel", "rules": "Regeln", "english_only": "(nur auf Englisch)",
           "level": {"line": "Zeile", "journal": "Beleg"},
           "sev": {"low": "niedrig", "medium": "mittel", "high": "hoch", "critical": "kritisch"}},
    "en": {"what": "What it does", "why": "Why", "params": "Parameters",
           "config": "From belegwacht.toml", "fp": "Known false positives", "needs": "Needs",
           "example": "Example", "scenarios": "Scenarios", "none": "none",
           "severity": "severity", "level_word": "level", "family": "family",
           "title": "title", "rules": "rules", "english_only": "",
           "level": {"line": "line", "journal": "journal"},
           "sev": {"low": "low", "medium": "medium", "high": "high", "critical": "critical"}},
}


def needs(rule: Rule) -> str:
    return ", ".join(rule.requires + [f"master:{m}" for m in rule.requires_master])


def _value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def format_catalog_table(catalog: list[Rule], lang: str = "de") -> str:
    """Plain-text table for ``belegwacht rules list``."""
    h = HEADINGS[lang]
    rows = [(r.id, h["sev"][r.severity], h["level"][r.level], r.title[lang], needs(r))
            for r in catalog]
    header = ("ID", h["severity"], h["level_word"], h["title"], h["needs"])
    widths = [max(len(str(x[i])) for x in [header, *rows]) for i in range(4)]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(header[:4], widths, strict=True))
             + "  " + header[4]]
    lines.append("  ".join("-" * w for w in widths) + "  " + "-" * len(header[4]))
    for row in rows:
        lines.append("  ".join(str(v).ljust(w) for v, w in zip(row[:4], widths, strict=True))
                     + "  " + row[4])
    lines.append(f"{len(catalog)} {h['rules']}")
    return "\n".join(lines)


def describe_rule(rule: Rule, lang: str = "de") -> str:
    """The rule's documentation in the terminal: what, why, parameters, false positives, example.

    Texts a third-party rule has only in English are shown in English, marked as such.
    """
    h = HEADINGS[lang]
    settings = Settings()
    out = [f"{rule.id} {rule.name}: {rule.title[lang]}",
           f"{h['severity']} {h['sev'][rule.severity]}, {h['level_word']} "
           f"{h['level'][rule.level]}, {h['family']} {rule.family}"
           + (f", tags {', '.join(rule.tags)}" if rule.tags else ""),
           "", f"{h['what']}:", _wrap(rule.title["en" if lang == "en" else "de"] + ". "
                                     + _what(rule, lang)),
           "", f"{h['why']}{_english_only(rule.why, lang)}:", _wrap(rule.why_text(lang)),
           "", f"{h['needs']}: {needs(rule)}"]
    if rule.scenarios:
        out.append(f"{h['scenarios']}: {', '.join(rule.scenarios)}")
    out += ["", f"{h['params']}:"]
    if not rule.params and not rule.config_params:
        out.append(f"  ({h['none']})")
    for p in rule.params:
        doc = p.doc_text(lang)
        out.append(f"  {p.name} = {_value(p.default)}" + (f"  – {doc}" if doc else ""))
    for name in rule.config_params:
        where, read = CONFIG_PARAMS[name]
        out.append(f"  {name} = {_value(read(settings))}  – {h['config']}: {where}")
    out += ["", f"{h['fp']}{_english_only(rule.falsepositives, lang)}:"]
    out += [f"  - {fp}" for fp in rule.falsepositives_list(lang)]
    out += ["", f"{h['example']}:"]
    out += [f"  {line}" for line in (rule.example or _example(rule)).splitlines()]
    out += ["", "Query:"] + [f"  {line}" for line in rule.query.rstrip().splitlines()]
    out += ["", f"({rule.path})"]
    return "\n".join(out)


def _wrap(text: str) -> str:
    """Indented paragraph; hyphens do not break, so "Vergabe-Wertgrenze" stays whole."""
    return textwrap.fill(text, 92, initial_indent="  ", subsequent_indent="  ",
                         break_on_hyphens=False)


def _english_only(texts: dict[str, Any], lang: str) -> str:
    """" (nur auf Englisch)" after a heading whose text the rule file has only in English."""
    note = HEADINGS[lang]["english_only"]
    return f" {note}" if note and lang not in texts else ""


def _what(rule: Rule, lang: str) -> str:
    if lang == "de":
        unit = "Zeilen" if rule.level == "line" else "Belege"
        return f"Markiert {unit} mit der Begründung: „{rule.explain['de']}“"
    unit = "lines" if rule.level == "line" else "journals"
    return f'Flags {unit} and explains each as: "{rule.explain["en"]}"'



def _example(rule: Rule) -> str:
    """First flagging case as a compact table (the rule's own proof)."""
    case = next((c for c in rule.cases if c.flags), rule.cases[0])
    cols = list(dict.fromkeys(k for r in case.rows for k in r))
    lines = [f"case {case.name}:", "  " + " | ".join(cols)]
    lines += ["  " + " | ".join(str(r.get(c, "")) for c in cols) for r in case.rows[:8]]
    if case.expect is not None:
        lines.append("  -> flags " + ", ".join(
            f"{j}" + ("" if n is None else f"/{n}") for j, n in case.expect))
    else:
        lines.append(f"  -> {case.count} hits")
    return "\n".join(lines)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


INTRO = """\
Belegwacht's audit rules are data, not code: one YAML file per rule in `rules/<family>/<ID>.yaml`.
Each file holds the rule's metadata, a plain-language explanation, parameters with defaults,
known false positives, one DuckDB SQL query that selects the offending lines or journals, and
its own test cases. Adding a rule means adding a file; the engine (`detect/rules/`) needs no
change. Every text an auditor reads (title, why, explanation, known false positives) is in
German and English; German is the default (`--lang en` or the app's language switch for
English).

## Using the rules

- `belegwacht rules list [--lang en]` – the catalog as a table.
- `belegwacht rules show ID [--lang en]` – a rule's documentation: what, why, parameters and
  their current defaults, known false positives, an example and the query.
- `belegwacht rules test [ID] [-v]` – runs the rules' own cases (exit 1 if one fails).
- Every nightly run (`belegwacht run`) runs the whole catalog over the entity's booking
  *history* (so a duplicate payment spanning two deliveries is found) and keeps the hits on
  journals of the current delivery (`--rescore-history` keeps all). Hits go to
  `runs/<run_id>/rule_hits.parquet`: `rule_id, family, severity, entity, fiscal_year,
  journal_id, line_no` (null for journal-level rules), `explanation_de`, `explanation_en`
  (rendered inside DuckDB, German amounts as `1.234,56 €`) and `evidence` (JSON of the
  query's other columns). The run summary says how many rules ran, which were skipped and why.

## Configuring per entity (belegwacht.toml)

```toml
[rules.PAY001]          # any parameter of the rule
window_days = 180
[rules.BEN002]
enabled = false         # switch a rule off
[thresholds]
procurement = [1000, 3000, 25000, 100000]   # Vergabe-Wertgrenzen (PRC001, PRC002)
materiality = 50000
approval_margin = 0.05
[office_hours]
start_hour = 6
end_hour = 20
[entities.Nebenstadt.rules.TIM006]
period_close_days = 20
```

A misspelt parameter under `[rules.<ID>]` stops the run with a message listing the rule's
parameters. Shared values come from the settings and are listed per rule under "from belegwacht.toml":
procurement thresholds, materiality, approval margin, office hours and workdays, description
keywords, service and generic users, `manual_sources` (values of `source` that mean "keyed in
by a person"; an empty source counts as manual), currency. Public holidays come from the
`holidays` package for `country` / `state` (Bundesland). Approval limits and service accounts
come from the users master, cash/bank accounts from the accounts master (`account_type` bank
or cash; otherwise the `cash_account_prefixes` parameter).

## When a rule is skipped

A rule is skipped (and the run summary names it with the reason) when a column it `requires`
is empty in the whole history (e.g. `needs column reversal_of (empty in the data)`), when
master data it `requires_master` is absent (`needs vendor_changes`), or when it is disabled.
A rule whose query fails at run time is reported as failed; the other rules still run.

A rule that flags more than 20 % of the journals of the whole history (once it has at least
200) describes the data rather than anomalies - e.g. "missing description" on an export
without line texts, "backdated" on a system that keys everything weeks later. Its hits are
dropped and the run summary says so ("dropped as too broad for this data"); set
`max_hit_share` under `[rules.<ID>]` to keep them. Placeholder dates (`validation.
placeholder_dates`, e.g. 1900-01-01) count as unknown for all rules.

## Writing a rule

```yaml
id: PAY001                      # 2-5 capitals + 3 digits; the file is rules/<family>/PAY001.yaml
name: duplicate-payment         # kebab-case
title: {de: ..., en: ...}
severity: high                  # low | medium | high | critical
level: line                     # line | journal (journal hits have line_no null)
tags: [payments, isa-240]
requires: [vendor_id, reference, amount]     # canonical columns
requires_master: []             # accounts | vendors | vendor_changes | users | cost_centers
params:                         # doc in both languages (or a plain English text)
  window_days: {default: 365, doc: {de: "so viele Tage zurück", en: "look back this many days"}}
config_params: [materiality]    # shared values from belegwacht.toml
scenarios: [duplicate_payment]  # sample-ledger scenarios the rule is meant to catch
why:                            # plain language for auditors, German and English
  de: Dieselbe Rechnung doppelt bezahlt ist der häufigste Schaden in der Kreditorenbuchhaltung.
  en: The same invoice paid twice is the most common loss in accounts payable.
explain:                        # {column} or {column:money|num|int|pct|date|datetime|list|text}
  de: "{amount} an {vendor_id} wurde schon am {first_date} gebucht."
  en: "{amount} to {vendor_id} was already booked on {first_date}."
falsepositives:                 # the same items in both languages, in the same order
  de: [Ratenzahlungen, die die Rechnungsnummer wiederverwenden]
  en: [Instalments that reuse the invoice reference]
query: |                        # DuckDB SQL; $name for parameters
  SELECT entity, fiscal_year, journal_id, line_no, ... FROM bookings WHERE ...
cases:                          # at least one flagging and one passing case
  - name: flags_second_payment
    columns: [journal_id, vendor_id, reference, amount, posting_date]
    rows:
      - [J1, V1, RE-100, 1200.00, 2024-03-01]
      - [J2, V1, RE-100, 1200.00, 2024-03-20]
    master: {vendors: [{vendor_id: V1, created_at: 2019-01-10}]}   # optional
    params: {window_days: 30}                                       # optional
    settings: {state: BY}                                           # optional
    expect: [[J2, 1]]           # or [J2] for journal-level rules, or {count: n}
```

Queries may read these views: `bookings` (the canonical history, `detect.schema`), `journals`
(one row per journal: first posting/document/entry date, entered_by, approved_by, source,
document_type, reversal_of, n_lines, `debit_total`, `balance`), `delivery` (keys of this run's
lines), `holidays` (date, name) and the master views `accounts`, `vendors`, `vendor_changes`,
`users`, `cost_centers` (empty when not delivered). Besides the canonical columns, `bookings`
and `journals` carry engine columns, computed once per run (and copied with the history only
when a rule names them) instead of once per rule and line: `manual_entry` (true when the
line's / the journal's `source` is one of the `manual_sources` setting, compared in lower
case; an empty source counts as manual - the same as `coalesce(list_contains($manual_sources,
lower(source)), true)`, ~0,03 CPU s less per rule at 1M lines). A rule that reads one lists
the setting under `config_params` all the same (so `rules show` names it); the column follows
the entity's settings, and a `[rules.<ID>]` value of that setting for such a rule stops the
run with a message (it would be ignored). The query must return `entity,
fiscal_year, journal_id` (and `line_no` for line rules); every other column becomes evidence
and may be used in the explanation. Case rows fill unspecified columns with harmless defaults
(entity Musterstadt, posting date Thursday 14.03.2024, entered 10:00 by MEIER, approved by
SCHULZ, source manual, account 4000, amount 100,00 €); a value given as `null` stays null.
The engine validates every file when loading and refuses a broken one with a message naming
the file and each problem. This page is generated: `python -m detect.rules.doc` (it also
refreshes the catalog table in README.md between `<!-- rules:begin -->` and
`<!-- rules:end -->`; `--check` fails when either file is out of date).

Languages: `title` and `explain` always need both `de` and `en`. `why`, `falsepositives` and
a parameter's `doc` may instead be a plain text / plain list - that form counts as **English
only** and is meant for third-party rule files: German output (`rules show`, the app) then
shows the English text, and `rules show` marks the why and the false positives "(nur auf
Englisch)". Every rule shipped in `rules/` has both languages (the test suite enforces it).

## Known limits

- Sign conventions: invoices are the credit line of a creditor (`vendor_id` set, no payee
  `bank_account`), payments the debit line or a line with a payee bank account
  (`invoice_sign` / `payment_sign` parameters).
- Benford tests (BEN001, BEN002) are population tests: they flag every over-represented line
  of a nonconforming user or account group, and only for groups of at least `min_n` amounts.
- History-wide rules (rare user, rare account, usual accounts, Benford) need some history to
  be meaningful; their population guards keep them quiet on small ledgers.
- Tuned on the synthetic sample ledger (`sample_data`): on 20.000 lines every scenario is
  caught by its rules; on 1 million lines most are caught fully, amount outliers (~55 %),
  rare account pairs (~60 %) and bank changes before payment (~80 %) less often. Benford
  rules flag a few percent of journals on synthetic data (low severity).
- Performance: see the next section.

## Performance

The catalog runs inside one DuckDB connection (2 threads, `memory_limit` 3 GB, spilling to the
run's `tmp/duckdb`). Setup does the shared work once: the history is copied into a temporary
table with only the columns the enabled rules name (found in the query texts and `requires`;
a rule whose select list has a star over `bookings` - `*` anywhere in it, `b.*`,
`COLUMNS(*)`, or the row as a struct, decided on DuckDB's parse tree - gets every column),
`journals` is aggregated once with only the columns rules read (the others are typed nulls),
and the delivery filter is skipped when this delivery holds every journal of the history
(first load, full re-export: it would keep every hit anyway; a first load's history file is a
byte copy of the delivery file, so a byte comparison decides it without collecting the
delivery's journal keys). Then each rule is one query; its hits are rendered into one temp
table and converted to Polars once at the end (a rule dropped as too broad is only bound,
its hits are not rendered).

`rules.connect(ctx, history, threads=1)` runs the catalog on one DuckDB thread: ~9 % less CPU
at 1M lines (6,2 instead of 6,8 CPU s, median of 3) for ~1,6x the wall time when the second
core is free. The default stays 2, but the engine takes the second thread only while the job's
own other processes leave a core idle (`ThreadGovernor`, round 7): before the history copy,
`journals` and each rule (at least 0,1 s after its last look) it reads how much CPU the
threads of its child processes - the model worker - wanted since then (`ChildLoad`: run plus
run-queue wait from `/proc/<pid>/task/<tid>/schedstat`, niced threads such as GX's left out,
since they yield their core) and sets DuckDB's `threads` to 1 while they want more than half a
core of the one the catalog's first thread leaves, back to 2 once they do not. In the job at
1M lines the model worker takes the other core during the first half of the rules and leaves
it idle in the second: a fixed setting is wrong for one of them (one thread for the whole
stage took 6,0 / 6,4 CPU s for the `rules` step against 6,8 / 7,0 with two in round 4, at
about the same wall time). Other work on the machine does not count: it is not the job's to
make room for, and a machine loaded by others would otherwise halve the catalog's share
(measured: a 10M run at load ~10 took 159 s for `rules` on one thread against 86-97 s on two).
At 10M (more than `[models] worker_max_lines`) the models run after the rules: two threads
throughout. `RuleRunResult.threads` (and `threads` of the manifest's `rules`) says what each
step got; without `/proc` (not Linux) the connection keeps its configured threads.

Measured on the 1 million line sample ledger (`bench/cache/ledger_1000000_7`, 493.426
journals; the machine's 2 cores shared with other work, so before and after were run back to
back under the same load; CPU seconds of the rule query alone):

| rule | before | after | what changed |
|---|---|---|---|
| AMT004 | 1,75 | 0,34 | account medians as one aggregate; the similarity window sorts only lines of at least half a candidate's size |
| USR006 | 1,57 | 0,16 | user/account counts as aggregates instead of three windows over every line |
| TXT001 | 1,35 | 0,43 | one pass; digits folded only for lines containing a keyword (an exact superset) |
| ACC002 | 1,26 | 0,47 | debit/credit accounts per journal in one aggregate, pairs without DISTINCT, pair counts aggregated |
| PAY002 | 1,26 | 0,33 | window only over groups with at least two lines |
| ACC003 | 1,17 | 0,24 | journal facts aggregated for journals of candidate lines only |
| JRN003 | 0,69 | 0,19 | min/max per journal first, exact distinct counts for mixed journals only |
| PAY001 | 0,64 | 0,29 | window only over repeated keys (grouped by a key hash) |
| ACC001 | 0,56 | 0,07 | counts as aggregates |
| AMT005 | 0,44 | 0,21 | window only over groups that can repeat |
| AMT002 | 0,34 | 0,06 | integer pre-check of the trailing nines before formatting |
| BEN001/002 | 0,34/0,41 | 0,22/0,32 | one digit count per user and account group, lines looked up for flagged groups only |
| AMT001 | 0,20 | 0,12 | journal vendors only for journals with a round line |
| PAY004 | 0,23 | 0,06 | change history looked up for rarely used accounts only (at 10M: 9,9 → 0,5) |
| PAY005 | 0,27 | 0,18 | payments joined to changes by vendor and time bucket (at 10M: 4,4 → 3,0) |
| TIM007 | 0,19 | 0,06 | dates only of reversed journals |
| all 34 | 14,2 | 5,2 | the others unchanged (< 0,35 each) |

The whole stage (setup, 34 rules, hits file): before 8,4 s wall / 14,8 CPU s on a quiet
machine (reference run); run back to back under the same load (4-7 on 2 cores),
`connect` + `run_rules` on the history of one 1M run took 17,7 CPU s / 38 s wall before and
7,0 CPU s / 8-12 s wall after; in a whole job at load 3,6: 7,5 s wall / 6,9 CPU s (that
figure also holds CPU of threads other stages leave running). Hits, their texts and evidence and the per-rule `history_journals` are identical
(54.265 hits). Check it yourself: `belegwacht run bench/cache/ledger_1000000_7/ads --data-dir
/tmp/x/var -q`, then `step_done` of `rules` in `runs/<id>/run.log.jsonl` and
`rules.durations` in the manifest.

At 10 million lines (`bench/cache/ledger_10000000_7`, 4,9 million journals) the stage took
45 s wall / 83 CPU s in the round-2 benchmark (`bench/results/bench_10000000.md`, whole job
122 s wall, 4.65 GB), the largest stage of the job; DuckDB stays within its 3 GB
`memory_limit` and spills beyond it. Two rules grew with the square of the history (every
payment of a vendor joined with every change of its bank details: PAY004, PAY005); both are
fixed above. The rest grows about
linearly; the largest are ACC002 (debit/credit pairs of every journal), TXT001 (a keyword
test over every line's text), AMT004, BEN001/BEN002, PAY001/PAY002 and PRC002 (windows over
the vendor lines that are left).

Round 3 (CPU seconds count: the model worker process takes the other core). Rule queries on
the 1M history, CPU s, min of 3 runs each, before (3a5b883) / after: JRN002 0,50 / 0,22 (its
journal-id regex ran three times per journal: a filter on it was pushed into the scan; the
sort by number was never the cost), ACC003 0,24 / 0,17 (line kinds inlined into their
readers instead of copied); the other 32 unchanged within noise (all 34: 4,65 / 4,46). The
engine: a first load skips collecting the delivery's journal keys and the anti join (~0,2
CPU s), the hits go through one temp table and one Polars conversion (~0,1 CPU s).
`connect` + `run_rules` alone (`time.process_time()` around them on a fresh 1M run's
`history/` and `bookings.parquet`, median of 3, load 4-7): 7,1 -> 6,8 CPU s; in
the whole job (3 alternating runs each at load ~7, step `rules` of `run.log.jsonl`): 6,8 ->
6,7 CPU s. Same 54.265 hits, texts, evidence and `history_journals`. At 10M (one run each,
loaded machine): 79,8 s wall / 73,7 CPU s before, 72,8 s / 70,5 CPU s after (JRN002 6,1 ->
3,8 s), 577.393 identical hits.

Round 4 (issue #10, CPU of the stage on the critical path): `catalog_columns` parsed each query
on a new DuckDB connection (~13 ms each, 35 queries): one in-process connection for the parse
trees takes it from 0,46 to 0,07 CPU s; PRC002 windows only the vendors that have a clerk with
two candidate parts (75.614 -> 59.700 lines, 0,26 -> 0,22 CPU s, min of 5); TIM002 joins
holidays by two equalities instead of one OR, which ran as a nested loop over the manual
journals (0,075 -> 0,036); USR006 inlines its line CTE (0,15 -> 0,14); TIM007 takes the
reversed journals' first posting date from `journals` instead of their lines (0,077 -> 0,051).
`connect` + `run_catalog` alone (`time.process_time()` around them on the history and
`bookings.parquet` of a finished 1M run, 3 alternating runs): 6,43-6,50 -> 6,09-6,14 CPU s at
load 6-8 with the first two changes, 6,77-7,16 -> 6,23-6,47 at load ~9 with the first four; the
same 54.265 hits, texts and evidence. With `threads=1` on top, ~0,6 CPU s less. In the whole
job (`belegwacht run bench/cache/ledger_1000000_7/ads`, step `rules` of `run.log.jsonl`, 2
alternating runs each at load 8-10, the model worker beside it): 7,80-7,86 -> 6,94-7,45 CPU s
(a new connection per parse costs more on a crowded machine). At 10M (one run, load ~9, another
10M job beside it): `rules` 97,3 s wall / 72,2 CPU s (round 3: 72,8 s / 70,5 on a less loaded
machine), the same 577.393 hits, peak RSS of the job 4,65 GB.

Where the rest goes (CPU s at 1M, min of 3): `connect` 0,17 (years 0,05, holiday calendar
0,06), copy of the history 0,45 (Parquet decode ~0,2, writing 13 string columns into the temp
table ~0,3; the copy from the in-memory table costs as much), `journals` 0,39 (the key group-by
alone 0,11, the two `arg_min` 0,13, the two string `max` 0,08), the 34 queries ~4,6 (their
fixed cost on empty tables: 0,12 in all), per rule `DESCRIBE` + journal count + rendering the
hits 0,46 in all (BEN002's 29.946 hits 0,08 of it).

Measured in round 4 and left (no gain beyond noise, or worse): `preserve_insertion_order =
false` (for the copy, `journals` and the queries), DuckDB's allocator flush thresholds and
`block_allocator_memory`, `enable_progress_bar = false`; `import holidays` on first use (12 ms
once `importlib.metadata` is loaded, and TIM002 needs it in every default run); grouping
PAY002's and AMT005's repeat candidates by a key hash with the line CTE inlined (same CPU);
JRN002 with anti joins for run starts/ends and an ASOF join instead of the window (0,25 ->
0,32) and `rtrim` instead of the trailing-digit regex (slower); TXT001 trimming texts only
for kept lines; AMT004 with its line CTE inlined; ACC003's account kinds per distinct account;
BEN001/BEN002 with the digit CTE inlined (0,20 -> 0,34 / 0,28 -> 0,40); ACC002 from one
per-journal aggregate of account lists (`list_distinct(list(gl_account))`, debit and credit
lists unnested into pairs: no journal/account group-by and no self-join, but 0,46 -> 0,72:
list aggregates over 493.426 journals cost more than both). A hash journal key
(`hash(entity, fiscal_year, journal_id)`) groups 1M lines by journal in 0,04 instead of 0,11
CPU s, but carrying the key columns through the group-by (`any_value`) eats the gain; worth
it only for rules that can key their whole pipeline on it (ACC002, JRN003: ~0,2 together) and
would need a collision check in the engine.

Measured and left: a dense integer journal key in the history copy (joining it back costs
0,55 CPU s, the journal group-bys it would speed up save ~0,1 each); one regex without
`lower()` for TXT001's prefilter (RE2's case folding misses `İ`, the exact fix costs what it
saves); ACC002 from per-journal min/max accounts (string min/max aggregates cost more than
its journal/account group-by); AMT004's window over fewer lines (no gain: the window is not
its cost); JRN003 from `journals` min/max (+0,12 for the aggregates, -0,16 in the rule).

Round 5 (issue #10): the manual-source filter (`coalesce(list_contains($manual_sources,
lower(source)), true)`, ~0,03 CPU s per scan of the 1M lines, ~0,015 per scan of `journals`)
ran in 10 rules (ACC003, AMT003, AMT005, BEN001, BEN002 over the lines; TIM001, TIM002,
TIM003, TIM006, USR002 over `journals`): it is now the engine column `manual_entry`, computed
in the history copy and in `journals` (+0,04-0,07 CPU s there). Those 10 rules plus the copy
and `journals`, 4 alternating runs each (load 9-11): 2,00-2,37 -> 1,81-2,15 CPU s; the whole
catalog (`connect` + `run_catalog` on the baseline's `bookings.parquet`, 4 alternating runs,
load 9-13): 7,18-7,64 -> 6,87-7,32 CPU s. Same 54.265 hits, texts, evidence and
`history_journals`. AMT001 keeps `$manual_sources` (it tests only its few round lines).
In the whole job (`belegwacht run bench/cache/ledger_1000000_7/ads`, step `rules` of
`run.log.jsonl`, 3 alternating runs each against the tree without these changes, load 5-9):
6,98 / 7,33 / 7,41 -> 6,94 / 6,98 / 7,03 CPU s (median -0,35), page faults of the step
310-328k -> 303-326k, peak RSS unchanged (880-965 MB). At 10M lines (`connect` +
`run_catalog` on the history of a 10M run, under the 10M lock, per-rule CPU, load 5-8): the
10 rules 14,79 -> 11,85 CPU s, the setup (copy, `journals`, fixed costs) 13,93 -> 15,00, the
other rules 51,6 / 50,0 (noise), in all 80,3 -> 76,8 CPU s; peak RSS 3.535 -> 3.514 MB; the
same 577.393 hits (two more pairs on a busier machine: 71,5 / 72,2 and 72,5 / 77,7 CPU s,
wall times 79-115 s: load, not the change).

Measured in round 5 and left (CPU s at 1M, min of 3 unless said):

- One line table shared by BEN001 and BEN002 (the lines with their first two digits, built
  once, BEN001 taking `digit2 // 10`; a "derived table" declared in `rules/`): table 0,19 +
  BEN001 0,13 + BEN002 0,19 = 0,51 against 0,47-0,51 for the two rules as they are (3 runs
  each): writing 546.397 lines into a table costs what the second scan saves. The digit
  itself is cheap (string digits 0,04 over 1M lines, an integer `CASE` ladder 0,01).
- ACC002 keyed by `hash(entity, fiscal_year, journal_id)` (with `entity` kept, the hit keys
  joined back from `journals`): 0,44-0,49 -> 0,58-0,64 (hashing three columns per line costs
  more than the string group-by keys it replaces); same 205 hits.
- The history copy in a compressed in-memory database (`ATTACH ':memory:' (COMPRESS)`):
  DuckDB leaves the VARCHAR columns uncompressed; whole catalog 6,64 / 7,01 -> 6,86 / 7,03.
  `source` as an ENUM: the filter costs the same (0,031 / 0,030: no per-dictionary
  evaluation).
- Rendering the hits (0,28-0,33 in all): the explanation texts are the cost (BEN002's 29.946
  hits 0,086: `DISTINCT` 0,019, evidence JSON ~0,004, number formatting the rest);
  `translate(x, ',.', '.,')` instead of the three `replace` is no cheaper. Leaving out the
  `DISTINCT` would save ~0,06 in all but needs proof that rendering never maps two rule rows
  to one text (float `-0.0`, key casts): not done.
- Counting neighbours only for the few rows that pass every other test, with a correlated
  `count(*)` instead of a window over every row: AMT004's similar lines for its 1.603
  candidates (0,33 -> 0,29, same hits), PRC002's clerk and vendor counts around the 5.029
  starts with enough parts (0,28 -> 0,23, same hits). Reverted: DuckDB runs the subquery as a
  hash join on the partition keys with the range as a residual filter, so the work grows
  with candidates x lines per account or vendor - 9,3 million pairs at 1M (AMT004; 30
  accounts at both sizes) would be ~100x at 10M, while the window grows with n log n.
- PAY001 grouped by (vendor, account, amount) before the reference key is built: 0,26 ->
  0,28. `AS NOT MATERIALIZED` on the first line CTE of PAY001, PAY002, AMT004, AMT005,
  BEN001, BEN002, ACC002, PAY005: within 0,015 or slower (PAY001 0,24 -> 0,35, ACC002 0,49 ->
  0,60-0,65). BEN001/BEN002 picking each line's group by two anti joins instead of
  `QUALIFY row_number()`: 0,19 -> 0,18 / 0,26 -> 0,245, not worth the longer query.
- The calendar years of `connect` from the copy instead of the Parquet source: 0,04 -> 0,02;
  not worth running `setup_views` in two parts.
- One DuckDB thread: the 34 queries took 4,31 instead of 4,71 CPU s (load ~9, min of 3 per
  rule); see above for why the caller (the pipeline) decides.

Round 6 (issue #10, the engine's fixed costs). Where the CPU of `connect` + `run_catalog`
goes at 1M lines (catalog alone on the baseline's `bookings.parquet`, CPU s per kind of
statement, 3 runs, load 6-9): the 34 rule queries 4,19-4,30; the history copy 0,45-0,54;
`journals` 0,40-0,46; rendering and inserting the hits 0,29-0,34 (of it 0,06 fixed: the 34
inserts on empty outputs; BEN002 0,09-0,11 and BEN001 0,045 for their 29.946 and 13.147
rows); the journal count per rule 0,05-0,06; `DESCRIBE` 0,03; `DROP` 0,016; collecting the
hits 0,04; `catalog_columns` 0,055 plus 0,024 for the parser connection; in `connect` the
calendar years 0,07 and the first holiday calendar 0,066 (a one-time set-up inside the
`holidays` package per process: the second call takes 0,001). Changed (same 54.265 hits,
texts, evidence and `history_journals`; `compare.py` on a job run: hits, findings and model
scores equal):
- the calendar years from one grouped scan of the three dates (`GROUP BY ALL` of the year
  triples, then unnested) instead of three scans joined by `UNION`: 0,069 -> 0,036;
- the output's column types from the bound relation (`con.sql(...).types`, the same type
  names) instead of `DESCRIBE`: 0,031-0,036 -> 0,023-0,025;
- `_rule_out` dropped once after the catalog instead of after every rule (the next rule's
  `CREATE OR REPLACE` replaces it): 0,013-0,018 -> 0;
- the `DISTINCT` over the rendered hits left out where no two rows share the hit's key (then
  no two hits can be equal): a journal rule whose rows equal its journals (from the journal
  count, now `count(*)` and the row sum of one group-by), a line rule with at least
  `UNIQUE_CHECK_ROWS` (2.000) rows whose distinct non-null (journal, line) keys equal its rows
  (one more count); key columns of other types than the hit's keep the `DISTINCT`. Render
  0,31-0,34 -> 0,28-0,30, counts +0,015.
- `run_catalog` parses the catalog's queries for `catalog_columns` on its own connection, all
  in one statement (`list_transform` over `json_serialize_sql`), instead of opening the
  process-wide parser connection and one statement per query: 0,072-0,078 -> 0,050-0,052
  (3 alternating fresh processes).
In all ~-0,12 CPU s; in the whole job (`belegwacht run bench/cache/ledger_1000000_7/ads`,
step `rules`, 3 alternating runs against a tree without the change, load ~9) 7,36 / 7,45 /
7,82 -> 7,49 / 7,47 / 7,45 CPU s, and `connect` + `run_catalog` alone 6,74 / 6,21 / 6,55 ->
6,34 / 6,24 / 6,57 (load ~10): not visible at that load; `connect` alone 0,28-0,31 ->
0,24-0,26 every time. At 10M (`python -m bench --lines 10000000 --repeat 1 --no-naive`, one
run, load ~6-10: the floor step took 18,7 s instead of ~7,4): `rules` 85,9 s wall / 68,9 CPU s
(committed round-5 result 36,6 s / 68,3), job peak RSS 4.357 MB, the same detection figures.
Measured in round 6 and left:
- Texts rendered once per distinct combination of the template's columns (floats keyed by
  their text, since `-0.0` equals `0.0` but renders as `-0,0`) and joined back: BEN002's
  29.946 rows need only 185 texts, but 0,098 -> 0,100 (the grouping and the join cost what the
  formatting saves: `format()` takes ~0,12 µs a value; BEN002's render goes to the `DISTINCT`
  hash, the evidence JSON and the insert).
- The uniqueness check for every rule (`count(DISTINCT line_no)` per journal in the journal
  count): render -0,05, counts +0,05.
- One render query for all rules at the end (the 34 templates are bound all the same) and
  the journal counts from the hits table at the end (the counts are over the whole history,
  the hits only the delivery's: the keys of every rule's rows would have to be kept, one
  insert per rule as now, or every history hit rendered in a nightly delta).
- `journals`: `manual_entry` as `arg_min(manual_entry, line_no)` over the copy's column,
  0,44 -> 0,49-0,51 (DuckDB already shares `arg_min(source, line_no)` with `source`; the
  macro over 493.426 journals costs 0,005). Each string aggregate costs 0,03-0,045 on top of
  the 0,11 of the key group-by: `entered_by`, `approved_by`, `source`, `reversal_of`.
- The copy per column (CPU s on top of the keys' 0,089): `description` 0,054 and
  `header_description` 0,049 (TXT001 alone), `reference` 0,049 (PAY001, PAY002), `source`
  0,020, `vendor_id` 0,020, `entered_by` 0,017, `amount` 0,017, `approved_by` 0,015, the
  others 0,01 or less. The delivery file rewritten by Polars with zstd, lz4, snappy or
  without compression copies slower (0,59-0,64 against 0,43-0,44 for the file as ingest
  writes it): the codec is not the cost.
- The first holiday calendar of a process (0,05-0,066 CPU s): `holidays`' registry imports
  the package `holidays.countries`, whose `__init__` imports all 279 country modules, to
  return one class. A lazy stand-in for that package (or loading `germany.py` alone) would
  save it but patches the library's packaging; not done.
- The largest lever left is not in the engine: the pipeline passing `threads=1` to `connect`
  while the model worker runs (see above: ~0,6-0,8 CPU s of the `rules` step in round 4).

Round 7 (issue #10, the engine's fixed costs again). Changed (same 54.265 hits, texts,
evidence and `history_journals`; `compare.py` on job runs: hits, findings, model scores and
clean bookings equal):
- `ThreadGovernor` (see above; the lever round 6 left to the pipeline, decided in the engine):
  one DuckDB thread while the model worker wants the other core, two once it does not. In the
  whole job (`belegwacht run bench/cache/ledger_1000000_7/ads`, step `rules` of
  `run.log.jsonl`, 5 alternated pairs against the governor switched off, load 6,5-8,8): 6,52 /
  6,53 / 6,30 / 6,81 / 6,73 -> 6,33 / 6,28 / 6,22 / 6,27 / 6,07 CPU s (median -0,26; 4-16 of
  the 36 steps on one thread, as long as the worker wanted its core on that machine), the
  whole job's user+sys 15,59 -> 15,19 (median), the step's wall time 5,7-10,5 -> 4,7-9,1 s
  (lower in every pair: the worker gets its core sooner), page faults unchanged. On a quiet
  machine the worker wants its core for the first ~2,5 s of the step. With the models after
  the rules (the 10M path: `[models] worker_max_lines` below the history's lines, tried at 1M)
  the worker only runs GX, niced: two threads for every step. At 10M (`belegwacht run
  bench/cache/ledger_10000000_7/ads`, load ~8): two threads for all 36 steps, `rules` 40,1 s
  wall / 64,3 CPU s (committed round-6 bench: 39,2 s / 72,0), the job 104 s, peak RSS 4,70 GB,
  the same 577.393 hits; a `python -m bench --lines 10000000 --repeat 1 --no-naive` run at
  load 10-15 beside other jobs (floor 22,1 s instead of 7,9) took 281,6 s / 70,8 CPU s for
  `rules`, peak 4.654 MB, the same detection figures.
- The holiday calendar's class is loaded from its country's module alone (`_holiday_class`:
  the module named in `holidays.registry.COUNTRIES`, put into `sys.modules` under its usual
  name) instead of through `holidays.country_holidays`, whose package `holidays.countries`
  imports all 279 country modules to return one; the same calendars, fallbacks and errors
  (tested against the library's way in a fresh process), the library's way once that package
  is imported or for a code the registry does not list. `connect` 0,161-0,176 -> 0,112-0,125
  CPU s (5 alternated fresh processes, Polars and pyarrow imported first as in the job).
Measured in round 7 and left:
- The same governor over the whole machine (idle, iowait and niced ticks of `/proc/stat`):
  at load ~11 the whole job's `rules` step took 7,47 / 7,47 / 7,62 -> 6,82 / 6,81 / 6,66 CPU s
  (three alternated pairs; the catalog ran on one thread throughout), but on a machine loaded
  by others it halves the catalog's share: a 10M run at load ~10 took 159 s wall for `rules`
  (64,3 CPU s) against 86-97 s on two threads. Counting the worker's CPU as it gets it
  instead of as it wants it (`stat` ticks instead of `schedstat`): on a loaded machine the
  worker gets ~0,3 of a core and the catalog never dropped to one thread.
- The history as a registered Arrow table (read by Polars, `manual_entry` computed there)
  instead of the DuckDB copy: the copy 0,55 -> 0,48 (placeholder dates not yet nulled), but
  the catalog +0,8-1,3 CPU s (string columns converted from Arrow on every scan).
- `journals` with `entered_by` and `source` from one `arg_min` over a struct: 0,31 -> 0,39
  (one thread); without both `arg_min` it would take 0,23, without both string `max` 0,29.
  On one thread `journals` takes 0,31-0,34 instead of 0,42-0,46 on two (the copy the same on
  both): the governor gives it one thread when the worker runs (at the start of the rules).
- The calendar years from the Parquet row-group statistics (min/max of the three dates,
  0,004 instead of 0,023 CPU s): a range is a superset of the years that occur, and the
  `holidays` view is documented (and tested) as the years of the dates +-1.
- The rule output's row count from `CREATE TABLE` to skip the journal count and the render
  of empty outputs: 3 rules at 1M (~2 ms in all); the template must be bound anyway.
- Per rule, the fixed statements on an empty output take ~3,3 ms (the query's `CREATE` 0,5,
  its types 0,07, the journal count 0,66, binding and inserting the render 1,6): ~0,1 CPU s
  for the catalog, most of it binding, which one statement for all rules would not save.
- `load_catalog` (0,045 CPU s in the `rules` step: PyYAML builds the objects in Python even
  with libyaml's parser) and `catalog_columns` (0,04: DuckDB serialising 35 parse trees, the
  walk over them) could move before the step only by the pipeline (a thread beside ingest).

Round 7, the queries (12 rewritten, each its own commit; the same 54.265 hits at 1M and
577.393 at 10M; rule_hits of a rules-only run byte-identical; 11 new `cases:` for the edges
the rewrites touch). CPU s of the query alone, min of 5-9 alternated runs at 1M, of 2-3 on the
10M history; the rules stage alone (`connect` + `run_rules` on a 1M history, 3 alternated
pairs, load 10-12) 6,52 / 6,52 / 6,62 -> 6,21 / 6,15 / 6,09 CPU s:

| rule | 1M before | 1M after | 10M before | 10M after | what changed |
|---|---|---|---|---|---|
| JRN002 | 0,24 | 0,14 | 3,81 | 1,93 | each series' numbers as one sorted integer list (`list_sort`) beside itself shifted by one instead of `lag()` over every journal; two ids sharing a number after a gap: the smaller is flagged (the window picked either) |
| PRC002 | 0,22-0,27 | 0,17-0,20 | 3,69 | 2,66 | candidates collapsed to one row per journal, day and clerk; windows count rows, `count(DISTINCT)` only where a journal still spans two rows or has no id |
| ACC003 | 0,15-0,16 | 0,085-0,09 | 1,42 | 0,73 | outflows materialised once (the inlined CTE ran three times); journal lines matched on the journal id first; account kinds for those ~9k lines only |
| AMT001 | 0,104-0,108 | 0,065 | 1,03 | 0,57 | the round-line filter in a form the scan applies (`greatest(amount, -amount)`, a whole-amount pre-test); journal vendors matched on the journal id first |
| PAY002 | 0,285-0,30 | 0,264-0,27 | 4,03 | 3,24 | repeat groups keyed by `hash(entity, vendor, account, amount)` (a collision only adds whole window partitions, never drops one) |
| AMT005 | 0,169-0,177 | 0,130-0,140 | 2,15 | 1,56 | the same hash key as PAY002 |
| AMT004 | 0,334-0,340 | 0,299-0,315 | 3,99 | 3,94 | statistics straight from `bookings`, a second scan for the large lines, instead of every line materialised with its log (a round-4 dead end, now -0,025) |
| BEN001 / BEN002 | 0,187 / 0,253 | 0,167 / 0,239 | 1,86 / 2,30 | 1,71 / 2,04 | leading digit(s) by integer division below 1.000.000, text above (exact) |
| PRC001 | 0,089 | 0,059 | 0,75 | 0,57 | vendor medians only for vendors with a line near a threshold (still over all their invoices) |
| USR001 | 0,066 | 0,053 | 0,66 | 0,51 | journals matched on `entered_by IN (rare users)` first, then the exact (entity, user) join |
| JRN001 | 0,015 | 0,009 | 0,134 | 0,075 | `greatest(balance, -balance)` instead of `abs(balance)` |

Measured in round 7 and left (queries): TXT001 with a case-insensitive `(?i)` regular
expression on the raw text and an exact fallback for İ 0,41 -> 0,53 (RE2's case folding is
slow), lower-casing only the kept lines: no gain; ACC002 with the big-journal anti join on
the pairs 0,49 -> 0,475 (noise); PAY005 journal-id and vendor prefilters, PAY002 series
prefilters, a USR006 user prefilter (-0,006), TIM007 prefilters (-0,004): not taken; PAY001
with its normalised reference computed once 0,25 -> 0,24, its CTE not materialised 0,36;
BEN002 with a full join instead of `QUALIFY` -0,01 but more rows where lines have null keys;
JRN002's list sorted in blocks of 65.536: the same at 1M, worse at 10M; JRN003 by hashed
min/max: no gain and not exact. ACC002 (0,47) and TXT001 (0,41) are now the largest: a
group-by on four string keys and lower-casing plus a regular expression on every text;
grouping 1M lines on `entity` alone costs 0,023 CPU s.

Not done (measured, not worth it yet): running rules concurrently on DuckDB cursors (the
rules already keep both cores busy, ~1,9 CPU s per wall second, and temporary tables are per
connection); shared pre-aggregates declared in `rules/` (the inputs rules share - vendor
lines, per-account counts - cost a few milliseconds each to recompute from the in-memory
copy; the cost is in each rule's own window or join).

Writing a fast rule (the engine needs no change for a new rule, but the query decides the
cost at 10 million lines):

- Prefer an aggregate plus a join over `count(*) OVER (PARTITION BY ...)` over every line: a
  window sorts or partitions all lines; `GROUP BY` the few keys, filter the rare groups, join
  back. Where the window groups null keys together, join with `IS NOT DISTINCT FROM`.
- Shrink before a window: a repeat needs a group of at least two lines, a gap a missing
  neighbour; `GROUP BY key HAVING count(*) >= 2` and a `SEMI JOIN` keep whole partitions, so
  the window's result is unchanged.
- Keep regular expressions and text formatting off the full history: a cheap exact superset
  first (a keyword as a plain substring, an integer test), the exact expression on the few
  lines left. Build patterns from `$parameters` only - a pattern from a column is compiled
  per row.
- A CTE read twice is materialised; one read once is inlined. Say `AS MATERIALIZED` /
  `AS NOT MATERIALIZED` where the default would repeat a regular expression over every line,
  or copy every line only to filter it in each reader (ACC003's line kinds).
- Do not filter on an expensive expression right after computing it: DuckDB pushes the
  filter into the scan and evaluates the expression there again (JRN002 ran its journal-id
  regex three times per journal). Compute it once in a projection and let a later, cheap
  condition drop the rows (a null sorted last, a null difference).
- A correlated `(SELECT count(*) ... WHERE <range>)` instead of a window is cheaper at 1M
  lines only when the outer rows are few, and it grows with outer rows x lines per key (a hash
  join with the range as a residual filter): keep the window where a key holds many lines.
- Join each payment with the few changes near it, not with every change of its vendor: an
  equality on a time bucket (or a small candidate set first) keeps a join from growing with
  the square of the history.
- Filters that can raise an error (`abs()` and `%` on decimals, `::BIGINT`, `IN` lists) are
  not pushed through the `bookings`/`journals` views into the scan, which then reads every
  projected column of every line first (AMT001: 0,048 through the view, 0,019 on the bare
  table); `trim`, `sign`, `-x` and `::DOUBLE` are pushed. `greatest(x, -x)` is the pushable
  `abs(x)`.
- Before a three-key join to a few journals, match on the journal id alone
  (`journal_id IN (SELECT ...) OR journal_id IS NULL`), then the exact `IS NOT DISTINCT FROM`
  join; not where the candidate journals are many (PAY005: 27k).
- Name the columns: a star over `bookings` in any select list (`SELECT *`, `SELECT entity, *`,
  `b.*` of `bookings b`, `COLUMNS(*)`, `to_json(b)`) makes the engine copy every column.
"""


def anchor(rule: Rule) -> str:
    """GitHub's anchor of the rule's heading in docs/rules.md (``### PAY001 duplicate-payment``)."""
    return f"{rule.id.lower()}-{rule.name}"


def catalog_table_markdown(catalog: list[Rule], link: str = "") -> str:
    """The catalog as a Markdown table: id, title (English and German), severity, level, needs.

    Shared by docs/rules.md and the README block between ``<!-- rules:begin -->`` and
    ``<!-- rules:end -->``; ``link`` is the page holding the rule sections ("" for this page,
    "docs/rules.md" from the README), so each id links to its rule's section.
    """
    out = ["| ID | title | severity | level | needs |", "|---|---|---|---|---|"]
    for r in catalog:
        out.append(f"| [{r.id}]({link}#{anchor(r)}) | {_md(r.title['en'])} ({_md(r.title['de'])}) "
                   f"| {r.severity} | {r.level} | {_md(needs(r))} |")
    return "\n".join(out) + "\n"


def _param_doc_md(param: Param) -> str:
    """" - English doc / *German doc*" (either part only when present)."""
    parts = [param.doc["en"]] if param.doc.get("en") else []
    parts += [f"*{param.doc['de']}*"] if param.doc.get("de") else []
    return (" - " + " / ".join(parts)) if parts else ""


def catalog_markdown(catalog: list[Rule]) -> str:
    """docs/rules.md: usage, the catalog table and one section per rule, generated from the files.

    Each section gives the English text and its German counterpart (the app's default language).
    """
    out = ["# Rules", "",
           "<!-- generated by `python -m detect.rules.doc` from rules/*/*.yaml - do not edit -->",
           "", INTRO,
           "## Catalog", "",
           f"{len(catalog)} rules. `belegwacht rules show ID [--lang en]` prints a rule's full "
           "documentation, `belegwacht rules test [ID]` runs its own cases.", "",
           catalog_table_markdown(catalog).rstrip("\n")]
    settings = Settings()
    for r in catalog:
        out += ["", f"### {r.id} {r.name}", "", f"**{r.title['en']}** / {r.title['de']} - "
                f"severity {r.severity}, level {r.level}, family `{r.family}`", "",
                r.why_text("en")]
        if "de" in r.why:
            out += ["", f"*Warum:* {r.why['de']}"]
        out += ["", f"Explanation: \"{r.explain['en']}\"", "",
                f"Erklärung: „{r.explain['de']}“"]
        if r.scenarios:
            out += ["", f"Scenarios: {', '.join(r.scenarios)}"]
        params = [f"`{p.name}` = `{_value(p.default)}`" + _param_doc_md(p) for p in r.params]
        params += [f"`{n}` = `{_value(CONFIG_PARAMS[n][1](settings))}` - from "
                   f"`{CONFIG_PARAMS[n][0].split(':')[0]}`" for n in r.config_params]
        if params:
            out += ["", "Parameters:", ""] + [f"- {p}" for p in params]
        out += ["", "Known false positives:", ""]
        out += [f"- {fp}" for fp in r.falsepositives_list("en")]
        if "de" in r.falsepositives:
            out += ["", "Bekannte Fehlalarme:", ""] + [f"- {fp}" for fp in r.falsepositives["de"]]
    return "\n".join(out) + "\n"
