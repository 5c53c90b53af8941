"""Real-browser test: `belegwacht app` on a published run, driven by Debian's Chromium.

The data dir holds a real run of the pipeline over a generated sample ledger. The test signs in,
filters the queue, opens an item, records a decision with a comment, checks the decision is in
the review store, and saves screenshots (to the test's temp folder; with
BELEGWACHT_UPDATE_SCREENSHOTS=1 also to docs/screenshots/ for the README).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import polars as pl

from detect import auth
from detect.app import data
from detect.fmt import number
from detect.store import ReviewStore

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "sehr-geheim-123"
COMMENT = "Doppelt bezahlt, Rückforderung beim Kreditor läuft"
CHROMIUM_ARGS = ["--no-sandbox", "--headless=new", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(),
                                 reason="Debian's chromium (/usr/bin/chromium) is not installed; "
                                        "`make browser` or .ci/run installs it")]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(data_dir: Path, cwd: Path, port: int) -> subprocess.Popen:
    """``belegwacht app`` in its own process group, waiting until the health check answers."""
    exe = Path(sys.executable).with_name("belegwacht")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "detect"]
    proc = subprocess.Popen([*cmd, "app", "--data-dir", str(data_dir), "--port", str(port)],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.3)
        if proc.poll() is not None:
            break
    stop_app(proc)
    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    pytest.fail(f"the app did not start:\n{out[-3000:]}")


def stop_app(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def prepare(tmp_path: Path) -> tuple[Path, dict]:
    """A real nightly run (``belegwacht run``) over a small generated sample ledger (ADS export),
    plus an auditor account; returns the data dir and the item the test reviews."""
    ledger, data_dir = tmp_path / "ledger", tmp_path / "var"
    subprocess.run([sys.executable, "-m", "sample_data.generate", "--lines", "1500", "--seed",
                    "11", "--out", str(ledger), "--formats", "ads"], cwd=ROOT, check=True,
                   capture_output=True)
    exe = Path(sys.executable).with_name("belegwacht")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "detect"]
    done = subprocess.run([*cmd, "run", str(ledger / "ads"), "--data-dir", str(data_dir),
                           "--entity", "Musterstadt", "-q"], cwd=tmp_path, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    store = ReviewStore.for_data_dir(data_dir)
    auth.add_user(store, "anna", PASSWORD, "auditor", "Anna Prüferin")
    findings = data.load_findings(data.current_run(data_dir).run_dir)
    duplicates = findings.filter(pl.col("rule_ids").str.contains("PAY001"))
    item = (duplicates if duplicates.height else findings).sort("rank").row(0, named=True)
    item["n_total"] = findings.height
    item["n_search"] = data.apply_filter(findings, data.QueueFilter(text=item["journal_id"])).height
    return data_dir, item


def drive(page, expect, shots: Path, item: dict) -> None:  # noqa: ANN001 - Playwright objects
    """The reviewer's path: sign in, filter, open, look, decide."""
    # login gate: nothing but the form
    expect(page.get_by_role("heading", name="Anmelden")).to_be_visible()
    assert item["journal_id"] not in page.content()
    page.get_by_label("Benutzername").fill("anna")
    page.get_by_label("Passwort", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Anmelden").click()

    # queue
    expect(page.get_by_role("heading", name="Prüfliste")).to_be_visible()
    total = number(item["n_total"])
    expect(page.get_by_text(f"{total} von {total} Einträgen")).to_be_visible()
    expect(page.locator("[data-testid='stDataFrame']").first).to_be_visible()
    page.wait_for_timeout(1500)
    page.screenshot(path=str(shots / "queue.png"))
    search = page.get_by_label("Suche (Text, Beleg, Referenz)")
    search.fill(item["journal_id"])
    search.press("Enter")
    expect(page.get_by_text(f"{number(item['n_search'])} von {total} Einträgen")).to_be_visible()

    # open the item
    page.wait_for_timeout(1000)                          # let the rerun settle
    combo = page.get_by_role("combobox", name=re.compile("Beleg öffnen"))
    combo.click()
    combo.press_sequentially(item["journal_id"])
    page.get_by_role("option", name=re.compile(f"· {item['journal_id']} ·")).click()
    page.get_by_role("button", name="Öffnen").click()
    expect(page.get_by_text(f"Beleg {item['journal_id']} · Musterstadt {item['fiscal_year']}")
           ).to_be_visible()
    expect(page.get_by_text(item["rule_ids"].split(",")[0] + " · ").first).to_be_visible()
    page.set_viewport_size({"width": 1440, "height": 2600})  # the main pane scrolls itself
    expect(page.get_by_role("button", name="Entscheidung speichern")).to_be_visible()
    expect(page.locator("[data-testid='stVegaLiteChart']").first).to_be_visible()
    page.wait_for_timeout(2000)
    page.screenshot(path=str(shots / "item.png"))
    page.set_viewport_size({"width": 1440, "height": 1000})

    # decide with a comment
    page.get_by_text("bestätigt", exact=True).click()
    page.get_by_role("textbox", name="Kommentar").fill(COMMENT)
    page.get_by_role("button", name="Entscheidung speichern").click()
    expect(page.get_by_text(re.compile(r"Gespeichert \(Ereignis 1\)"))).to_be_visible()


def test_review_in_a_real_browser(tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    data_dir, item = prepare(tmp_path)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    port = _free_port()
    proc = start_app(data_dir, tmp_path, port)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 1000}, locale="de-DE")
            page.goto(f"http://127.0.0.1:{port}/")
            page.set_default_timeout(30_000)
            expect.set_options(timeout=30_000)
            try:
                drive(page, expect, shots, item)
            except Exception:
                page.screenshot(path=str(tmp_path / "failure.png"))
                print(f"failure screenshot: {tmp_path / 'failure.png'}")
                raise
            browser.close()
    finally:
        stop_app(proc)

    events = ReviewStore.for_data_dir(data_dir).history(item["item_id"])
    assert [(e["status"], e["user"], e["comment"]) for e in events] == [
        ("confirmed", "anna", COMMENT)]
    assert (shots / "queue.png").stat().st_size > 10_000
    assert (shots / "item.png").stat().st_size > 10_000
    if os.environ.get("BELEGWACHT_UPDATE_SCREENSHOTS"):
        target = ROOT / "docs" / "screenshots"
        target.mkdir(parents=True, exist_ok=True)
        for name in ("queue.png", "item.png"):
            shutil.copy(shots / name, target / name)
