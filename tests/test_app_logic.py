"""Logic of the review app without a browser: auth and roles, filters, formatting, rule switch,
precision, writes behind permission checks, export safety."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import polars as pl
import pytest

from detect import auth
from detect.app import actions, data
from detect.app.context import Masker, mask_columns
from detect.app.i18n import TEXT, money_expr, t
from detect.app.rule_switch import rule_states, set_rule_enabled
from detect.app.synthetic import build_run
from detect.auth import AppUser, PermissionDenied
from detect.errors import ConfigError
from detect.store import ReviewStore

AUDITOR = AppUser("anna", "auditor")
MANAGER = AppUser("max", "manager")
ADMIN = AppUser("root", "admin")


@pytest.fixture()
def run(tmp_path: Path) -> dict:
    return build_run(tmp_path, n_items=30)


# --- auth ---------------------------------------------------------------------------------------

def test_role_matrix() -> None:
    assert auth.can("auditor", "decide") and not auth.can("manager", "decide")
    assert not auth.can("admin", "decide")
    assert auth.can("admin", "manage_users")
    assert not auth.can("auditor", "manage_users") and not auth.can("manager", "manage_users")
    assert auth.can("manager", "view") and auth.can("manager", "export")
    assert auth.can("auditor", "reveal_personal") and not auth.can("manager", "reveal_personal")
    assert not auth.can(None, "view") and not auth.can("auditor", "no-such-action")
    with pytest.raises(PermissionDenied, match="not signed in"):
        auth.require(None, "view")
    with pytest.raises(PermissionDenied, match="'manager' may not decide"):
        auth.require(MANAGER, "decide")


def test_users_hashing_and_authentication(tmp_path: Path) -> None:
    store = ReviewStore.for_data_dir(tmp_path)
    auth.add_user(store, "anna", "korrekt-pferd", "auditor", "Anna")
    row = store.get_user("anna")
    assert row["password_hash"].startswith("$argon2id$")
    assert "korrekt-pferd" not in row["password_hash"]
    user = auth.authenticate(store, "anna", "korrekt-pferd")
    assert user is not None and (user.username, user.role, user.label) == ("anna", "auditor",
                                                                          "Anna")
    assert auth.authenticate(store, "anna", "falsch-falsch") is None
    assert auth.authenticate(store, "nobody", "korrekt-pferd") is None
    store.disable_user("anna")
    assert auth.authenticate(store, "anna", "korrekt-pferd") is None
    with pytest.raises(auth.AuthError, match="too short"):
        auth.add_user(store, "bob", "kurz", "auditor")
    with pytest.raises(auth.AuthError, match="unknown role"):
        auth.add_user(store, "bob", "lang-genug-123", "boss")
    with pytest.raises(auth.AuthError, match="invalid user name"):
        auth.add_user(store, "b ob", "lang-genug-123", "auditor")
    with pytest.raises(auth.AuthError, match="exists already"):
        auth.add_user(store, "anna", "lang-genug-123", "auditor")


def test_oidc_identity_maps_to_local_role(tmp_path: Path) -> None:
    store = ReviewStore.for_data_dir(tmp_path)
    store.add_user("k.meier@musterstadt.de", None, "manager", "K. Meier")
    user = auth.oidc_user(store, {"email": "k.meier@musterstadt.de", "sub": "abc"})
    assert user is not None and (user.role, user.via) == ("manager", "oidc")
    assert auth.oidc_user(store, {"email": "fremd@example.org", "sub": "x"}) is None
    store.disable_user("k.meier@musterstadt.de")
    assert auth.oidc_user(store, {"email": "k.meier@musterstadt.de"}) is None


def test_lockout_after_repeated_failures(tmp_path: Path) -> None:
    store = ReviewStore.for_data_dir(tmp_path)
    for _ in range(4):
        store.log_access("anna", "login_failed")
    store.log_access("bert", "login_failed")
    assert not auth.locked_out(store, "anna")
    store.log_access("anna", "login_failed")
    assert auth.locked_out(store, "anna") and not auth.locked_out(store, "bert")
    assert not auth.locked_out(store, "anna", now=time.time() + 16 * 60)


def test_session_expiry() -> None:
    user = AppUser("anna", "auditor", last_seen=time.time() - 61 * 60)
    assert auth.is_expired(user, 60)
    assert not auth.is_expired(user, 120)
    assert not auth.is_expired(user, 0)            # 0 = never expire


# --- formatting and texts -------------------------------------------------------------------------

def test_texts_complete_and_money_formatting() -> None:
    assert all(de.strip() and en.strip() for de, en in TEXT.values())
    assert t("status_no_finding", "de") == "kein Befund"
    assert t("status_no_finding", "en") == "no finding"
    frame = pl.DataFrame({"a": [-1234567.5, 0.05, 1000.0, None]})
    assert frame.select(money_expr("a", "de"))["a"].to_list() == [
        "-1.234.567,50 €", "0,05 €", "1.000,00 €", None]
    assert frame.select(money_expr("a", "en"))["a"].to_list()[0] == "-1,234,567.50 €"


# --- queue filtering ------------------------------------------------------------------------------

def test_queue_filters_counts_and_capacity(run: dict) -> None:
    store: ReviewStore = run["store"]
    findings = run["findings"]
    queue = data.queue_frame(findings, data.status_frame(store.items()))
    assert queue.height == 30 and queue["rank"].to_list() == list(range(1, 31))
    pay = data.apply_filter(queue, data.QueueFilter(rules=["PAY001"]))
    assert pay.height == findings.filter(pl.col("rule_ids") == "PAY001").height
    assert set(pay["rule_ids"]) == {"PAY001"}
    amounts = queue["amount"].cast(pl.Float64).abs()
    ranged = data.apply_filter(queue, data.QueueFilter(amount_min=100, amount_max=1000))
    assert ranged.height == ((amounts >= 100) & (amounts <= 1000)).sum()
    text = data.apply_filter(queue, data.QueueFilter(text="b000007"))
    assert text["journal_id"].to_list() == ["B000007"]
    combined = data.apply_filter(queue, data.QueueFilter(rules=["PAY001"],
                                                         accounts=["5211"]))
    assert set(combined["gl_account"]) <= {"5211"}
    store.record_decision(findings["item_id"][0], "confirmed", "echt doppelt", "anna")
    queue = data.queue_frame(findings, data.status_frame(store.items()))
    n = data.counts(queue)
    assert (n["total"], n["open"], n["confirmed"]) == (30, 29, 1)
    assert data.apply_filter(queue, data.QueueFilter(statuses=["confirmed"])).height == 1
    assert data.capacity(queue) == {"above": 30, "above_open": 29}
    options = data.filter_options(queue)
    assert options["rule_ids"] == sorted({"PAY001", "TIM001", "USR001", "AMT001", "TXT001"})
    assert options["severity"] == ["low", "medium", "high"]


def test_filter_100k_items() -> None:
    n = 100_000
    queue = pl.DataFrame({
        "item_id": [f"{i:016x}" for i in range(n)], "rank": range(1, n + 1),
        "status": ["open"] * n, "severity": ["high", "low"] * (n // 2),
        "rule_ids": ["PAY001,TIM001", "AMT001"] * (n // 2), "period": [1, 2, 3, 4] * (n // 4),
        "gl_account": ["5211"] * n, "cost_center": ["KST1"] * n, "entered_by": ["u"] * n,
        "vendor_id": ["K1"] * n, "assignee": [None] * n, "amount": [float(i) for i in range(n)],
        "journal_id": [f"B{i}" for i in range(n)], "description": ["Rechnung"] * n,
        "reasons": ["x"] * n})
    flt = data.QueueFilter(rules=["TIM001"], periods=[1, 3], amount_min=10, text="rechn")
    out = data.apply_filter(queue, flt)             # timing: bench/app_render.py, not asserted
    assert out.height == 49_995                     # even ranks minus amounts 0..9 at period 1/3


def test_related_journals_and_features() -> None:
    hits = pl.DataFrame({"rule_id": ["PAY001", "TIM001", "PRC002"],
                         "evidence": [json.dumps({"first_journal": "B1", "journal_id": "B2"}),
                                      "not json",
                                      json.dumps({"journals": ["B2", "B3", "B1"]})]})
    assert data.related_journals(hits, "B2") == [("PAY001", "B1", None), ("PRC002", "B3", None),
                                                 ("PRC002", "B1", None)]
    feats = data.top_features({"top_features": json.dumps(
        [{"feature": "hour", "value": 23, "contribution": 0.4}])})
    assert feats.row(0) == ("hour", "23", 0.4)


def test_mask_columns_is_stable_and_keyed() -> None:
    frame = pl.DataFrame({"entered_by": ["mmueller", "kschmidt", "mmueller", None]})
    a = mask_columns(frame, ["entered_by"], b"k" * 32)["entered_by"].to_list()
    b = mask_columns(frame, ["entered_by"], b"x" * 32)["entered_by"].to_list()
    assert a[0] == a[2] and a[0] != a[1] and a[3] is None
    assert a[0].startswith("P-") and "mmueller" not in a[0] and a[0] != b[0]


def test_masker_hides_names_in_columns_and_texts() -> None:
    masker = Masker.build(["OTTO_W", "OTTO_WX", "AB", "Erika Muster"], b"k" * 32)
    assert "AB" not in masker.names                      # too short to find safely in texts
    frame = pl.DataFrame({"entered_by": ["OTTO_W", "AB"],
                          "reasons": ["Beleg von OTTO_WX über Limit von OTTO_W",
                                      "Zahlung an Erika Muster"]})
    out = masker.frame(frame, ["entered_by"], ["reasons"])
    p_w, p_wx = masker.names["OTTO_W"], masker.names["OTTO_WX"]
    assert out["entered_by"].to_list()[0] == p_w and out["entered_by"][1].startswith("P-")
    assert out["reasons"][0] == f"Beleg von {p_wx} über Limit von {p_w}"
    assert "Erika" not in out["reasons"][1]
    assert masker.text("OTTO_W hat 4 Zeilen erfasst") == f"{p_w} hat 4 Zeilen erfasst"


# --- rules: switch and precision -----------------------------------------------------------------

def test_rule_switch_edits_config_minimally(tmp_path: Path) -> None:
    path = tmp_path / "belegwacht.toml"
    path.write_text('entity = "Musterstadt"  # unsere Stadt\n\n[rules.PAY001]\n'
                    'window_days = 45\n\n[thresholds]\nmateriality = 1000.0\n', "utf-8")
    set_rule_enabled(path, "PAY001", False)
    set_rule_enabled(path, "TIM002", False)
    text = path.read_text("utf-8")
    assert "# unsere Stadt" in text and "window_days = 45" in text
    assert rule_states(path, ["PAY001", "TIM002", "USR001"]) == {
        "PAY001": False, "TIM002": False, "USR001": True}
    set_rule_enabled(path, "PAY001", True)
    assert rule_states(path, ["PAY001"]) == {"PAY001": True}
    assert text.count("[rules.PAY001]") == 1
    inline = tmp_path / "inline.toml"
    inline.write_text("rules = { PAY001 = { enabled = true } }\n", "utf-8")
    with pytest.raises(ConfigError):
        set_rule_enabled(inline, "PAY001", False)
    assert inline.read_text("utf-8") == "rules = { PAY001 = { enabled = true } }\n"
    with pytest.raises(ConfigError, match="invalid rule id"):
        set_rule_enabled(path, "x]\n[evil", False)


def test_precision_per_rule(run: dict, tmp_path: Path) -> None:
    store: ReviewStore = run["store"]
    f = run["findings"]
    pay = f.filter(pl.col("rule_ids") == "PAY001")["item_id"].to_list()
    store.record_decision(pay[0], "confirmed", "doppelt", "anna")
    store.record_decision(pay[1], "no_finding", "Rate", "anna")
    store.record_decision(pay[2], "confirmed", "doppelt", "anna")
    store.record_decision(pay[2], "no_finding", "doch nicht", "anna")   # the latest counts
    prec = data.rule_precision(data.item_rules(tmp_path),
                               data.latest_status(store.decision_log()))
    row = prec.filter(pl.col("rule_id") == "PAY001").row(0, named=True)
    assert (row["confirmed"], row["no_finding"]) == (1, 2)
    assert row["precision"] == pytest.approx(1 / 3)
    hits = data.hits_per_run(tmp_path)
    assert hits.filter(pl.col("rule_id") == "PAY001")["hits"].item() == len(
        f.filter(pl.col("rule_ids") == "PAY001"))
    assert hits["run_id"].unique().to_list() == ["20250131T020000000000Z_Musterstadt"]


# --- writes ---------------------------------------------------------------------------------------

def test_decisions_enforce_role_comment_and_narrow_suppression(run: dict) -> None:
    store: ReviewStore = run["store"]
    item = run["findings"].row(1, named=True)
    with pytest.raises(PermissionDenied):
        actions.decide(store, MANAGER, item, "confirmed", "sieht falsch aus")
    with pytest.raises(PermissionDenied):
        actions.decide(store, ADMIN, item, "confirmed", "sieht falsch aus")
    with pytest.raises(actions.DecisionError, match="comment_required"):
        actions.decide(store, AUDITOR, item, "no_finding", "   ")
    assert store.history(item["item_id"]) == []
    with pytest.raises(actions.DecisionError, match="suppress_too_wide"):
        actions.suppression_scope(item, "PAY001", [])
    scope = actions.suppression_scope(item, "PAY001", ["vendor_id"])
    assert scope == {"rule_id": "PAY001", "vendor_id": item["vendor_id"]}
    event = actions.decide(store, AUDITOR, item, "no_finding", "Ratenzahlung laut Vertrag",
                           assignee="bert", suppression=scope)
    events = store.history(item["item_id"])
    assert [e["id"] for e in events] == [event]
    assert (events[0]["status"], events[0]["user"], events[0]["assignee"]) == (
        "no_finding", "anna", "bert")
    assert store.list_suppressions()[0]["scope"] == scope
    ids = run["findings"]["item_id"].to_list()[2:7]
    with pytest.raises(PermissionDenied):
        actions.decide_bulk(store, MANAGER, ids, "clarify", "")
    assert actions.decide_bulk(store, AUDITOR, ids, "clarify", "Rückfrage Kämmerei") == 5
    assert store.verify_log().ok and store.verify_log().events == 6


def test_decisions_without_an_assignee_keep_it(run: dict) -> None:
    """Neither a bulk decision nor a single one that leaves the assignee out clears it."""
    store: ReviewStore = run["store"]
    ids = run["findings"]["item_id"].to_list()[:4]
    item = run["findings"].row(0, named=True)
    actions.decide(store, AUDITOR, item, "clarify", "", assignee="bert")
    actions.decide(store, AUDITOR, run["findings"].row(1, named=True), "clarify", "",
                   assignee="anna")
    assert actions.decide_bulk(store, AUDITOR, ids, "clarify", "Rückfrage Kämmerei") == 4
    assert [store.get_item(i)["assignee"] for i in ids] == ["bert", "anna", None, None]
    assert [store.history(i)[-1]["assignee"] for i in ids] == ["bert", "anna", None, None]
    actions.decide(store, AUDITOR, {**item, "assignee": "bert"}, "confirmed", "echt")
    assert store.get_item(ids[0])["assignee"] == "bert"
    actions.decide(store, AUDITOR, {**item, "assignee": "bert"}, "confirmed", "echt",
                   assignee="")                                   # "nobody" in the form
    assert store.get_item(ids[0])["assignee"] is None
    assert store.verify_log().ok and store.verify_log().events == 8


def test_admin_writes_and_reveal_are_checked_and_logged(run: dict, tmp_path: Path) -> None:
    store: ReviewStore = run["store"]
    with pytest.raises(PermissionDenied):
        actions.add_user(store, AUDITOR, "neu", "lang-genug-123", "auditor", None)
    with pytest.raises(PermissionDenied):
        actions.switch_rule(store, MANAGER, tmp_path / "b.toml", "PAY001", False)
    with pytest.raises(PermissionDenied):
        actions.reveal(store, MANAGER, "x")
    actions.add_user(store, ADMIN, "neu", "lang-genug-123", "manager", "Neu")
    actions.set_role(store, ADMIN, "neu", "auditor")
    assert store.get_user("neu")["role"] == "auditor"
    with pytest.raises(PermissionDenied, match="own account"):
        actions.disable_user(store, ADMIN, "root")
    actions.switch_rule(store, ADMIN, tmp_path / "b.toml", "PAY001", False)
    actions.reveal(store, AUDITOR, "item42")
    log = [(e["user"], e["action"]) for e in store.access_log()]
    assert ("anna", "reveal_personal_data") in log and ("root", "rule_switch") in log
    assert ("root", "user_add") in log


def test_export_is_formula_safe_and_logged(run: dict) -> None:
    store: ReviewStore = run["store"]
    queue = data.queue_frame(run["findings"], data.status_frame(store.items())).with_columns(
        pl.when(pl.col("rank") == 1).then(pl.lit("=HYPERLINK(\"http://x\")"))
        .otherwise(pl.col("description")).alias("description"))
    payload = actions.export_bytes(store, MANAGER, queue, "csv", detail="run r1")
    rows = list(csv.DictReader(io.StringIO(payload.decode("utf-8-sig"))))
    assert len(rows) == 30
    assert rows[0]["description"] == "'=HYPERLINK(\"http://x\")"
    assert rows[0]["status"] == "open" and rows[0]["rank"] == "1"
    xlsx = actions.export_bytes(store, AUDITOR, queue, "xlsx")
    assert xlsx[:2] == b"PK"
    assert [e["action"] for e in store.access_log()][:2] == ["export", "export"]
    with pytest.raises(PermissionDenied):
        actions.export_bytes(store, None, queue, "csv")


def test_page_scripts_have_no_stray_literals() -> None:
    """Streamlit 'magic' renders bare expressions of a page script: only the docstring may be."""
    import ast
    root = Path(__file__).resolve().parents[1]
    for path in [root / "app.py", *sorted((root / "detect" / "app" / "pages").glob("*.py"))]:
        body = ast.parse(path.read_text("utf-8")).body
        stray = [node.lineno for node in body[1:] if isinstance(node, ast.Expr)
                 and not isinstance(node.value, ast.Call)]
        assert stray == [], f"{path.name}: bare expression at line(s) {stray}"
