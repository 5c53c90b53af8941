"""Queue page: the current run's review items ranked by risk, filters, counts, capacity line.

Filtering runs in Polars on the cached frame; only one page of rows (50-500) is formatted and
sent to the browser, which keeps the page fast with 100,000 items.
"""

from __future__ import annotations

import polars as pl
import streamlit as st

from detect.app import data, ui
from detect.app.data import STATUSES, QueueFilter
from detect.app.i18n import date_expr, money_expr, t
from detect.app.ui import FILTER_KEY, tr
from detect.fmt import number

FILTER_WIDGETS = ("f_status", "f_rule", "f_severity", "f_period", "f_account", "f_cost_center",
                  "f_user", "f_vendor", "f_assignee", "f_amount_min", "f_amount_max", "f_text")


def _reset() -> None:
    for key in FILTER_WIDGETS:
        st.session_state.pop(key, None)
    st.session_state["q_page"] = 1


def filters(options: dict[str, list], lang: str) -> QueueFilter:
    """Text search always visible; the other filters in a collapsible panel (count in its title)."""
    text = st.text_input(tr("f_text"), key="f_text", icon=":material/search:")
    active = sum(bool(st.session_state.get(k)) for k in FILTER_WIDGETS if k != "f_text")
    label = tr("filters") + (f" ({active})" if active else "")

    def pick(col, key: str, values: list, fmt=str) -> list:  # noqa: ANN001
        return col.multiselect(tr(key), values, key=key, placeholder=tr("choose"),
                               format_func=fmt)

    with st.expander(label, expanded=bool(active), icon=":material/filter_list:"):
        c1, c2, c3, c4 = st.columns(4)
        statuses = pick(c1, "f_status", list(STATUSES), lambda s: t(f"status_{s}", lang))
        rules = pick(c2, "f_rule", options.get("rule_ids", []))
        severities = pick(c3, "f_severity", options.get("severity", []),
                          lambda s: t(f"sev_{s}", lang))
        periods = pick(c4, "f_period", options.get("period", []))
        c1, c2, c3, c4 = st.columns(4)
        accounts = pick(c1, "f_account", options.get("gl_account", []))
        cost_centers = pick(c2, "f_cost_center", options.get("cost_center", []))
        users = pick(c3, "f_user", options.get("entered_by", []))
        vendors = pick(c4, "f_vendor", options.get("vendor_id", []))
        c1, c2, c3 = st.columns(3)
        amount_min = c1.number_input(tr("f_amount_min"), min_value=0.0, value=None, step=100.0,
                                     key="f_amount_min")
        amount_max = c2.number_input(tr("f_amount_max"), min_value=0.0, value=None, step=100.0,
                                     key="f_amount_max")
        assignees = pick(c3, "f_assignee", options.get("assignee", []))
        st.button(tr("f_reset"), on_click=_reset, icon=":material/restart_alt:")
    return QueueFilter(statuses, rules, severities, periods, accounts, cost_centers, users,
                       vendors, assignees, amount_min, amount_max, text or "")


def display_frame(rows: pl.DataFrame, lang: str) -> pl.DataFrame:
    """One page of items formatted for reading (German numbers and dates by default)."""
    status = {s: t(f"status_{s}", lang) for s in STATUSES}
    sev = {s: t(f"sev_{s}", lang) for s in data.SEVERITY_ORDER}
    reasons = "reasons" if lang == "de" or "reasons_en" not in rows.columns else "reasons_en"
    return rows.select(
        pl.col("rank").alias(t("c_rank", lang)),
        pl.col("risk_score").round(1).alias(t("c_risk", lang)),
        pl.col("status").replace_strict(status, default=pl.col("status"))
        .alias(t("c_status", lang)),
        pl.col("journal_id").alias(t("c_journal", lang)),
        date_expr("posting_date", lang).alias(t("c_date", lang)),
        pl.col("gl_account").alias(t("c_account", lang)),
        money_expr("amount", lang).alias(t("c_amount", lang)),
        pl.col("rule_ids").alias(t("c_rules", lang)),
        pl.col("severity").replace_strict(sev, default=pl.col("severity"))
        .alias(t("c_severity", lang)),
        pl.col(reasons).fill_null("").str.split("\n").list.first().alias(t("c_reason", lang)),
        pl.col("entered_by").alias(t("c_user", lang)),
        pl.col("vendor_id").alias(t("c_vendor", lang)),
        pl.col("cost_center").alias(t("c_cost_center", lang)),
        pl.col("assignee").alias(t("c_assignee", lang)),
        pl.col("above_capacity").fill_null(False).alias(t("c_capacity", lang)),
    )


def page() -> None:
    ctx, user = ui.guard("view")
    lang = ui.lang()
    st.title(tr("page_queue"))
    run, queue = ui.queue(ctx, user)
    if run is None:
        st.info(tr("no_run", dir=str(ctx.data_dir)))
        return
    st.caption(f"{tr('run_detail')}: {run.run_id}")
    flt = filters(ui.filter_options(ctx, user, queue), lang)
    st.session_state[FILTER_KEY] = flt
    shown = data.apply_filter(queue, flt)

    n = data.counts(shown)
    st.markdown("**" + tr("count_line", shown=number(shown.height, lang),
                          total=number(queue.height, lang),
                          **{k: number(n[k], lang) for k in STATUSES}) + "**")
    cap = data.capacity(queue)
    capacity = ctx.settings.scoring.review_capacity
    st.caption(tr("capacity_line", capacity=number(capacity, lang),
                  **{k: number(v, lang) for k, v in cap.items()}))
    if shown.is_empty():
        st.info(tr("no_items"))
        return

    c1, c2, c3 = st.columns([1, 1, 4])
    size = c1.selectbox(tr("page_size"), [50, 100, 200, 500], index=1, key="q_size")
    pages = max(1, -(-shown.height // size))
    if (st.session_state.get("q_page") or 1) > pages:
        st.session_state["q_page"] = pages
    page_no = c2.number_input(tr("page_no"), min_value=1, max_value=pages, step=1, key="q_page")
    c3.caption(tr("page_of", page=page_no, pages=pages))
    rows = shown.slice((int(page_no) - 1) * size, size)
    st.caption(tr("select_hint"))
    event = st.dataframe(display_frame(rows, lang), hide_index=True, on_select="rerun",
                         selection_mode="single-row", key=f"queue_table_{page_no}_{size}",
                         width="stretch", height=min(38 + 35 * rows.height, 600),
                         column_config={t("c_risk", lang): st.column_config.NumberColumn(
                             format="localized")})
    selected = event.selection.rows if event is not None else []
    if selected:
        ui.open_item(rows["item_id"][selected[0]])

    labels = dict(zip(rows["item_id"].to_list(),
                      rows.select(pl.format("#{} · {} · {}", pl.col("rank"), pl.col("journal_id"),
                                            money_expr("amount", lang))).to_series().to_list(),
                      strict=True))
    c1, c2 = st.columns([4, 1], vertical_alignment="bottom")
    choice = c1.selectbox(tr("open_item"), list(labels), index=None, key="q_open",
                          format_func=lambda i: labels.get(i, i))
    if c2.button(tr("open_button"), key="q_open_button", disabled=choice is None):
        ui.open_item(choice)


page()
