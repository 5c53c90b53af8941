"""Audit trail: every decision event (who, what, when) and the hash-chain verification status."""

from __future__ import annotations

import polars as pl
import streamlit as st

from detect import auth
from detect.app import data, ui
from detect.app.i18n import t
from detect.app.ui import tr


def page() -> None:
    ctx, user = ui.guard("view")
    lang = ui.lang()
    st.title(tr("page_audit"))
    st.write(tr("audit_intro"))
    result = ctx.store.verify_log()
    if result.ok:
        st.success(tr("chain_ok", msg=result.message), icon=":material/verified:")
    else:
        st.error(tr("chain_broken", msg=result.message), icon=":material/gpp_bad:")
    log = ctx.store.decision_log()
    if log.is_empty():
        st.caption(tr("no_history"))
    else:
        log = log.with_columns(pl.col("status").replace_strict(
            {s: t(f"status_{s}", lang) for s in data.STATUSES}, default=pl.col("status")))
        cols = [c for c in ("id", "ts", "user", "status", "comment", "assignee", "journal_id",
                            "entity", "fiscal_year", "item_id", "suppression_id", "hash")
                if c in log.columns]
        st.dataframe(log.select(cols).reverse(), hide_index=True, width="stretch",
                     column_config=ui.labels(cols))
    if auth.can(user.role, "manage_users"):
        with st.expander("access log"):
            st.dataframe(ctx.store.access_log(500), hide_index=True, width="stretch")


page()
