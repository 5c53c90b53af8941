"""Export: the queue with its current filter and decisions as CSV or XLSX (formula-safe)."""

from __future__ import annotations

import streamlit as st

from detect.app import actions, data, ui
from detect.app.ui import tr
from detect.errors import UserError


def page() -> None:
    ctx, user = ui.guard("export")
    st.title(tr("page_export"))
    run, queue = ui.queue(ctx, user)
    if run is None:
        st.info(tr("no_run", dir=str(ctx.data_dir)))
        return
    selection = data.apply_filter(queue, ui.current_filter())
    st.write(tr("export_intro", n=selection.height))
    fmt = st.radio(tr("format"), ["xlsx", "csv"], horizontal=True, key="e_fmt")
    if st.button(tr("export_prepare"), key="e_build", icon=":material/build:"):
        try:
            st.session_state["bw_export"] = (fmt, actions.export_bytes(
                ctx.store, user, selection, fmt, detail=f"run {run.run_id}", lang=ui.lang()))
        except UserError as exc:
            ui.show_error(exc)
    built = st.session_state.get("bw_export")
    if built and built[0] == fmt:
        mime = ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
                if fmt == "xlsx" else "text/csv")
        st.download_button(tr("export_download", fmt=fmt.upper()), data=built[1],
                           file_name=f"belegwacht_{run.run_id}.{fmt}", mime=mime,
                           key="e_download", icon=":material/download:")


page()
