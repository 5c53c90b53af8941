"""The same review-store code against a real PostgreSQL (skipped when none can be started).

Starts a throw-away cluster (initdb + pg_ctl, unix socket only, no TCP) as the ``postgres``
user when running as root. Needs the PostgreSQL server binaries and the psycopg driver.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest

from detect.errors import UserError
from detect.store import ReviewStore, item_id

pytestmark = pytest.mark.slow


def _bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for root in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (root / name).exists():
            return str(root / name)
    return None


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    pytest.importorskip("psycopg", reason="psycopg not installed (pip install 'psycopg[binary]')")
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found")
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser")
        prefix = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="belegwacht-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if prefix:
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
    try:
        subprocess.run([*prefix, initdb, "-D", str(data), "-U", "postgres", "-A", "trust",
                        "--no-sync", "-E", "UTF8"], check=True, capture_output=True, timeout=120)
        opts = f"-c listen_addresses='' -k {sock} -c fsync=off -p 54329"
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-o", opts, "-w", "-t", "60",
                        "-l", str(root / "log"), "start"], check=True, capture_output=True,
                       timeout=120)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"could not start PostgreSQL: {exc}")
    try:
        yield f"postgresql+psycopg://postgres@/postgres?host={sock}&port=54329"
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def findings(journals: list[str], vendor: str = "V1") -> pl.DataFrame:
    n = len(journals)
    return pl.DataFrame({
        "entity": ["M"] * n, "fiscal_year": [2024] * n, "journal_id": journals,
        "posting_date": [date(2024, 5, 1)] * n, "amount": [Decimal("-12.30")] * n,
        "risk_score": [50.0] * n, "rank": list(range(1, n + 1)), "rule_ids": ["PAY001"] * n,
        "vendor_id": [vendor] * n, "reasons": ["Zahlung doppelt ✓"] * n},
        schema_overrides={"amount": pl.Decimal(18, 2)})


def ctx(run_id: str) -> SimpleNamespace:
    return SimpleNamespace(entity="M", run_id=run_id, run_dir=Path("/nonexistent"),
                           rescore_history=False)


def test_store_on_postgresql(pg_url: str) -> None:
    store = ReviewStore(pg_url)
    assert store.dialect == "postgresql" and store.schema_version() == 3
    assert ReviewStore(pg_url).migrate() == 3
    first = store.publish_run(ctx("r1"), findings(["J1", "J2", "J3"]))
    assert (first["new"], first["still_flagged"]) == (3, 0)
    j1 = item_id("M", 2024, "J1")
    store.record_decision(j1, "confirmed", "bestätigt", "anna")
    store.record_decision(j1, "no_finding", "Korrektur: Abschlag", "bernd",
                          suppression={"rule_id": "PAY001", "vendor_id": "V1"})
    assert store.record_decisions([item_id("M", 2024, "J2"), item_id("M", 2024, "J3")],
                                  "clarify", "", "carla") == 2
    with pytest.raises(UserError, match="comment is required"):
        store.record_decision(j1, "confirmed", "", "anna")
    with store.engine.connect() as conn:
        before = conn.exec_driver_sql("SELECT * FROM items ORDER BY item_id").all()
    again = store.publish_run(ctx("r1"), findings(["J1", "J2", "J3"]))
    assert again["suppressed"] == 3 and again["new"] == 0
    second = store.publish_run(ctx("r2"), findings(["J1"]), scope=pl.DataFrame(
        {"entity": ["M", "M"], "fiscal_year": [2024, 2024], "journal_id": ["J1", "J2"]}))
    assert second["no_longer_flagged"] == 1
    listed = store.items()
    assert sorted(listed["journal_id"]) == ["J1", "J3"]
    row = listed.filter(pl.col("item_id") == j1).row(0, named=True)
    assert row["amount"] == Decimal("-12.30") and row["status"] == "no_finding"
    assert row["suppressed"] is True and len(before) == 3
    result = store.verify_log()
    assert result.ok and result.events == 4
    with store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE decisions SET comment = 'x' WHERE id = 2")
    broken = store.verify_log()
    assert (broken.ok, broken.first_broken) == (False, 2)
    # an odd run id (quote, backslash, '%' for psycopg's pyformat) is stored exactly
    odd = "r3'\\'%s%%; --"
    third = store.publish_run(
        ctx(odd), findings(["J1", "J4"]).with_columns(pl.lit(99.0).alias("risk_score")),
        scope=pl.DataFrame({"entity": ["M"] * 3, "fiscal_year": [2024] * 3,
                            "journal_id": ["J1", "J3", "J4"]}))
    assert (third["new"], third["no_longer_flagged"]) == (1, 1)
    with store.engine.connect() as conn:
        runs_of = {r[0]: tuple(r[1:]) for r in conn.exec_driver_sql(
            "SELECT journal_id, first_run, last_run, flagged FROM items").all()}
    # J1 updated, J3 unflagged, J4 new: each statement's run id as given
    assert runs_of["J1"] == ("r1", odd, True) and runs_of["J3"] == ("r1", odd, False)
    assert runs_of["J4"] == (odd, odd, True)
    store.add_user("anna", "h", "auditor")
    store.set_role("anna", "admin")
    assert store.get_user("anna")["role"] == "admin"
    store.log_access("anna", "login")
    assert store.access_log()[0]["action"] == "login"
    [supp] = store.list_suppressions()
    store.revoke_suppression(supp["id"], "bernd", "ausgelaufen")
    assert store.items().filter("suppressed").height == 0
