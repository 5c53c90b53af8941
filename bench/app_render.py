"""How fast does the review queue render with 100,000 items?

``python -m bench.app_render [--items 100000] [--browser]``

Builds a data dir with one published run of N synthetic review items (contract-shaped Parquet
files, items published through the real review store, a share already decided), then times:

- **server**: the queue page's script run in Streamlit's AppTest – cold (first render after
  start: reads findings.parquet, the store's item states, builds the pseudonym map) and warm
  (the next render, e.g. after a filter change, served from the caches);
- **browser** (``--browser``, needs /usr/bin/chromium): ``belegwacht app`` in a real Chromium –
  from clicking "Anmelden" until the count line and the table are visible (first session after
  start = cold caches; then a second, new session = the usual case during the day), and from
  typing a search until the new count line is visible; and opening the queue page from another
  page (no sign-in in between) until the table is visible.

``build_data_dir`` is also used by ``python -m bench`` to time the monthly report.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "bench-passwort-123"


def build_data_dir(root: Path, items: int = 100_000) -> tuple[Path, str]:
    """A data dir with ``items`` published review items (5 % decided); returns it and the month."""
    from detect import auth
    from detect.app.synthetic import build_run

    data_dir = root / "var"
    built = build_run(data_dir, n_items=items)
    store = built["store"]
    auth.add_user(store, "bench", PASSWORD, "auditor", "Bench")
    ids = built["findings"]["item_id"].to_list()
    store.record_decisions(ids[: items // 40], "no_finding", "Bench: bekannt", "bench")
    store.record_decisions(ids[items // 40: items // 20], "confirmed", "Bench: Befund", "bench")
    return data_dir, "2025-01"


def time_server(data_dir: Path, repeat: int = 3) -> dict[str, float]:
    """Seconds for the queue page's script: first (cold) render, then warm reruns."""
    from streamlit.testing.v1 import AppTest

    from detect.auth import AppUser

    os.environ["BELEGWACHT_DATA_DIR"] = str(data_dir)
    os.environ["BELEGWACHT_CONFIG"] = str(data_dir / "belegwacht.toml")
    at = AppTest.from_file(str(ROOT / "detect" / "app" / "pages" / "queue.py"),
                           default_timeout=120)
    at.session_state["bw_user"] = AppUser("bench", "auditor")
    started = time.perf_counter()
    at.run()
    cold = time.perf_counter() - started
    assert not at.exception, at.exception
    warm = []
    for i in range(repeat):
        at.text_input(key="f_text").input(f"B00{i}")
        started = time.perf_counter()
        at.run()
        warm.append(time.perf_counter() - started)
    return {"cold_s": round(cold, 3), "warm_filter_s": round(statistics.median(warm), 3)}


def time_browser(data_dir: Path) -> dict[str, float]:
    """Seconds in a real Chromium: sign-in click -> queue visible; search -> new count visible."""
    import re

    from playwright.sync_api import expect, sync_playwright

    sys.path.insert(0, str(ROOT / "tests"))
    from test_browser import CHROMIUM, CHROMIUM_ARGS, _free_port, start_app, stop_app

    from detect.app import data
    from detect.fmt import number

    findings = data.load_findings(data.current_run(data_dir).run_dir)
    expected = number(data.apply_filter(findings, data.QueueFilter(text="B0000")).height)
    port = _free_port()
    proc = start_app(data_dir, data_dir.parent, port)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            expect.set_options(timeout=120_000)

            def shown(page) -> None:  # noqa: ANN001
                """Count line and table visible (wait_for polls per animation frame; expect()
                backs off up to 1 s between checks, too coarse for timing)."""
                page.get_by_text(re.compile(r"von [\d.]+ Einträgen")).wait_for(timeout=120_000)
                page.locator("[data-testid='stDataFrame']").first.wait_for(timeout=120_000)

            def login_and_wait() -> tuple[object, float]:
                page = browser.new_page(viewport={"width": 1440, "height": 1000},
                                        locale="de-DE")
                page.goto(f"http://127.0.0.1:{port}/")
                page.get_by_label("Benutzername").fill("bench")
                page.get_by_label("Passwort", exact=True).fill(PASSWORD)
                started = time.perf_counter()
                page.get_by_role("button", name="Anmelden").click()
                shown(page)
                return page, time.perf_counter() - started

            _page, first = login_and_wait()             # cold: first session after start
            page, second = login_and_wait()             # a new session, caches warm
            page.get_by_role("link", name="Läufe").click()
            expect(page.get_by_role("heading", name="Läufe")).to_be_visible()
            started = time.perf_counter()
            page.get_by_role("link", name="Prüfliste").click()
            shown(page)
            navigate = time.perf_counter() - started
            search = page.get_by_label("Suche (Text, Beleg, Referenz)")
            search.fill("B0000")
            started = time.perf_counter()
            search.press("Enter")
            page.get_by_text(f"{expected} von ").wait_for(timeout=120_000)
            filtered = time.perf_counter() - started
            browser.close()
    finally:
        stop_app(proc)
    return {"browser_cold_first_render_s": round(first, 3),
            "browser_new_session_render_s": round(second, 3),
            "browser_open_queue_page_s": round(navigate, 3),
            "browser_filter_s": round(filtered, 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.app_render",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--browser", action="store_true", help="also time a real Chromium")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="belegwacht-app-bench-") as tmp:
        started = time.perf_counter()
        data_dir, _month = build_data_dir(Path(tmp), args.items)
        result: dict[str, float | int] = {"items": args.items,
                                          "build_s": round(time.perf_counter() - started, 1)}
        result.update(time_server(data_dir))
        if args.browser:
            result.update(time_browser(data_dir))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
