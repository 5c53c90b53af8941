"""Bulk decision: one status and one comment for every item of the queue's current filter.

The selection is the filter set on the queue page (kept in the session), so what the reviewer
saw counted there is exactly what is decided here; one store transaction records all events.
"""

from __future__ import annotations

import polars as pl
import streamlit as st

from detect.app import actions, data, ui
from detect.app.i18n import t
from detect.app.ui import tr
from detect.errors import UserError


def page() -> None:
    ctx, user = ui.guard("decide")
    lang = ui.lang()
    st.title(tr("page_bulk"))
    if flash := st.session_state.pop("bw_flash_bulk", None):
        st.success(flash)
    run, queue = ui.queue(ctx, user)
    if run is None:
        st.info(tr("no_run", dir=str(ctx.data_dir)))
        return
    only_open = st.toggle(tr("bulk_only_open"), value=True, key="b_only_open")
    selection = data.apply_filter(queue, ui.current_filter())
    if only_open:
        selection = selection.filter(pl.col("status") == "open")
    n = selection.height
    st.write(tr("bulk_intro", n=n))
    if n == 0:
        st.info(tr("bulk_none"))
        return
    st.dataframe(selection.select("rank", "journal_id", "rule_ids", "status").head(200),
                 hide_index=True, height=240)
    with st.form("bulk"):
        status = st.radio(tr("f_status"), data.STATUSES, horizontal=True, index=2,
                          format_func=lambda s: t(f"status_{s}", lang), key="b_status")
        comment = st.text_area(tr("comment"), key="b_comment")
        confirm = st.checkbox(tr("bulk_confirm", n=n), key="b_confirm")
        submitted = st.form_submit_button(tr("bulk_save"), type="primary")
    if not submitted:
        return
    if not confirm:
        st.warning(tr("bulk_confirm", n=n))
        return
    try:
        done = actions.decide_bulk(ctx.store, user, selection["item_id"].to_list(), status,
                                   comment)
    except UserError as exc:
        ui.show_error(exc)
        return
    st.session_state["bw_flash_bulk"] = tr("bulk_done", n=done)
    st.rerun()


page()
