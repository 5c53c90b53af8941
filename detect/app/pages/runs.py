"""Runs: history of nightly runs with counts, warnings, quarantined rows and their Data Docs.

Streamlit does not serve arbitrary files, so each run's Great Expectations Data Docs are offered
as a ZIP download (open ``index.html`` locally); the HTML is not embedded in the app's origin.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import streamlit as st

from detect.app import data, ui
from detect.app.i18n import md
from detect.app.ui import tr


@st.cache_data(show_spinner=False, max_entries=8)
def docs_zip(docs_dir: str, mtime: float) -> bytes:
    buffer = io.BytesIO()
    root = Path(docs_dir)
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                zf.write(path, Path("data_docs") / path.relative_to(root))
    return buffer.getvalue()


def page() -> None:
    ctx, _user = ui.guard("view")
    st.title(tr("page_runs"))
    st.write(tr("runs_intro"))
    overview = data.runs_overview(ctx.data_dir)
    if overview.is_empty():
        st.info(tr("no_run", dir=str(ctx.data_dir)))
        return
    st.dataframe(overview, hide_index=True, width="stretch",
                 column_config=ui.labels(overview.columns))
    failed = [r for r in ctx.store.list_runs() if r.get("outcome") not in ("published",
                                                                           "running")]
    if failed:
        st.caption(f"{len(failed)} × failed/aborted")
        st.dataframe([{k: r.get(k) for k in ("id", "entity", "started", "outcome", "error")}
                      for r in failed], hide_index=True)
    run_id = st.selectbox(tr("run_detail"), overview["run_id"].to_list(), key="r_run")
    run_dir = ctx.data_dir / "runs" / run_id
    manifest = data.read_manifest(run_dir)
    validation = manifest.get("validation") or {}
    warnings = [*(manifest.get("ingest_warnings") or []), *(validation.get("warnings") or [])]
    c1, c2, c3 = st.columns(3)
    c1.metric(tr("quarantined"), validation.get("rows_quarantined", "–"))
    c2.metric(tr("warnings"), len(warnings))
    c3.metric("Items", (manifest.get("findings") or {}).get("items", "–"))
    for line in [*(validation.get("headline") or []),
                 *((manifest.get("findings") or {}).get("headline") or [])]:
        st.text(str(line))
    if validation.get("quarantine_reasons"):
        st.dataframe([{"reason": k, "rows": v}
                      for k, v in validation["quarantine_reasons"].items()], hide_index=True)
    for warning in warnings:
        st.warning(md(warning))
    st.subheader(tr("data_docs"))
    index = run_dir / "data_docs" / "index.html"
    if index.exists():
        st.download_button(tr("data_docs_zip", run=run_id),
                           data=docs_zip(str(index.parent), index.stat().st_mtime),
                           file_name=f"data_docs_{run_id}.zip", mime="application/zip",
                           icon=":material/download:", key="r_docs")
    else:
        st.caption(tr("data_docs_none"))
    with st.expander("manifest.json"):
        st.json(manifest, expanded=False)


page()
