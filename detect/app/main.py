"""The app shell: language switch, sign-in, then the pages the role may see.

Before sign-in nothing but the login form is rendered – no navigation, no counts, no data.
"""

from __future__ import annotations

import streamlit as st

from detect import auth
from detect.app import ui
from detect.app.i18n import t
from detect.app.ui import PAGES_DIR, USER_KEY, tr

# page file, title key, icon, permission
PAGES: list[tuple[str, str, str, str]] = [
    ("queue.py", "page_queue", ":material/checklist:", "view"),
    ("item.py", "page_item", ":material/receipt_long:", "view"),
    ("bulk.py", "page_bulk", ":material/done_all:", "decide"),
    ("runs.py", "page_runs", ":material/history:", "view"),
    ("rules.py", "page_rules", ":material/rule:", "view"),
    ("audit.py", "page_audit", ":material/verified_user:", "view"),
    ("report.py", "page_report", ":material/summarize:", "view"),
    ("export.py", "page_export", ":material/download:", "export"),
    ("users.py", "page_users", ":material/group:", "manage_users"),
]


def _login(ctx: ui.AppContext) -> None:
    st.title(tr("login_title"))
    if st.session_state.pop("bw_expired", False):
        st.info(tr("session_expired"))
    st.write(tr("login_intro"))
    provider = ctx.settings.app.oidc_provider
    if provider:
        if st.user.is_logged_in:
            claims = dict(st.user.to_dict())
            user = auth.oidc_user(ctx.store, claims)
            if user is None:
                who = claims.get("email") or claims.get("preferred_username") or "?"
                ctx.store.log_access(str(who), "login_denied_oidc")
                st.error(tr("oidc_no_account", who=who))
                st.button(tr("logout"), on_click=st.logout)
                return
            _signed_in(ctx, user)
            return
        st.button(tr("login_oidc"), on_click=st.login, args=(provider,), type="primary")
    with st.form("login"):
        username = st.text_input(tr("username"), key="login_user")
        password = st.text_input(tr("password"), type="password", key="login_password")
        submitted = st.form_submit_button(tr("login_button"), type="primary")
    if submitted:
        if auth.locked_out(ctx.store, username or "?"):
            ctx.store.log_access(username or "?", "login_locked")
            st.error(tr("login_locked", minutes=auth.LOCKOUT_MINUTES))
            return
        user = auth.authenticate(ctx.store, username, password)
        if user is None:
            ctx.store.log_access(username or "?", "login_failed")
            st.error(tr("login_failed"))
            return
        _signed_in(ctx, user)
        return
    ui.warm(ctx)


def _signed_in(ctx: ui.AppContext, user: auth.AppUser) -> None:
    st.session_state[USER_KEY] = user
    st.session_state.pop("login_password", None)
    ctx.store.log_access(user.username, "login", user.via)
    st.rerun()


def run() -> None:
    st.set_page_config(page_title="Belegwacht", page_icon=":material/fact_check:",
                       layout="wide")
    ctx = ui.context()
    ui.language_switch(ctx.settings.app.language)
    user = ui.current_user(ctx)
    if user is None:
        _login(ctx)
        return
    lang = ui.lang()
    pages = [st.Page(str(PAGES_DIR / name), title=t(title, lang), icon=icon,
                     url_path=name.removesuffix(".py"), default=(name == "queue.py"))
             for name, title, icon, permission in PAGES if auth.can(user.role, permission)]
    nav = st.navigation(pages)
    with st.sidebar:
        st.caption(tr("signed_in_as", name=user.label, role=tr(f"role_{user.role}")))
        if st.button(tr("logout"), key="logout"):
            ui.sign_out(ctx)
            st.rerun()
    nav.run()
