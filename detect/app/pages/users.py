"""Users admin: local accounts (add, change role, disable). Admins only, checked per write."""

from __future__ import annotations

import streamlit as st

from detect.app import actions, ui
from detect.app.i18n import t
from detect.app.ui import tr
from detect.auth import ROLES
from detect.errors import UserError


def page() -> None:
    ctx, user = ui.guard("manage_users")
    lang = ui.lang()
    st.title(tr("page_users"))
    st.write(tr("users_intro"))
    if flash := st.session_state.pop("bw_flash_users", None):
        st.success(flash)
    rows = [{"username": u["username"], "display_name": u.get("display_name"),
             "role": t(f"role_{u['role']}", lang),
             "state": tr("active") if u.get("active") else tr("disabled"),
             "created_at": u.get("created_at")} for u in ctx.store.list_users()]
    st.dataframe(rows, hide_index=True, width="stretch",
                 column_config=ui.labels(["username", "display_name", "role", "state"]))
    role_label = lambda r: t(f"role_{r}", lang)  # noqa: E731
    with st.form("add_user", clear_on_submit=True):
        st.subheader(tr("add_user"))
        c1, c2 = st.columns(2)
        username = c1.text_input(tr("username"), key="u_name")
        display = c2.text_input(tr("display_name"), key="u_display")
        password = c1.text_input(tr("password"), type="password", key="u_password")
        role = c2.selectbox(tr("role"), ROLES, key="u_role", format_func=role_label)
        if st.form_submit_button(tr("add_user"), type="primary"):
            try:
                actions.add_user(ctx.store, user, username, password, role, display)
                st.session_state["bw_flash_users"] = tr("user_added", user=username)
                st.rerun()
            except UserError as exc:
                ui.show_error(exc)
    names = [u["username"] for u in ctx.store.list_users()]
    with st.form("change_user"):
        st.subheader(tr("set_role"))
        c1, c2, c3 = st.columns(3)
        who = c1.selectbox(tr("username"), names, key="u_who")
        new_role = c2.selectbox(tr("role"), ROLES, key="u_new_role", format_func=role_label)
        disable = c3.checkbox(tr("disable"), key="u_disable")
        if st.form_submit_button(tr("set_role")):
            try:
                if disable:
                    actions.disable_user(ctx.store, user, who)
                else:
                    actions.set_role(ctx.store, user, who, new_role)
                st.session_state["bw_flash_users"] = tr("user_changed", user=who)
                st.rerun()
            except UserError as exc:
                ui.show_error(exc)


page()
