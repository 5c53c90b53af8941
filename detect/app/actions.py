"""Every write the app makes, each behind the server-side permission check.

Why a module of its own: pages only collect input; these functions check the role
(``detect.auth.require``), validate, and call the append-only store. A manipulated browser that
shows a hidden button still ends here and is refused. Nothing here imports Streamlit.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import polars as pl

from detect import auth
from detect.app.rule_switch import set_rule_enabled
from detect.auth import AppUser, PermissionDenied
from detect.errors import UserError
from detect.store import COMMENT_REQUIRED, KEEP, SCOPE_KEYS, STATUSES, Keep, ReviewStore

NARROW_KEYS: tuple[str, ...] = tuple(k for k in SCOPE_KEYS if k != "rule_id")


class DecisionError(UserError):
    """A decision the reviewer must correct (missing comment, too wide a suppression...)."""


def _check_decision(status: str, comment: str) -> str:
    if status not in STATUSES:
        raise DecisionError(f"unknown status {status!r}")
    comment = (comment or "").strip()
    if status in COMMENT_REQUIRED and not comment:
        raise DecisionError("comment_required")
    return comment


def suppression_scope(item: dict[str, Any], rule_id: str, keys: list[str]) -> dict[str, str]:
    """A narrow scope built from the item's own values: the rule plus at least one more key.

    Scope values are never typed in, so a suppression cannot be wider than the item it came
    from.
    """
    rules = [r.strip() for r in str(item.get("rule_ids") or "").split(",") if r.strip()]
    if rule_id not in rules:
        raise DecisionError("suppress_too_wide")
    scope = {"rule_id": rule_id}
    for key in keys:
        if key in NARROW_KEYS and item.get(key) not in (None, ""):
            scope[key] = str(item[key])
    if len(scope) < 2:
        raise DecisionError("suppress_too_wide")
    return scope


def decide(store: ReviewStore, user: AppUser | None, item: dict[str, Any], status: str,
           comment: str, *, assignee: str | None | Keep = KEEP,
           suppression: dict[str, str] | None = None, run_id: str | None = None) -> int:
    """Record one decision; returns the event id.

    ``assignee``: ``KEEP`` (default) leaves the item's assignee untouched; a name (or ``""`` /
    ``None`` for nobody) changes it, which needs the ``assign`` permission when it differs
    from ``item["assignee"]``.
    """
    actor = auth.require(user, "decide")
    comment = _check_decision(status, comment)
    if assignee is not KEEP:
        assignee = assignee or None
        if assignee != (item.get("assignee") or None):
            auth.require(user, "assign")
    if suppression is not None:
        auth.require(user, "suppress")
        if status != "no_finding":
            raise DecisionError("a suppression can only accompany “no finding”")
    return store.record_decision(item["item_id"], status, comment, actor.username,
                                 run_id=run_id, assignee=assignee,
                                 suppression=suppression)


def decide_bulk(store: ReviewStore, user: AppUser | None, item_ids: list[str], status: str,
                comment: str) -> int:
    """The same decision for many items in one transaction; returns how many were recorded.

    Each item keeps its own assignee (the store's ``KEEP``): the bulk form has no assignee
    field, so it must not change the work allocation.
    """
    actor = auth.require(user, "decide")
    comment = _check_decision(status, comment)
    if not item_ids:
        return 0
    return store.record_decisions(list(item_ids), status, comment, actor.username)


def reveal(store: ReviewStore, user: AppUser | None, item_id: str) -> None:
    """Allow clear names for one item in this session; the access is logged first."""
    actor = auth.require(user, "reveal_personal")
    store.log_access(actor.username, "reveal_personal_data", f"item {item_id}")


def add_user(store: ReviewStore, user: AppUser | None, username: str, password: str, role: str,
             display_name: str | None) -> None:
    actor = auth.require(user, "manage_users")
    auth.add_user(store, username.strip(), password, role, display_name or None)
    store.log_access(actor.username, "user_add", f"{username} ({role})")


def set_role(store: ReviewStore, user: AppUser | None, username: str, role: str) -> None:
    actor = auth.require(user, "manage_users")
    auth.check_role(role)
    store.set_role(username, role)
    store.log_access(actor.username, "user_set_role", f"{username} -> {role}")


def disable_user(store: ReviewStore, user: AppUser | None, username: str) -> None:
    actor = auth.require(user, "manage_users")
    if username == actor.username:
        raise PermissionDenied("you cannot disable your own account")
    store.disable_user(username)
    store.log_access(actor.username, "user_disable", username)


def revoke_suppression(store: ReviewStore, user: AppUser | None, suppression_id: str,
                       reason: str) -> None:
    actor = auth.require(user, "manage_suppressions")
    store.revoke_suppression(suppression_id, actor.username, reason)


def switch_rule(store: ReviewStore, user: AppUser | None, config_path: Any, rule_id: str,
                enabled: bool) -> None:
    """Switch a rule on/off in belegwacht.toml (takes effect with the next run); logged."""
    actor = auth.require(user, "manage_rules")
    set_rule_enabled(config_path, rule_id, enabled)
    store.log_access(actor.username, "rule_switch",
                     f"{rule_id} enabled={str(enabled).lower()} in {config_path}")


EXPORT_COLUMNS: tuple[str, ...] = (
    "rank", "risk_score", "status", "assignee", "last_comment", "decided_by", "entity",
    "fiscal_year", "journal_id", "line_no", "posting_date", "period", "gl_account", "amount",
    "journal_amount", "rule_ids", "severity", "model_score", "reasons", "cost_center",
    "entered_by", "vendor_id", "document_type", "description", "item_id")


def export_bytes(store: ReviewStore, user: AppUser | None, queue: pl.DataFrame, fmt: str,
                 detail: str = "", lang: str = "de") -> bytes:
    """The filtered queue with decisions as CSV or XLSX; logged.

    Reuses ``detect.export``'s writers, which neutralise formula-like text cells (CSV/formula
    injection) and keep numbers and dates typed.
    """
    actor = auth.require(user, "export")
    from detect.export import write_csv, write_xlsx

    if fmt not in ("csv", "xlsx"):
        raise DecisionError(f"unknown export format {fmt!r}")
    frame = queue.select([c for c in EXPORT_COLUMNS if c in queue.columns])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"export.{fmt}"
        if fmt == "xlsx":
            write_xlsx(frame, path, run_label=detail, lang=lang)
        else:
            write_csv(frame, path)
        payload = path.read_bytes()
    store.log_access(actor.username, "export",
                     f"{fmt} {frame.height} rows {detail}".strip())
    return payload
