"""Monthly report: the same content as ``belegwacht report``, inside the app, with downloads."""

from __future__ import annotations

from datetime import UTC, datetime

import streamlit as st
import streamlit.components.v1 as components

from detect import report
from detect.app import ui
from detect.app.ui import tr


def _months(ctx: ui.AppContext) -> list[str]:
    """Months that have bookings in a published run, newest first (last 24)."""
    manifests = report._published_manifests(ctx.data_dir)
    scan = report._history_scan(ctx.data_dir, manifests)
    if scan is None:
        return [datetime.now(UTC).strftime("%Y-%m")]
    months = (scan.select(report.pl.col("posting_date").dt.strftime("%Y-%m").unique())
              .collect().to_series().drop_nulls().sort(descending=True).to_list())
    return months[:24] or [datetime.now(UTC).strftime("%Y-%m")]


@st.cache_data(ttl=300, show_spinner=False)
def _html(data_dir: str, month: str, lang: str, version: str) -> str:
    ctx = ui.context()
    return report.render_html(report.collect(ctx.data_dir, month, store=ctx.store), lang)


def page() -> None:
    ctx, _user = ui.guard("view")
    lang = ui.lang()
    st.title(tr("page_report"))
    month = st.selectbox(tr("report_month"), _months(ctx))
    version = str(len(ctx.store.decision_log()))  # new decisions -> new figures
    html = _html(str(ctx.data_dir), month, lang, version)
    st.download_button(tr("report_download_html"), html, file_name=f"belegwacht_{month}.html",
                       mime="text/html")
    if st.button(tr("report_make_pdf")):
        from weasyprint import HTML

        st.download_button(tr("report_download_pdf"), HTML(string=html).write_pdf(),
                           file_name=f"belegwacht_{month}.pdf", mime="application/pdf")
    components.html(html, height=2400, scrolling=True)


page()
