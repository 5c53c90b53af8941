"""The review app's pages in Streamlit's AppTest: login gate, role matrix, each page's logic."""

from __future__ import annotations

import csv
import io
import shutil
import time
from pathlib import Path

import polars as pl
import pytest
from streamlit.testing.v1 import AppTest

from detect import auth
from detect.app.synthetic import build_run
from detect.auth import AppUser
from detect.store import ReviewStore

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app.py"
PAGES = ROOT / "detect" / "app" / "pages"
PASSWORD = "sehr-geheim-123"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One published synthetic run with four users, built once and copied per test."""
    data_dir = tmp_path_factory.mktemp("template") / "var"
    built = build_run(data_dir, n_items=40)
    store: ReviewStore = built["store"]
    store.add_user("anna", auth.hash_password(PASSWORD), "auditor", "Anna Prüferin")
    store.add_user("max", None, "manager", "Max Leitung")
    store.add_user("root", None, "admin", "Ada Admin")
    store.add_user("bert", None, "auditor", "Bert")
    store.engine.dispose()
    return data_dir


@pytest.fixture()
def env(template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    data_dir = tmp_path / "var"
    shutil.copytree(template, data_dir)
    monkeypatch.setenv("BELEGWACHT_DATA_DIR", str(data_dir))
    monkeypatch.setenv("BELEGWACHT_CONFIG", str(tmp_path / "belegwacht.toml"))
    findings = pl.read_parquet(next((data_dir / "runs").glob("*/findings.parquet")))
    return {"data_dir": data_dir, "store": ReviewStore.for_data_dir(data_dir),
            "findings": findings.sort("rank"), "config": tmp_path / "belegwacht.toml"}


def _all_text(at: AppTest) -> str:
    parts = []
    for kind in ("markdown", "caption", "title", "subheader", "info", "error", "warning",
                 "success", "text", "metric"):
        parts += [str(getattr(e, "value", "")) for e in getattr(at, kind)]
    return "\n".join(parts)


def app_as(user: AppUser | None, lang: str = "de") -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=30)
    at.session_state["bw_lang"] = lang
    if user is not None:
        at.session_state["bw_user"] = user
    return at


def page_as(name: str, user: AppUser | None) -> AppTest:
    """Run one page file directly, as a crafted URL would: the page's own guard must hold."""
    at = AppTest.from_file(str(PAGES / name), default_timeout=30)
    at.session_state["bw_lang"] = "de"
    if user is not None:
        at.session_state["bw_user"] = user
    return at.run()


# --- login gate ----------------------------------------------------------------------------------

def test_no_data_before_login_then_login_shows_queue(env: dict) -> None:
    at = app_as(None).run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Anmelden"]
    assert len(at.dataframe) == 0 and len(at.metric) == 0
    text = _all_text(at)
    assert "B0000" not in text and "Einträgen" not in text and "Musterstadt" not in text
    at.text_input(key="login_user").input("anna")
    at.text_input(key="login_password").input("falsch-falsch-falsch")
    at.form_submit_button[0].click().run()
    assert "Anmeldung fehlgeschlagen" in at.error[0].value
    assert len(at.dataframe) == 0
    at.text_input(key="login_user").input("anna")
    at.text_input(key="login_password").input(PASSWORD)
    at.form_submit_button[0].click().run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Prüfliste"]
    assert "40 von 40 Einträgen" in _all_text(at)
    log = [(e["user"], e["action"]) for e in env["store"].access_log()]
    assert ("anna", "login") in log and ("anna", "login_failed") in log


@pytest.mark.parametrize("page", ["queue.py", "item.py", "bulk.py", "runs.py", "rules.py",
                                  "audit.py", "export.py", "users.py", "report.py"])
def test_every_page_refuses_without_session(env: dict, page: str) -> None:
    at = page_as(page, None)
    assert not at.exception
    assert len(at.dataframe) == 0 and len(at.metric) == 0
    assert "B0000" not in _all_text(at)
    assert at.warning[0].value.startswith("Bitte melden Sie sich an")


def test_session_expires_after_idle_timeout(env: dict) -> None:
    old = AppUser("anna", "auditor", last_seen=time.time() - 2 * 3600)
    at = app_as(old).run()
    assert [t.value for t in at.title] == ["Anmelden"]
    assert "Sitzung abgelaufen" in _all_text(at)
    assert len(at.dataframe) == 0
    assert ("anna", "session_expired") in [(e["user"], e["action"])
                                           for e in env["store"].access_log()]


def test_disabled_user_loses_session(env: dict) -> None:
    env["store"].disable_user("anna")
    at = app_as(AppUser("anna", "auditor")).run()
    assert [t.value for t in at.title] == ["Anmelden"]


# --- role matrix ---------------------------------------------------------------------------------

def test_manager_reads_but_cannot_decide(env: dict) -> None:
    manager = AppUser("max", "manager")
    item_id = env["findings"]["item_id"][1]
    at = app_as(manager)
    at.session_state["bw_item"] = item_id
    at.run()
    at.switch_page("detect/app/pages/item.py").run()
    assert not at.exception
    assert "Ihre Rolle (Leitung) kann Einträge lesen, aber nicht entscheiden." in _all_text(at)
    assert len(at.form_submit_button) == 0 and len(at.text_area) == 0
    bulk = page_as("bulk.py", manager)
    assert "Keine Berechtigung" in bulk.error[0].value and len(bulk.form_submit_button) == 0
    assert env["store"].history(item_id) == []


def test_auditor_cannot_manage_users(env: dict) -> None:
    at = page_as("users.py", AppUser("anna", "auditor"))
    assert "Keine Berechtigung" in at.error[0].value
    assert len(at.dataframe) == 0 and len(at.form_submit_button) == 0


def test_navigation_lists_only_permitted_pages(env: dict) -> None:
    def nav_pages(user: AppUser) -> set[str]:
        at = app_as(user).run()
        return {Path(p["script_path"]).name for p in at._registered_pages.values()}
    assert nav_pages(AppUser("max", "manager")) == {
        "queue.py", "item.py", "runs.py", "rules.py", "audit.py", "export.py", "report.py"}
    assert "users.py" not in nav_pages(AppUser("anna", "auditor"))
    assert "bulk.py" in nav_pages(AppUser("anna", "auditor"))
    assert {"users.py"} <= nav_pages(AppUser("root", "admin"))
    assert "bulk.py" not in nav_pages(AppUser("root", "admin"))


# --- queue ---------------------------------------------------------------------------------------

def test_queue_filters_and_counts(env: dict) -> None:
    at = page_as("queue.py", AppUser("anna", "auditor"))
    assert "40 von 40 Einträgen · 40 offen" in _all_text(at)
    assert "40 Einträge liegen über der Kapazitätslinie" in _all_text(at)
    table = at.dataframe[0].value
    assert list(table["Rang"][:3]) == [1, 2, 3]
    assert table["Betrag"][0].endswith(" €") and "," in table["Betrag"][0]
    pay = env["findings"].filter(pl.col("rule_ids") == "PAY001").height
    at.multiselect(key="f_rule").set_value(["PAY001"]).run()
    assert f"{pay} von 40 Einträgen" in _all_text(at)
    assert set(at.dataframe[0].value["Regeln"]) == {"PAY001"}
    at.text_input(key="f_text").input("B000001").run()
    assert list(at.dataframe[0].value["Beleg"]) == ["B000001"]
    at.button[0].click().run()                                  # reset filters
    assert "40 von 40 Einträgen" in _all_text(at)


def test_queue_pseudonymises_users(env: dict) -> None:
    at = page_as("queue.py", AppUser("max", "manager"))
    users = set(at.dataframe[0].value["Erfasser/in"])
    clear = set(env["findings"]["entered_by"])
    assert users and not users & clear
    assert all(u.startswith("P-") for u in users)


def test_queue_in_english(env: dict) -> None:
    at = AppTest.from_file(str(PAGES / "queue.py"), default_timeout=30)
    at.session_state["bw_lang"] = "en"
    at.session_state["bw_user"] = AppUser("anna", "auditor")
    at.run()
    assert at.title[0].value == "Review queue"
    assert "40 of 40 items" in _all_text(at)
    assert "." in at.dataframe[0].value["Amount"][0]


# --- item detail and decisions -------------------------------------------------------------------

def test_item_detail_shows_reasons_context_and_records_decision(env: dict) -> None:
    store: ReviewStore = env["store"]
    item_id = env["findings"]["item_id"][1]                     # the duplicate of B000000
    at = app_as(AppUser("anna", "auditor")).run()
    at.selectbox(key="q_open").set_value(item_id).run()
    at.button(key="q_open_button").click().run()
    assert not at.exception
    text = _all_text(at)
    assert "Beleg B000001 · Musterstadt 2025" in text
    assert "wurde schon am" in text                             # rule explanation
    assert "Betrag ungewöhnlich hoch" in text                   # model reason
    assert "Vergleich mit Beleg B000000 (aus Regel PAY001)" in text
    journal = at.dataframe[1].value                             # 0: top features, 1: lines
    assert list(journal["Zeile"]) == [1, 2]
    assert journal["Betrag"][1] == "-" + journal["Betrag"][0]  # balanced, German format
    assert all(str(u).startswith("P-") for u in journal["Erfasser/in"])
    at.radio(key="d_status").set_value("confirmed")
    at.form_submit_button[0].click().run()
    assert "Kommentar ist für" in at.error[0].value
    assert store.history(item_id) == []
    at.radio(key="d_status").set_value("confirmed")
    at.text_area(key="d_comment").input("Rechnung RE-1 zweimal bezahlt, Rückforderung läuft")
    at.selectbox(key="d_assignee").set_value("bert")
    at.form_submit_button[0].click().run()
    assert not at.exception
    events = store.history(item_id)
    assert [(e["status"], e["user"], e["assignee"]) for e in events] == [
        ("confirmed", "anna", "bert")]
    assert "Gespeichert (Ereignis 1)" in _all_text(at)
    assert store.verify_log().ok


def test_item_reveal_is_logged(env: dict) -> None:
    item_id = env["findings"]["item_id"][3]
    at = AppTest.from_file(str(PAGES / "item.py"), default_timeout=30)
    at.session_state["bw_user"] = AppUser("anna", "auditor")
    at.session_state["bw_item"] = item_id
    at.run()
    at.button(key="reveal").click().run()
    assert "Klarnamen werden angezeigt" in _all_text(at)
    journal = at.dataframe[1].value
    assert set(journal["Erfasser/in"]) <= set(env["findings"]["entered_by"]) | {None}
    assert ("anna", "reveal_personal_data", f"item {item_id}") in [
        (e["user"], e["action"], e["detail"]) for e in env["store"].access_log()]


def test_suppression_with_no_finding(env: dict) -> None:
    item = env["findings"].row(0, named=True)
    at = AppTest.from_file(str(PAGES / "item.py"), default_timeout=30)
    at.session_state["bw_user"] = AppUser("anna", "auditor")
    at.session_state["bw_item"] = item["item_id"]
    at.run()
    at.radio(key="d_status").set_value("no_finding")
    at.text_area(key="d_comment").input("Abschlagszahlung laut Vertrag")
    at.checkbox(key="d_suppress").check()
    at.multiselect(key="d_supp_keys").set_value(["vendor_id"])
    at.form_submit_button[0].click().run()
    assert not at.exception and not at.error
    supp = env["store"].list_suppressions()
    assert [s["scope"] for s in supp] == [{"rule_id": "PAY001", "vendor_id": item["vendor_id"]}]


def test_bulk_decision_on_filtered_selection(env: dict) -> None:
    store: ReviewStore = env["store"]
    at = app_as(AppUser("anna", "auditor")).run()
    at.multiselect(key="f_rule").set_value(["TIM001"]).run()
    at.switch_page("detect/app/pages/bulk.py").run()
    n = env["findings"].filter(pl.col("rule_ids") == "TIM001").height
    assert f"alle {n} Einträge" in _all_text(at)
    at.radio(key="b_status").set_value("no_finding")
    at.text_area(key="b_comment").input("Zeitfenster bekannt, Schichtdienst")
    at.checkbox(key="b_confirm").check()
    at.form_submit_button[0].click().run()
    assert not at.exception
    log = store.decision_log()
    assert log.height == n and set(log["status"]) == {"no_finding"}
    assert set(log["comment"]) == {"Zeitfenster bekannt, Schichtdienst"}
    assert f"{n} Entscheidungen gespeichert" in _all_text(at)


def test_bulk_decision_keeps_each_items_assignee(env: dict) -> None:
    """The bulk form has no assignee field: it must not undo the work allocation."""
    store: ReviewStore = env["store"]
    ids = env["findings"].filter(pl.col("rule_ids") == "TIM001")["item_id"].to_list()
    store.record_decision(ids[0], "open", "", "anna", assignee="bert")
    store.record_decision(ids[1], "open", "", "anna", assignee="anna")
    at = app_as(AppUser("anna", "auditor")).run()
    at.multiselect(key="f_rule").set_value(["TIM001"]).run()
    at.switch_page("detect/app/pages/bulk.py").run()
    at.radio(key="b_status").set_value("clarify")
    at.checkbox(key="b_confirm").check()
    at.form_submit_button[0].click().run()
    assert not at.exception and f"{len(ids)} Entscheidungen gespeichert" in _all_text(at)
    assert (store.get_item(ids[0])["assignee"], store.get_item(ids[1])["assignee"]) == (
        "bert", "anna")
    assert store.get_item(ids[0])["status"] == "clarify"
    bulk = store.decision_log().filter(pl.col("id") > 2)
    assert dict(zip(bulk["item_id"], bulk["assignee"], strict=True))[ids[0]] == "bert"
    assert store.verify_log().ok


@pytest.mark.parametrize("first_assignee, second_assignee", [("bert", None), (None, "bert")])
def test_item_form_does_not_carry_an_assignee_over_to_the_next_item(
        env: dict, first_assignee: str | None, second_assignee: str | None) -> None:
    """The assignee field is keyed per page, and Streamlit keeps a keyed widget's value when
    the options or index change: opening another item must show (and keep) that item's own
    assignee, not the one left over from the item before."""
    store: ReviewStore = env["store"]
    first, second = env["findings"]["item_id"].to_list()[3:5]
    for iid, who in ((first, first_assignee), (second, second_assignee)):
        if who:
            store.record_decision(iid, "open", "", "anna", assignee=who)
    at = AppTest.from_file(str(PAGES / "item.py"), default_timeout=30)
    at.session_state["bw_lang"] = "de"
    at.session_state["bw_user"] = AppUser("anna", "auditor")
    at.session_state["bw_item"] = first
    at.run()
    assert at.selectbox(key="d_assignee").value == (first_assignee or "")
    at.session_state["bw_item"] = second
    at.run()
    assert not at.exception
    assert at.selectbox(key="d_assignee").value == (second_assignee or "")
    at.radio(key="d_status").set_value("clarify")
    at.form_submit_button[0].click().run()
    assert not at.exception and not at.error
    assert store.get_item(second)["status"] == "clarify"
    assert store.get_item(second)["assignee"] == second_assignee
    assert store.history(second)[-1]["assignee"] == second_assignee


def test_item_form_untouched_assignee_keeps_a_colleagues_newer_assignment(env: dict) -> None:
    """Someone assigns the item while the form is open: saving a decision without touching
    the assignee field must not overwrite that assignment with the value shown earlier."""
    store: ReviewStore = env["store"]
    item_id = env["findings"]["item_id"][5]
    at = AppTest.from_file(str(PAGES / "item.py"), default_timeout=30)
    at.session_state["bw_lang"] = "de"
    at.session_state["bw_user"] = AppUser("anna", "auditor")
    at.session_state["bw_item"] = item_id
    at.run()
    assert at.selectbox(key="d_assignee").value == ""
    store.record_decision(item_id, "open", "", "max", assignee="bert")   # meanwhile
    at.radio(key="d_status").set_value("clarify")
    at.form_submit_button[0].click().run()
    assert not at.exception and not at.error
    assert store.get_item(item_id)["assignee"] == "bert"
    assert at.selectbox(key="d_assignee").value == "bert"        # the form shows it now
    # an explicit change still un-assigns
    at.selectbox(key="d_assignee").set_value("")
    at.radio(key="d_status").set_value("clarify")
    at.form_submit_button[0].click().run()
    assert store.get_item(item_id)["assignee"] is None


# --- runs, rules, audit, users, export -----------------------------------------------------------

def test_runs_page_offers_data_docs(env: dict) -> None:
    at = page_as("runs.py", AppUser("max", "manager"))
    assert not at.exception
    overview = at.dataframe[0].value
    assert list(overview["rows_quarantined"]) == [3]
    assert bool(overview["data_docs"][0]) is True
    assert "Data Docs von" in at.get("download_button")[0].proto.label


def test_rules_page_precision_and_admin_switch(env: dict) -> None:
    store: ReviewStore = env["store"]
    pay = env["findings"].filter(pl.col("rule_ids") == "PAY001")["item_id"].to_list()
    store.record_decision(pay[0], "confirmed", "doppelt", "anna")
    store.record_decision(pay[1], "no_finding", "Rate", "anna")
    at = page_as("rules.py", AppUser("anna", "auditor"))
    assert not at.exception
    table = at.dataframe[0].value
    row = table[table["rule_id"] == "PAY001"].iloc[0]
    assert (row["confirmed"], row["no_finding"]) == (1, 1)
    assert row["precision"] == pytest.approx(0.5)
    assert len(at.toggle) == 0                                  # auditors do not switch rules
    admin = page_as("rules.py", AppUser("root", "admin"))
    admin.selectbox(key="ru_rule").set_value("PAY001").run()
    admin.toggle(key="ru_switch_PAY001").set_value(False).run()
    assert not admin.exception
    assert "[rules.PAY001]\nenabled = false" in env["config"].read_text("utf-8")


def test_audit_trail_shows_chain_status(env: dict) -> None:
    store: ReviewStore = env["store"]
    store.record_decision(env["findings"]["item_id"][0], "clarify", "", "anna")
    at = page_as("audit.py", AppUser("max", "manager"))
    assert "Prüfkette intakt" in at.success[0].value
    log = at.dataframe[0].value
    assert list(log["user"]) == ["anna"] and list(log["journal_id"]) == ["B000000"]


def test_admin_adds_user(env: dict) -> None:
    at = page_as("users.py", AppUser("root", "admin"))
    assert set(at.dataframe[0].value["username"]) == {"anna", "max", "root", "bert"}
    at.text_input(key="u_name").input("clara")
    at.text_input(key="u_password").input("lang-genug-123")
    at.selectbox(key="u_role").set_value("manager")
    at.form_submit_button[0].click().run()
    assert not at.exception
    assert env["store"].get_user("clara")["role"] == "manager"
    assert auth.authenticate(env["store"], "clara", "lang-genug-123") is not None


def test_export_page_builds_file(env: dict) -> None:
    at = page_as("export.py", AppUser("max", "manager"))
    at.radio(key="e_fmt").set_value("csv").run()
    at.button(key="e_build").click().run()
    assert not at.exception
    fmt, payload = at.session_state["bw_export"]
    rows = list(csv.DictReader(io.StringIO(payload.decode("utf-8-sig"))))
    assert fmt == "csv" and len(rows) == 40 and rows[0]["journal_id"] == "B000000"
    assert all(r["entered_by"].startswith("P-") for r in rows)  # pseudonymised for export


def test_oidc_identity_signs_in_with_local_role(env: dict) -> None:
    env["config"].write_text('[app]\noidc_provider = "keycloak"\n', "utf-8")
    env["store"].add_user("k.meier@musterstadt.de", None, "manager", "K. Meier")
    at = AppTest.from_file(str(APP), default_timeout=30)
    at.user = {"is_logged_in": False}
    at.run()
    assert at.button[0].label == "Mit Single Sign-on anmelden"
    assert len(at.dataframe) == 0
    at = AppTest.from_file(str(APP), default_timeout=30)
    at.user = {"is_logged_in": True, "email": "k.meier@musterstadt.de", "name": "K. Meier"}
    at.run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Prüfliste"]
    assert at.session_state["bw_user"].role == "manager"
    stranger = AppTest.from_file(str(APP), default_timeout=30)
    stranger.user = {"is_logged_in": True, "email": "fremd@example.org"}
    stranger.run()
    assert "keinem aktiven Konto zugeordnet" in stranger.error[0].value
    assert len(stranger.dataframe) == 0


def test_data_in_markdown_is_escaped(env: dict) -> None:
    at = AppTest.from_file(str(PAGES / "item.py"), default_timeout=30)
    at.session_state["bw_user"] = AppUser("anna", "auditor")
    at.query_params["item"] = "[klick](javascript:alert(1))"
    at.run()
    assert at.warning[0].value == (
        "Beleg \\[klick\\]\\(javascript:alert\\(1\\)\\) ist im aktuellen Lauf nicht vorhanden.")


def test_packaged_entry_point_is_the_same_app(env: dict) -> None:
    at = AppTest.from_file(str(ROOT / "detect" / "app_entry.py"), default_timeout=30).run()
    assert not at.exception and [t.value for t in at.title] == ["Anmelden"]


def test_pages_before_the_first_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BELEGWACHT_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("BELEGWACHT_CONFIG", str(tmp_path / "belegwacht.toml"))
    ReviewStore.for_data_dir(tmp_path / "empty").add_user("anna", None, "auditor")
    for page in ("queue.py", "runs.py", "bulk.py", "export.py", "audit.py", "rules.py"):
        at = page_as(page, AppUser("anna", "auditor"))
        assert not at.exception, page
        assert len(at.dataframe) <= 1, page                     # rules: the catalog only
    at = page_as("queue.py", AppUser("anna", "auditor"))
    assert at.info[0].value.startswith("Noch kein veröffentlichter Lauf")


def test_login_locked_after_failures(env: dict) -> None:
    for _ in range(5):
        env["store"].log_access("anna", "login_failed")
    at = app_as(None).run()
    at.text_input(key="login_user").input("anna")
    at.text_input(key="login_password").input(PASSWORD)
    at.form_submit_button[0].click().run()
    assert "Zu viele Fehlversuche" in at.error[0].value
    assert [t.value for t in at.title] == ["Anmelden"] and len(at.dataframe) == 0


def test_report_page_shows_the_monthly_report(env: dict) -> None:
    at = page_as("report.py", AppUser("max", "manager"))
    assert not at.exception
    assert at.title[0].value == "Monatsbericht"
    month = at.selectbox[0].value
    assert len(month) == 7 and month[4] == "-"
    assert [b.label for b in at.get("download_button")] == ["Als HTML herunterladen"]
