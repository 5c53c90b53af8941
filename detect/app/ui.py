"""Streamlit glue shared by every page: context, language, session, guard, cached loaders.

Why a guard in every page: ``st.navigation`` only lists pages the role may see, but a page is
still a URL; each page calls ``guard(permission)`` first, which stops rendering (server side)
unless a live session's role allows it.
"""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl
import streamlit as st

from detect import auth
from detect.app import data
from detect.app.context import AppContext, Masker, build_context
from detect.app.i18n import md, t
from detect.auth import AppUser

USER_KEY = "bw_user"
LANG_KEY = "bw_lang"
ITEM_KEY = "bw_item"
FILTER_KEY = "bw_filter"
REVEALED_KEY = "bw_revealed"
PAGES_DIR = Path(__file__).resolve().parent / "pages"


@st.cache_resource(show_spinner=False)
def _context(data_dir: str, config: str) -> AppContext:
    return build_context(Path(data_dir) if data_dir else None, Path(config) if config else None)


def context() -> AppContext:
    import os

    from detect.app.context import CONFIG_ENV, DATA_DIR_ENV
    return _context(os.environ.get(DATA_DIR_ENV, ""), os.environ.get(CONFIG_ENV, ""))


def lang() -> str:
    return st.session_state.get(LANG_KEY) or "de"


def tr(key: str, **kwargs: object) -> str:
    """The text in the session's language; placeholder values are Markdown-escaped."""
    return t(key, lang(), **{k: md(v) if isinstance(v, str) else v for k, v in kwargs.items()})


def language_switch(default: str) -> None:
    if LANG_KEY not in st.session_state:
        st.session_state[LANG_KEY] = default if default in ("de", "en") else "de"
    st.sidebar.segmented_control("Sprache / Language", ["de", "en"], key=LANG_KEY,
                                 format_func=lambda v: "Deutsch" if v == "de" else "English")
    if not st.session_state.get(LANG_KEY):   # a click on the selected option clears it
        st.session_state[LANG_KEY] = default


def current_user(ctx: AppContext) -> AppUser | None:
    """The session's user, or None; expires idle sessions and refreshes the activity time."""
    user: AppUser | None = st.session_state.get(USER_KEY)
    if user is None:
        return None
    if auth.is_expired(user, ctx.settings.app.session_timeout_minutes):
        sign_out(ctx, expired=True)
        return None
    fresh = ctx.store.get_user(user.username)   # disabled or demoted since sign-in?
    if not fresh or not fresh.get("active", True):
        sign_out(ctx)
        return None
    user.role = fresh["role"]
    user.last_seen = time.time()
    return user


def sign_out(ctx: AppContext, expired: bool = False) -> None:
    user: AppUser | None = st.session_state.pop(USER_KEY, None)
    for key in (ITEM_KEY, FILTER_KEY, REVEALED_KEY):
        st.session_state.pop(key, None)
    if expired:
        st.session_state["bw_expired"] = True
    if user is not None:
        ctx.store.log_access(user.username, "session_expired" if expired else "logout")
        if user.via == "oidc":
            st.logout()


def guard(permission: str = "view") -> tuple[AppContext, AppUser]:
    """Stop the page unless a signed-in user's role allows ``permission``."""
    ctx = context()
    user = current_user(ctx)
    if user is None:
        st.warning(tr("login_intro"))
        st.stop()
    if not auth.can(user.role, permission):
        st.error(tr("denied", detail=permission))
        st.stop()
    return ctx, user  # type: ignore[return-value]


COLUMN_LABELS = {
    "run_id": "c_run", "current": "c_current", "entity": "c_entity", "created_at": "c_created",
    "format": "format", "rows_in": "c_rows_in", "rows_clean": "c_rows_clean",
    "rows_quarantined": "quarantined", "warnings": "warnings", "items": "c_items",
    "outcome": "c_outcome", "data_docs": "data_docs", "id": "c_event", "ts": "c_time",
    "user": "c_who", "status": "c_status", "comment": "comment", "assignee": "c_assignee",
    "journal_id": "c_journal", "fiscal_year": "c_fy", "suppression_id": "suppressions",
    "username": "username", "display_name": "display_name", "role": "role", "state": "f_status",
    "rule_id": "f_rule", "title": "c_title", "severity": "c_severity", "family": "c_family",
    "enabled": "enabled", "hits": "hits", "confirmed": "confirmed_n",
    "no_finding": "no_finding_n", "precision": "precision",
}
"""Column name -> text key, for tables shown as they are (``column_config`` labels)."""


def labels(columns: list[str], **extra: object) -> dict[str, object]:
    """``column_config`` that shows translated headers; ``extra`` adds column configs."""
    config: dict[str, object] = {c: tr(COLUMN_LABELS[c]) for c in columns if c in COLUMN_LABELS}
    config.update(extra)
    return config


def show_error(exc: Exception) -> None:
    """A user-facing error: translated when it is a known key, else the message itself."""
    message = getattr(exc, "message", str(exc))
    st.error(tr(message) if message in ("comment_required", "suppress_too_wide") else md(message))


# --- cached data ------------------------------------------------------------------------------

# cache_resource, not cache_data: Polars frames are immutable, so sessions can share one object
# instead of unpickling a 100,000-row copy on every render.
@st.cache_resource(show_spinner=False, max_entries=4)
def _findings(run_dir: str, mtime: float) -> pl.DataFrame:
    return data.load_findings(Path(run_dir))


@st.cache_resource(show_spinner=False, max_entries=4)
def _queue(run_dir: str, mtime: float, store_url: str, version: tuple[int, int, int],
           masked: bool, _ctx: AppContext) -> pl.DataFrame:
    """Findings joined with review state; shared by all sessions until the store changes."""
    state = data.status_frame(data.review_state(_ctx.store))
    queue = data.queue_frame(_findings(run_dir, mtime), state)
    if masked:
        queue = masker(run_dir, mtime, _ctx).frame(queue, ["entered_by"],
                                                   ["reasons", "reasons_en", "description"])
    return queue


@st.cache_resource(show_spinner=False, max_entries=4)
def masker(run_dir: str, mtime: float, _ctx: AppContext) -> Masker:
    """Pseudonyms for every personal value of the run (built once per run)."""
    values = data.personal_values(_ctx.data_dir, Path(run_dir))
    return Masker.build(values, _ctx.pseudonym_key)


def masks_personal(user: AppUser) -> bool:
    """Queue-wide personal data is always pseudonymised; auditors reveal per item (logged)."""
    return True


@st.cache_resource(show_spinner=False, max_entries=4)
def _options(run_dir: str, mtime: float, store_url: str, version: tuple[int, int, int],
             masked: bool, _queue_frame: pl.DataFrame) -> dict[str, list]:
    return data.filter_options(_queue_frame)


def filter_options(ctx: AppContext, user: AppUser, queue_frame: pl.DataFrame) -> dict[str, list]:
    """Distinct filter values of the current queue, computed once per queue version."""
    run = data.current_run(ctx.data_dir)
    if run is None or queue_frame.is_empty():
        return {}
    mtime = (run.run_dir / "findings.parquet").stat().st_mtime
    return _options(str(run.run_dir), mtime, ctx.store.url, data.store_version(ctx.store),
                    masks_personal(user), queue_frame)


def queue(ctx: AppContext, user: AppUser) -> tuple[data.Run | None, pl.DataFrame]:
    run = data.current_run(ctx.data_dir)
    if run is None:
        return None, pl.DataFrame()
    path = run.run_dir / "findings.parquet"
    mtime = path.stat().st_mtime if path.exists() else 0.0
    frame = _queue(str(run.run_dir), mtime, ctx.store.url, data.store_version(ctx.store),
                   masks_personal(user), ctx)
    return run, frame


def warm(ctx: AppContext) -> None:
    """Fill the shared queue cache while the login form waits for input (renders nothing).

    The first render after a nightly run then does not pay for reading 100,000 items.
    """
    run = data.current_run(ctx.data_dir)
    if run is not None and (run.run_dir / "findings.parquet").exists():
        mtime = (run.run_dir / "findings.parquet").stat().st_mtime
        _queue(str(run.run_dir), mtime, ctx.store.url, data.store_version(ctx.store), True, ctx)
    try:                                   # the rule catalog (titles, docs) loads once, too
        from detect.rules import load_catalog
        load_catalog()
    except Exception:  # noqa: BLE001 - pages report catalog problems themselves
        pass


def current_filter() -> data.QueueFilter:
    return st.session_state.get(FILTER_KEY) or data.QueueFilter()


def open_item(item_id: str) -> None:
    st.session_state[ITEM_KEY] = item_id
    st.switch_page(str(PAGES_DIR / "item.py"))
