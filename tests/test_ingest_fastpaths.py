"""The ingest's fast paths against the ways they replaced, on random messy ADS deliveries.

Trimming text after the read (``parsing.finish_text``) must give the bookings that trimming
inside the query gave, and validation with the ingest's facts and journal runs
(``detect.ingest.Facts``) the outcome of its own queries: same clean bookings, quarantine,
findings and report. The deliveries mix what the fast paths must not get wrong: journals split
across non-adjacent lines or files, repeated lines, missing ids, negative and other years,
padding with NBSP / U+3000 / tabs inside quotes, values that are only whitespace, values longer
than an inline string view (12 bytes), CRLF, one or two files."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import polars as pl
import pytest

from detect import validate
from detect.errors import DeliveryRejected
from detect.ingest import ads, ingest, mapped
from detect.privacy import KEY_FILE
from validate_support import context, settings, validated_both_ways

HEADER = ("Journal_ID,Journal_ID_Line_Number,Effective_Date,Fiscal_Year,GL_Account_Number,"
          "Amount,Amount_Currency,JE_Line_Description,Reference_Number")
PADS = ["", " ", "\t", "\u00a0", "\u3000", "\u2003", "  "]
WORDS = ["Miete", "Büro", "Strom", "Überweisung Stadtwerke GmbH", "€", "x", "Straße 12"]


def _text(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.1:
        return ""
    if kind < 0.2:
        return '"' + rng.choice(PADS[1:]) * rng.randint(1, 3) + '"'   # only whitespace
    core = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4)))
    return '"' + rng.choice(PADS) + core + rng.choice(PADS) + '"'


def _delivery(folder: Path, seed: int) -> None:
    rng = random.Random(seed)
    rows = []
    for j in range(1, rng.randint(6, 25)):
        year = rng.choice([2024, 2024, 2024, 2023, 2025, -3])
        jid = "" if rng.random() < 0.08 else (f'" {j}"' if rng.random() < 0.1 else str(j))
        amounts = [rng.randint(1, 999) for _ in range(rng.randint(0, 3))]
        amounts.append(-sum(amounts) + (7 if rng.random() < 0.15 else 0))
        for n, cents in enumerate(amounts, 1):
            amount = "x" if rng.random() < 0.04 else f"{cents / 100:.2f}"
            currency = "EURO" if rng.random() < 0.04 else "EUR"
            line = 1 if n > 1 and rng.random() < 0.05 else n   # a repeated line number
            rows.append(f"{jid},{line},{year}-0{1 + j % 9}-1{j % 10},{year},"
                        f"{rng.choice(['5250000', '1810000'])},{amount},{currency},"
                        f"{_text(rng)},{_text(rng)}")
    for _ in range(rng.randint(0, 2)):   # journals split across non-adjacent lines
        rows.insert(rng.randint(0, len(rows)), rows.pop(rng.randrange(len(rows))))
    if rng.random() < 0.3:
        rows.append(rows[rng.randrange(len(rows))])   # a line delivered twice
    end = "\r\n" if rng.random() < 0.5 else "\n"
    cut = rng.randint(1, len(rows)) if rng.random() < 0.5 else len(rows)
    folder.mkdir(parents=True)
    for name, part in (("GL_a.csv", rows[:cut]), ("GL_b.csv", rows[cut:])):
        if part:
            (folder / name).write_bytes((end.join([HEADER, *part]) + end).encode("utf-8"))


def _trimmed_in_query(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every text column trimmed inside the query, as before ``IngestResult.trim_later``."""
    plain = mapped.to_bookings

    def to_bookings(*args, **kwargs):
        kwargs.pop("trim_later", None)
        return plain(*args, **kwargs)

    monkeypatch.setattr(ads, "to_bookings", to_bookings)
    monkeypatch.setattr(mapped, "to_bookings", to_bookings)


@pytest.mark.parametrize("seed", range(6))
def test_text_trimmed_after_the_read_equals_trimming_in_the_query(
        tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch):
    _delivery(tmp_path / "in", seed)
    cfg = dataclasses.replace(settings(data_docs=False), entity="default")
    fast = ingest([tmp_path / "in"], "ads", cfg, tmp_path / "a")
    assert fast.trim_later   # the fast path is taken
    with monkeypatch.context() as patch:
        _trimmed_in_query(patch)
        slow = ingest([tmp_path / "in"], "ads", cfg, tmp_path / "b")
        assert not slow.trim_later
    got, want = fast.bookings.collect(), slow.bookings.collect()
    assert got.equals(want), seed
    assert got["description"].null_count() > 0   # whitespace-only values became null


@pytest.mark.parametrize("seed", range(4))
def test_validation_with_the_ingest_facts_equals_its_queries(tmp_path: Path, seed: int):
    _delivery(tmp_path / "in", seed)
    gx_rows = 0 if seed % 2 else 6
    fast = validated_both_ways(tmp_path / "in", tmp_path / "a", use_facts=True, gx_rows=gx_rows)
    slow = validated_both_ways(tmp_path / "in", tmp_path / "b", use_facts=False, gx_rows=gx_rows)
    for name in ("bookings", "quarantine", "findings"):
        assert fast[name].equals(slow[name]), (name, seed)
    assert fast["report"] == slow["report"]


def test_a_negative_fiscal_year_reaches_validation(tmp_path: Path):
    """The journal runs' distinct-id count once cast the year to UInt64 strictly: a delivered
    year below zero stopped the ingest with a Polars error instead of a validation result."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "GL.csv").write_text(
        HEADER + "\n1,1,2024-03-01,-2024,5250000,10.00,EUR,a,b\n"
        "1,2,2024-03-01,-2024,1810000,-10.00,EUR,a,b\n", "utf-8")
    fast = validated_both_ways(folder, tmp_path / "a", use_facts=True, gx_rows=0)
    slow = validated_both_ways(folder, tmp_path / "b", use_facts=False, gx_rows=0)
    assert fast["report"] == slow["report"]
    assert fast["quarantine"].equals(slow["quarantine"])


FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).parents[1]
KEY = b"k" * 32
FORMAT_CASES = {   # name: (format, delivery, mapping profile)
    "datev": ("datev", FIXTURES / "datev" / "delivery", None),
    "sap": ("sap", FIXTURES / "sap" / "de_export", None),
    "sap_acdoca": ("sap", FIXTURES / "sap" / "acdoca", None),
    "gdpdu": ("gdpdu", FIXTURES / "gdpdu" / "delimited", REPO / "mappings" / "example_gdpdu.toml"),
    "saft": ("saft", FIXTURES / "saft" / "saft_quirks.xml", None),
    "csv": ("csv", FIXTURES / "mapped" / "infoma_journal.csv",
            REPO / "mappings" / "example_infoma.toml"),
    "generated_datev": ("datev", None, None),
    "generated_sap": ("sap", None, None),
}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sample_data import generate

    out = tmp_path_factory.mktemp("ledger")
    generate.generate(lines=900, seed=5, out=out, formats=["datev", "sap"])
    return out


@pytest.mark.parametrize("case", sorted(FORMAT_CASES))
def test_every_format_validates_the_same_with_the_ingest_facts(
        tmp_path: Path, case: str, generated: Path):
    """Formats other than ADS: the facts and journal runs counted on their batches give
    validation's own results (each delivery once with all rows for GX, once with a sample)."""
    fmt, source, profile = FORMAT_CASES[case]
    if source is None:
        source = generated / fmt
    for gx_rows in (0, 40):
        got = []
        for use_facts in (True, False):
            cfg = dataclasses.replace(settings(data_docs=False, gx_rows=gx_rows),
                                      entity="default",
                                      mapping=str(profile) if profile else "")
            work = tmp_path / f"{gx_rows}-{use_facts}"
            (work / "data" / KEY_FILE).parent.mkdir(parents=True)
            (work / "data" / KEY_FILE).write_bytes(KEY)
            # the fast way as the pipeline runs it: IBANs (bookings, master) pseudonymised by
            # the ingest; the other: by validation
            result = ingest([source], fmt, cfg, work, pseudonym_key=KEY if use_facts else None)
            assert result.facts is not None
            if not use_facts:
                result.facts = None
            try:
                checked = validate.validate(result, context(work / "data", cfg))
            except DeliveryRejected as stop:   # the SAF-T quirks: control totals disagree
                got.append(str(stop).splitlines()[0])
                continue
            checked.wait_for_gx()
            run = checked.clean_path.parent
            report = json.loads((run / "validation.json").read_text("utf-8"))
            for volatile in ("timings", "run_id"):
                report.pop(volatile, None)
            got.append((pl.read_parquet(checked.clean_path),
                        pl.read_parquet(run / "quarantine.parquet"),
                        pl.read_parquet(run / "validation_findings.parquet"), report,
                        result.master))
        if isinstance(got[0], str) or isinstance(got[1], str):
            assert got[0] == got[1], (case, gx_rows)
            continue
        (fast_clean, fast_q, fast_f, fast_r, fast_m), (slow_clean, slow_q, slow_f, slow_r,
                                                       slow_m) = got
        assert fast_m.keys() == slow_m.keys()
        assert all(fast_m[k].equals(slow_m[k]) for k in fast_m), (case, gx_rows)
        assert fast_clean.equals(slow_clean) and fast_q.equals(slow_q), (case, gx_rows)
        assert fast_f.equals(slow_f), (case, gx_rows)
        assert fast_r == slow_r, (case, gx_rows)


def test_text_state_ignores_the_bytes_of_null_views():
    """Arrow leaves a null's string view unspecified: a garbage length there once made the
    last-byte index negative (IndexError) instead of being ignored."""
    import struct

    import pyarrow as pa

    from detect.ingest.parsing import text_state

    views = struct.pack("<i12s", -100, b"\xff" * 12) + struct.pack("<i12s", 3, b"abc" + bytes(9))
    arr = pa.Array.from_buffers(pa.string_view(), 2, [pa.py_buffer(bytes([0b10])),
                                                      pa.py_buffer(views)], null_count=1)
    assert arr.to_pylist() == [None, "abc"]
    assert text_state(arr) == (False, False)
    padded = pa.Array.from_buffers(pa.string_view(), 2, [pa.py_buffer(bytes([0b10])),
                                                         pa.py_buffer(views.replace(b"abc",
                                                                                    b"ab "))],
                                   null_count=1)
    assert text_state(padded)[0]


def test_text_state_asks_for_trimming_on_any_other_layout():
    """Only Arrow string views are read byte by byte; plain, large and dictionary strings (a
    pyarrow or Polars that hands those over) are simply trimmed."""
    import pyarrow as pa

    from detect.ingest.parsing import text_state

    for kind in (pa.string(), pa.large_string()):
        assert text_state(pa.array(["a", "b"], type=kind)) == (True, True)
    assert text_state(pa.array(["a", "b"]).dictionary_encode()) == (True, True)
    assert text_state(pa.chunked_array([pa.array(["a", "b"], type=pa.large_string())] * 2)) \
        == (True, True)


def test_journal_runs_of_random_batches_equal_the_aggregates():
    """``JournalRuns`` fed in random batch cuts against group_by / is_duplicated on the whole
    frame: the flags never claim more than holds, and when the runs are the journals their
    sums are the journals' sums."""
    from decimal import Decimal

    from detect.ingest import RUN_KEY, JournalRuns

    rng = random.Random(11)
    seen = {"distinct": 0, "unique_lines": 0}
    for _ in range(300):
        n = rng.randint(1, 30)
        rows = {"entity": [rng.choice(["A", "B", None]) for _ in range(n)],
                "fiscal_year": [rng.choice([2024, 2025, -1, None]) for _ in range(n)],
                "journal_id": [rng.choice(["1", "2", "3", None]) for _ in range(n)],
                "line_no": [rng.choice([1, 2, 3, None]) for _ in range(n)],
                "amount": [rng.choice([Decimal("1.50"), Decimal("-2.25"), None])
                           for _ in range(n)]}
        if rng.random() < 0.5:   # sorted: journals in runs, sometimes lines in order
            order = sorted(range(n), key=lambda i: tuple(
                (v is None, v) for v in (rows[c][i] for c in (*RUN_KEY, "line_no"))))
            rows = {c: [v[i] for i in order] for c, v in rows.items()}
        frame = pl.DataFrame(rows, schema={"entity": pl.String, "fiscal_year": pl.Int32,
                                           "journal_id": pl.String, "line_no": pl.Int32,
                                           "amount": pl.Decimal(18, 2)})
        cuts = sorted(rng.sample(range(1, n), rng.randint(0, n - 1))) if n > 1 else []
        runs = JournalRuns()
        for lo, hi in zip([0, *cuts], [*cuts, n], strict=True):
            runs.add(frame.slice(lo, hi - lo))
        runs.finish()
        sums = frame.group_by(RUN_KEY).agg(pl.col("amount").fill_null(0).sum())
        if runs.distinct:
            assert runs.table.height == sums.height
            assert runs.table.sort(RUN_KEY, nulls_last=True).equals(
                sums.sort(RUN_KEY, nulls_last=True).select(runs.table.columns))
        if runs.distinct_ids:
            assert frame.select("fiscal_year", "journal_id").unique().height == runs.table.height
        if runs.distinct and runs.lines_increase:
            assert not frame.select(pl.struct(*RUN_KEY, "line_no").is_duplicated().any()).item()
        seen["distinct"] += runs.distinct
        seen["unique_lines"] += runs.distinct and runs.lines_increase
    assert min(seen.values()) >= 20, seen   # the fast paths were taken, not only refused
