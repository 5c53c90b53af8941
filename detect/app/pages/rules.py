"""Rules: the catalog with each rule's documentation, hits per run and precision so far.

Precision = confirmed ÷ (confirmed + no finding) over every decided item the rule flagged in
any run, so tuning is informed. Admins switch rules on/off here (written to belegwacht.toml)
and revoke suppressions.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import streamlit as st

from detect import auth
from detect.app import actions, data, ui
from detect.app.rule_switch import rule_states
from detect.app.ui import tr
from detect.errors import UserError
from detect.fmt import percent


@st.cache_data(show_spinner=False, ttl=300)
def _stats(data_dir: str, version: tuple[int, int, int], _ctx: ui.AppContext
           ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Hits per run and precision; rebuilt when a decision or suppression changes."""
    hits = data.hits_per_run(Path(data_dir))
    precision = data.rule_precision(data.item_rules(Path(data_dir)),
                                    data.latest_status(_ctx.store.decision_log()))
    return hits, precision


def catalog_table(catalog: list, hits: pl.DataFrame, precision: pl.DataFrame,
                  states: dict[str, bool], lang: str) -> pl.DataFrame:
    base = pl.DataFrame({
        "rule_id": [r.id for r in catalog],
        "title": [r.title.get(lang, r.id) for r in catalog],
        "severity": [r.severity for r in catalog],
        "family": [r.family for r in catalog],
        "enabled": [states.get(r.id, True) for r in catalog],
    }, schema={"rule_id": pl.String, "title": pl.String, "severity": pl.String,
               "family": pl.String, "enabled": pl.Boolean})
    total = hits.group_by("rule_id").agg(pl.col("hits").sum())
    return (base.join(total, on="rule_id", how="left")
            .join(precision, on="rule_id", how="left")
            .with_columns(pl.col("hits").fill_null(0), pl.col("confirmed").fill_null(0),
                          pl.col("no_finding").fill_null(0)))


def page() -> None:
    ctx, user = ui.guard("view")
    lang = ui.lang()
    st.title(tr("page_rules"))
    st.write(tr("rules_intro"))
    try:
        from detect.rules import describe_rule, load_catalog
        catalog = load_catalog()
    except Exception as exc:  # noqa: BLE001 - show why, keep the page
        st.warning(tr("no_catalog", err=exc))
        return
    hits, precision = _stats(str(ctx.data_dir), data.store_version(ctx.store), ctx)
    states = rule_states(ctx.config_path, [r.id for r in catalog])
    table = catalog_table(catalog, hits, precision, states, lang)
    st.dataframe(table.with_columns(pl.col("precision").round(3)), hide_index=True,
                 width="stretch", column_config=ui.labels(table.columns, precision=(
                     st.column_config.ProgressColumn(tr("precision"), min_value=0.0,
                                                     max_value=1.0, format="percent"))))
    if not hits.is_empty():
        st.subheader(tr("hits_per_run"))
        st.bar_chart(hits.pivot(on="rule_id", index="run_id", values="hits").fill_null(0),
                     x="run_id")
    rule_id = st.selectbox(tr("f_rule"), table["rule_id"].to_list(), key="ru_rule")
    rule = next(r for r in catalog if r.id == rule_id)
    row = table.filter(pl.col("rule_id") == rule_id).row(0, named=True)
    c1, c2, c3 = st.columns(3)
    c1.metric(tr("hits"), row["hits"])
    c2.metric(tr("precision"), percent(row["precision"], lang) if row["precision"] is not None
              else "–")
    c3.metric(tr("confirmed_n") + " / " + tr("no_finding_n"),
              f"{row['confirmed']} / {row['no_finding']}")
    st.code(describe_rule(rule, lang), language=None, wrap_lines=True)
    if auth.can(user.role, "manage_rules"):
        enabled = st.toggle(tr("rule_switch"), value=states.get(rule_id, True),
                            key=f"ru_switch_{rule_id}")
        if enabled != states.get(rule_id, True):
            try:
                actions.switch_rule(ctx.store, user, ctx.config_path, rule_id, enabled)
                st.success(tr("rule_switch_saved", rule=rule_id, path=str(ctx.config_path),
                              state=tr("enabled") if enabled else tr("disabled")))
            except UserError as exc:
                ui.show_error(exc)
    if auth.can(user.role, "manage_suppressions"):
        st.subheader(tr("suppressions"))
        supps = ctx.store.list_suppressions(include_revoked=True)
        if supps:
            st.dataframe([{**s, "scope": str(s["scope"])} for s in supps], hide_index=True,
                         width="stretch")
            active = [s["id"] for s in supps if s.get("active")]
            if active:
                with st.form("revoke"):
                    sid = st.selectbox(tr("suppressions"), active, key="ru_supp")
                    reason = st.text_input(tr("revoke_reason"), key="ru_reason")
                    if st.form_submit_button(tr("revoke")):
                        try:
                            actions.revoke_suppression(ctx.store, user, sid, reason)
                            st.success(tr("revoked", id=sid))
                        except UserError as exc:
                            ui.show_error(exc)


page()
