"""Item detail: the whole journal, every reason in plain words, context, history, decision.

Everything a reviewer needs to judge one entry without leaving the app. Personal data (the
employees who entered/approved) is pseudonymised until an auditor reveals it (logged).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import altair as alt
import polars as pl
import streamlit as st

from detect import auth
from detect.app import actions, data, ui
from detect.app.actions import NARROW_KEYS, DecisionError
from detect.app.i18n import date_expr, md, money_expr, t
from detect.app.ui import ITEM_KEY, REVEALED_KEY, tr
from detect.errors import UserError
from detect.fmt import day, money, number

# free texts of booking lines that may name people; names in them are pseudonymised too
TEXT_COLUMNS = ("description", "header_description")
LINE_COLUMNS: dict[str, str] = {
    "line_no": "c_line", "posting_date": "c_date", "gl_account": "c_account",
    "amount": "c_amount", "description": "c_description", "cost_center": "c_cost_center",
    "vendor_id": "c_vendor", "reference": "c_reference", "bank_account": "c_bank_account",
    "entered_by": "c_user", "approved_by": "c_approved_by", "entered_at": "c_entered_at",
    "document_type": "c_document_type", "source": "c_source", "journal_id": "c_journal"}
FORM_KEYS: tuple[str, ...] = ("d_status", "d_comment", "d_assignee", "d_suppress", "d_supp_rule",
                              "d_supp_keys")
FORM_FOR_KEY = "bw_form_item"          # the item the decision form's widget state belongs to
FORM_ASSIGNEE_KEY = "bw_form_assignee"  # the assignee the form's field started with


@st.cache_resource(show_spinner=False)
def _catalog() -> dict[str, Any]:
    try:
        from detect.rules import load_catalog
        return {r.id: r for r in load_catalog()}
    except Exception:  # noqa: BLE001 - the page still works without rule titles
        return {}


def lines_display(lines: pl.DataFrame, lang: str) -> pl.DataFrame:
    cols = [c for c in LINE_COLUMNS if c in lines.columns]
    out = lines.select(cols)
    names = {c: t(LINE_COLUMNS[c], lang) for c in cols}
    exprs = []
    if "amount" in cols:
        exprs.append(money_expr("amount", lang).alias("amount"))
    if "posting_date" in cols:
        exprs.append(date_expr("posting_date", lang).alias("posting_date"))
    if "entered_at" in cols:
        exprs.append(pl.col("entered_at").dt.strftime(
            "%d.%m.%Y %H:%M" if lang == "de" else "%Y-%m-%d %H:%M").alias("entered_at"))
    return (out.with_columns(exprs) if exprs else out).rename(names)


def _item_id() -> str | None:
    wanted = st.query_params.get("item")
    if wanted:
        st.session_state[ITEM_KEY] = wanted
    return st.session_state.get(ITEM_KEY)


def reasons_section(ctx: ui.AppContext, run: data.Run, item: dict[str, Any], lang: str,
                    mask: Callable[[str | None], str | None]) -> pl.DataFrame:
    st.subheader(tr("reasons"))
    text = item.get("reasons_en") if lang == "en" and item.get("reasons_en") else \
        item.get("reasons")
    for line in (mask(text) or "").splitlines():
        if line.strip():
            st.markdown(f"- {md(line.strip())}")
    hits = data.rule_hits_for(run.run_dir, item["entity"], item["fiscal_year"],
                              item["journal_id"])
    catalog = _catalog()
    if not hits.is_empty():
        st.markdown(f"**{tr('rule_reasons')}**")
        sort = ["rule_id", "line_no"] if "line_no" in hits.columns else ["rule_id"]
        for row in hits.sort(sort, nulls_last=True).unique("rule_id", keep="first",
                                                           maintain_order=True
                                                           ).iter_rows(named=True):
            rule = catalog.get(row["rule_id"])
            title = rule.title.get(lang, row["rule_id"]) if rule else row["rule_id"]
            expl = row.get(f"explanation_{lang}") or row.get("explanation_de") or ""
            st.markdown(f"**{row['rule_id']} · {md(title)}** "
                        f"({t('sev_' + str(row['severity']), lang)})  \n{md(mask(expl))}")
            if rule is not None:
                st.caption(md(rule.why_text(lang)))
    scores = data.model_scores_for(run.run_dir, item["entity"], item["fiscal_year"],
                                   item["journal_id"])
    if not scores.is_empty():
        best = scores.row(0, named=True)
        st.markdown(f"**{tr('model_reasons')}**")
        st.caption(tr("model_score_line", score=number(best["model_score"], lang, 2)))
        words = best.get(f"model_reasons_{lang}") or best.get("model_reasons_de") or ""
        for part in (mask(words) or "").split("; "):
            if part.strip():
                st.markdown(f"- {md(part.strip())}")
        feats = data.top_features(best)
        if not feats.is_empty():
            st.dataframe(feats.rename({"feature": tr("feature"), "value": tr("value"),
                                       "contribution": tr("contribution")}),
                         hide_index=True, width="content")
    return hits


def amount_chart(sample: pl.DataFrame, this_amount: float, lang: str) -> alt.LayerChart:
    """Every line amount on the account as a tick (log scale); the red rule is this entry."""
    points = sample.filter(pl.col("amount") > 0).to_pandas()
    scale = alt.Scale(type="log")
    ticks = alt.Chart(points).mark_tick(opacity=0.35, thickness=1).encode(
        x=alt.X("amount:Q", scale=scale, title=f"{tr('c_amount')} (€, log)",
                axis=alt.Axis(labelExpr="replace(datum.label, /,/g, '.')") if lang == "de"
                else alt.Axis()))
    marker = pl.DataFrame({"amount": [max(this_amount, 0.01)],
                           "label": [tr("this_entry")]}).to_pandas()
    rule = alt.Chart(marker).mark_rule(color="#d62728", size=3).encode(x="amount:Q")
    label = alt.Chart(marker).mark_text(color="#d62728", align="left", dx=5, dy=-8).encode(
        x="amount:Q", text="label:N")
    return (ticks + rule + label).properties(height=120)


def hours_chart(hours: pl.DataFrame, this_hour: int | None) -> alt.Chart:
    frame = pl.DataFrame({"hour": list(range(24))}, schema={"hour": pl.Int32}).join(
        hours.with_columns(pl.col("hour").cast(pl.Int32)), on="hour", how="left").with_columns(
        pl.col("lines").fill_null(0), (pl.col("hour") == (this_hour if this_hour is not None
                                                            else -1)).alias("this"))
    return alt.Chart(frame.to_pandas()).mark_bar().encode(
        x=alt.X("hour:O", title=tr("ctx_hour")), y=alt.Y("lines:Q", title=tr("ctx_lines")),
        color=alt.condition("datum.this", alt.value("#d62728"), alt.value("#4c78a8")),
    ).properties(height=180)


def context_section(ctx: ui.AppContext, run: data.Run, item: dict[str, Any],
                    lines: pl.DataFrame, shown_lines: pl.DataFrame, hits: pl.DataFrame,
                    shown_user: str | None, hide: Callable[[pl.DataFrame], pl.DataFrame],
                    lang: str) -> None:
    st.subheader(tr("context"))
    sources = data.booking_sources(ctx.data_dir, run.run_dir, item["entity"])
    tabs = st.tabs([tr("ctx_account", account=item.get("gl_account") or "–"),
                    tr("ctx_vendor", vendor=item.get("vendor_id") or "–"),
                    tr("ctx_hours", user=shown_user or "–")])
    with tabs[0]:
        sample = data.account_amounts(sources, item["entity"], item["gl_account"]) \
            if item.get("gl_account") else pl.DataFrame()
        if sample.is_empty():
            st.caption(tr("ctx_none"))
        else:
            this_amount = abs(float(item.get("amount") or 0))
            st.altair_chart(amount_chart(sample, this_amount, lang), width="stretch")
            share = sample.filter(pl.col("amount") >= this_amount).height / sample.height
            st.caption(f"n = {number(sample.height, lang)} · ≥ {money(this_amount, lang)}: "
                       f"{number(share * 100, lang, 1)} %")
    with tabs[1]:
        vendor = item.get("vendor_id")
        pay = data.vendor_payments(sources, item["entity"], vendor) if vendor else pl.DataFrame()
        if pay.is_empty():
            st.caption(tr("ctx_none"))
        else:
            st.dataframe(lines_display(hide(pay), lang), hide_index=True, width="stretch")
    with tabs[2]:
        clear_user = None
        if "entered_by" in lines.columns and lines["entered_by"].drop_nulls().len():
            clear_user = lines["entered_by"].drop_nulls()[0]
        hours = data.user_hours(sources, item["entity"], clear_user) if clear_user else \
            pl.DataFrame()
        if hours.is_empty():
            st.caption(tr("ctx_none"))
        else:
            this_hour = None
            if "entered_at" in lines.columns and lines["entered_at"].drop_nulls().len():
                this_hour = lines["entered_at"].drop_nulls()[0].hour
            st.altair_chart(hours_chart(hours, this_hour), width="stretch")
    for rule_id, other, fy in data.related_journals(hits, item["journal_id"]):
        st.markdown(f"**{tr('ctx_other', other=other, rule=rule_id)}**")
        other_lines = data.journal_lines(sources, item["entity"], fy or item["fiscal_year"],
                                         other)
        other_lines = hide(other_lines)
        left, right = st.columns(2)
        left.caption(f"{tr('c_journal')} {md(item['journal_id'])}")
        left.dataframe(lines_display(shown_lines, lang), hide_index=True)
        right.caption(f"{tr('c_journal')} {md(other)}")
        right.dataframe(lines_display(other_lines, lang), hide_index=True)


def history_section(ctx: ui.AppContext, item_id: str, lang: str) -> None:
    st.subheader(tr("history"))
    events = ctx.store.history(item_id)
    if not events:
        st.caption(tr("no_history"))
        return
    frame = pl.DataFrame([{k: e.get(k) for k in ("id", "ts", "user", "status", "comment",
                                                  "assignee", "suppression_id")}
                          for e in events])
    frame = frame.with_columns(pl.col("status").replace_strict(
        {s: t(f"status_{s}", lang) for s in data.STATUSES}, default=pl.col("status")))
    st.dataframe(frame, hide_index=True, width="stretch")


def decision_form(ctx: ui.AppContext, user: auth.AppUser, run: data.Run,
                  item: dict[str, Any], stored: dict[str, Any], lang: str) -> None:
    st.subheader(tr("decide"))
    if not auth.can(user.role, "decide"):
        st.info(tr("cannot_decide", role=tr(f"role_{user.role}")))
        return
    colleagues = [u["username"] for u in ctx.store.list_users()
                  if u.get("active") and u.get("role") == "auditor"]
    current_assignee = stored.get("assignee")
    if current_assignee and current_assignee not in colleagues:
        colleagues.append(current_assignee)
    rules = [r.strip() for r in str(item.get("rule_ids") or "").split(",") if r.strip()]
    scope_keys = [k for k in NARROW_KEYS if item.get(k) not in (None, "")]
    current = stored.get("status") or "open"
    # Keyed widgets keep their value across reruns even when index/options change (Streamlit
    # 1.67), so without this reset the next item's form would show, and save, the previous
    # item's status and assignee. Reset on a new item and after each save (below).
    if st.session_state.get(FORM_FOR_KEY) != item["item_id"]:
        for key in FORM_KEYS:
            st.session_state.pop(key, None)
        st.session_state[FORM_FOR_KEY] = item["item_id"]
        st.session_state[FORM_ASSIGNEE_KEY] = current_assignee or ""
    with st.form(f"decide_{item['item_id']}"):
        status = st.radio(tr("f_status"), data.STATUSES, horizontal=True,
                          index=data.STATUSES.index(current) if current in data.STATUSES else 0,
                          format_func=lambda s: t(f"status_{s}", lang), key="d_status")
        comment = st.text_area(tr("comment"), key="d_comment", help=tr("comment_required"))
        options = [""] + colleagues
        assignee = st.selectbox(tr("assign_to"), options, key="d_assignee",
                                index=options.index(current_assignee) if current_assignee
                                in options else 0,
                                format_func=lambda u: u or tr("nobody"))
        suppress = st.checkbox(tr("suppress"), key="d_suppress",
                               disabled=not rules or not scope_keys)
        c1, c2 = st.columns(2)
        rule = c1.selectbox(tr("suppress_rule"), rules or [""], key="d_supp_rule")
        keys = c2.multiselect(tr("suppress_scope"), scope_keys, key="d_supp_keys",
                              default=scope_keys[:1],
                              format_func=lambda k: t({"vendor_id": "c_vendor",
                                                       "gl_account": "c_account",
                                                       "entered_by": "c_user",
                                                       "cost_center": "c_cost_center"}[k], lang))
        submitted = st.form_submit_button(tr("save"), type="primary")
    if not submitted:
        return
    try:
        scope = actions.suppression_scope(item, rule, keys) if suppress else None
        # An untouched field means "keep": a colleague may have assigned the item meanwhile.
        touched = assignee != st.session_state.get(FORM_ASSIGNEE_KEY)
        event = actions.decide(ctx.store, user, {**item, "assignee": current_assignee}, status,
                               comment, assignee=(assignee or None) if touched else actions.KEEP,
                               suppression=scope, run_id=run.run_id)
    except (DecisionError, UserError) as exc:
        ui.show_error(exc)
        return
    st.session_state.pop(FORM_FOR_KEY, None)   # the next run shows the item as now stored
    st.session_state["bw_flash"] = tr("saved", event=event)
    st.rerun()


def page() -> None:
    ctx, user = ui.guard("view")
    lang = ui.lang()
    st.title(tr("page_item"))
    if st.button(tr("back_to_queue"), icon=":material/arrow_back:", key="back"):
        st.switch_page(str(ui.PAGES_DIR / "queue.py"))
    if flash := st.session_state.pop("bw_flash", None):
        st.success(flash)
    item_id = _item_id()
    if not item_id:
        st.info(tr("no_item"))
        return
    run = data.current_run(ctx.data_dir)
    findings = ui._findings(str(run.run_dir), (run.run_dir / "findings.parquet").stat().st_mtime) \
        if run else pl.DataFrame()
    match = findings.filter(pl.col("item_id") == item_id) if not findings.is_empty() else findings
    if run is None or match.is_empty():
        st.warning(tr("item_missing", item=item_id))
        return
    item = match.row(0, named=True)              # clear values: only used server side
    stored = ctx.store.get_item(item_id) or {}
    revealed: set[str] = st.session_state.setdefault(REVEALED_KEY, set())
    reveal = item_id in revealed

    st.subheader(tr("item_header", journal=item["journal_id"], entity=item["entity"],
                    fy=item["fiscal_year"]))
    m = st.columns(3)
    m[0].metric(tr("c_risk"), number(item.get("risk_score"), lang, 1))
    m[1].metric(tr("c_rank"), number(item.get("rank"), lang))
    m[2].metric(tr("c_status"), t(f"status_{stored.get('status') or 'open'}", lang))
    m = st.columns(3)
    m[0].metric(tr("c_amount"), money(item.get("amount"), lang))
    m[1].metric(tr("c_journal_amount"), money(item.get("journal_amount"), lang))
    m[2].metric(tr("c_date"), day(item.get("posting_date"), lang))
    if stored.get("assignee"):
        st.caption(f"{tr('c_assignee')}: {md(stored['assignee'])}")

    if reveal:
        st.info(tr("revealed"))
    else:
        c1, c2 = st.columns([3, 2])
        c1.caption(tr("pseudonymised"))
        if auth.can(user.role, "reveal_personal") and c2.button(tr("reveal"), key="reveal",
                                                                icon=":material/visibility:"):
            try:
                actions.reveal(ctx.store, user, item_id)
            except UserError as exc:
                ui.show_error(exc)
                return
            revealed.add(item_id)
            st.rerun()

    sources = data.booking_sources(ctx.data_dir, run.run_dir, item["entity"])
    lines = data.journal_lines(sources, item["entity"], item["fiscal_year"], item["journal_id"])
    if reveal:
        def mask(text: str | None) -> str | None:
            return text

        def hide(frame: pl.DataFrame) -> pl.DataFrame:
            return frame
    else:
        masker = ui.masker(str(run.run_dir), (run.run_dir / "findings.parquet").stat().st_mtime,
                           ctx)
        mask = masker.text

        def hide(frame: pl.DataFrame) -> pl.DataFrame:
            return masker.frame(frame, data.PERSONAL_COLUMNS, TEXT_COLUMNS)
    shown_lines = hide(lines)
    shown_user = item.get("entered_by")
    if not reveal and shown_user:
        shown_user = hide(pl.DataFrame({"entered_by": [shown_user]}))["entered_by"][0]

    hits = reasons_section(ctx, run, item, lang, mask)
    st.subheader(tr("journal_lines"))
    st.dataframe(lines_display(shown_lines, lang), hide_index=True, width="stretch")
    context_section(ctx, run, item, lines, shown_lines, hits, shown_user, hide, lang)
    history_section(ctx, item_id, lang)
    decision_form(ctx, user, run, item, stored, lang)


page()
