"""Monthly summary for finance managers: is booking quality under control this month?

``collect(...)`` gathers every figure from the data dir (run manifests, findings of every run,
the booking history) and the review store (decisions); ``render_html`` turns them into one
self-contained HTML file (charts inlined as SVG), ``write_pdf`` prints the same HTML to A4 with
WeasyPrint. Personal data (user names) appears only pseudonymised.
"""

from __future__ import annotations

import calendar
import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import polars as pl

from detect import fmt
from detect.config import Settings
from detect.errors import UserError

STATUSES = ("open", "clarify", "confirmed", "no_finding")
AGE_BUCKETS = ((0, 30, "0–30"), (31, 60, "31–60"), (61, 90, "61–90"), (91, 10**6, "> 90"))

TEXT = {
    "de": {
        "title": "Monatsbericht Buchungsprüfung", "volume": "Verarbeitetes Volumen",
        "lines": "Buchungszeilen", "journals": "Belege", "debit": "Soll-Summe",
        "quality": "Datenqualität der Lieferungen", "runs": "Läufe", "failed": "abgewiesen",
        "quarantined": "Zeilen in Quarantäne", "warnings": "Warnungen",
        "flagged": "Auffällige Belege", "by_family": "nach Regelfamilie",
        "by_severity": "nach Schweregrad", "by_cost_center": "nach Kostenstelle",
        "decisions": "Entscheidungen", "decided_this_month": "in diesem Monat entschieden",
        "backlog": "Offene Punkte nach Alter (Tage)", "top": "Bestätigte Feststellungen",
        "trend": "12-Monats-Verlauf", "precision": "Regeln mit der geringsten Trefferquote",
        "precision_note": "Kandidaten für die Feinjustierung: Anteil bestätigter an allen "
                          "entschiedenen Treffern.",
        "status": {"open": "offen", "clarify": "Klärung", "confirmed": "bestätigt",
                   "no_finding": "ohne Befund"},
        "severity": {"low": "niedrig", "medium": "mittel", "high": "hoch",
                     "critical": "kritisch"},
        "journal": "Beleg", "date": "Datum", "account": "Konto", "amount": "Betrag",
        "rules": "Regeln", "comment": "Kommentar", "rule": "Regel", "decided": "entschieden",
        "share": "Trefferquote", "month": "Monat", "items": "Belege", "none": "keine",
        "generated": "Erstellt am", "entity": "Organisation", "count": "Anzahl",
        "pseudonym_note": "Personenbezogene Daten sind pseudonymisiert.",
    },
    "en": {
        "title": "Monthly booking review summary", "volume": "Volume processed",
        "lines": "booking lines", "journals": "journals", "debit": "debit total",
        "quality": "Data quality of deliveries", "runs": "runs", "failed": "rejected",
        "quarantined": "rows quarantined", "warnings": "warnings",
        "flagged": "Flagged journals", "by_family": "by rule family",
        "by_severity": "by severity", "by_cost_center": "by cost center",
        "decisions": "Decisions", "decided_this_month": "decided this month",
        "backlog": "Open items by age (days)", "top": "Confirmed findings",
        "trend": "12-month trend", "precision": "Rules with the lowest precision",
        "precision_note": "Candidates for tuning: share of confirmed among decided hits.",
        "status": {"open": "open", "clarify": "needs clarification", "confirmed": "confirmed",
                   "no_finding": "no finding"},
        "severity": {"low": "low", "medium": "medium", "high": "high", "critical": "critical"},
        "journal": "Journal", "date": "Date", "account": "Account", "amount": "Amount",
        "rules": "Rules", "comment": "Comment", "rule": "Rule", "decided": "decided",
        "share": "precision", "month": "Month", "items": "journals", "none": "none",
        "generated": "Generated on", "entity": "Entity", "count": "count",
        "pseudonym_note": "Personal data is pseudonymised.",
    },
}


@dataclass
class ReportData:
    """Every figure of one monthly report, independent of its rendering (tests assert these)."""

    month: str
    entity: str | None
    volume: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, Any] = field(default_factory=dict)
    flagged_total: int = 0
    by_family: list[dict[str, Any]] = field(default_factory=list)
    by_severity: list[dict[str, Any]] = field(default_factory=list)
    by_cost_center: list[dict[str, Any]] = field(default_factory=list)
    status_counts: dict[str, int] = field(default_factory=dict)
    decided_this_month: int = 0
    backlog_by_age: list[dict[str, Any]] = field(default_factory=list)
    top_confirmed: list[dict[str, Any]] = field(default_factory=list)
    trend: list[dict[str, Any]] = field(default_factory=list)
    rule_precision: list[dict[str, Any]] = field(default_factory=list)


def _month_bounds(month: str) -> tuple[date, date]:
    try:
        year, mon = (int(p) for p in month.split("-"))
        first = date(year, mon, 1)
    except (ValueError, TypeError) as exc:
        raise UserError(f"--month must look like 2025-03, not {month!r}") from exc
    return first, date(year, mon, calendar.monthrange(year, mon)[1])


def _published_manifests(data_dir: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted((data_dir / "runs").glob("*/manifest.json")):
        try:
            out.append(json.loads(path.read_text(encoding="utf-8")) | {"_dir": str(path.parent)})
        except (OSError, json.JSONDecodeError):
            continue
    return out


def _all_items(manifests: list[dict[str, Any]]) -> pl.DataFrame:
    """Every item ever flagged, with the attributes of the latest run that flagged it."""
    frames = []
    for m in manifests:
        path = Path(m["_dir"]) / "findings.parquet"
        if path.exists():
            frames.append(pl.read_parquet(path).with_columns(
                pl.lit(m["run_id"]).alias("run_id"),
                pl.lit(str(m.get("created_at", ""))[:10]).str.to_date(strict=False)
                .alias("run_date")))
    if not frames:
        return pl.DataFrame()
    items = pl.concat(frames, how="diagonal_relaxed")
    first_seen = items.group_by("item_id").agg(pl.col("run_date").min().alias("first_flagged"))
    latest = items.sort("run_id").unique("item_id", keep="last", maintain_order=True)
    return latest.join(first_seen, on="item_id", how="left")


def _rule_families(manifests: list[dict[str, Any]]) -> dict[str, str]:
    families: dict[str, str] = {}
    for m in manifests:
        path = Path(m["_dir"]) / "rule_hits.parquet"
        if path.exists():
            pairs = pl.read_parquet(path, columns=["rule_id", "family"]).unique()
            families.update(dict(zip(pairs["rule_id"], pairs["family"], strict=True)))
    return families


def _latest_status(log: pl.DataFrame) -> pl.DataFrame:
    if log.is_empty():
        return pl.DataFrame(schema={"item_id": pl.String, "status": pl.String,
                                    "comment": pl.String})
    return (log.sort("id").group_by("item_id", maintain_order=True)
            .agg(pl.col("status").last(), pl.col("comment").last()))


def _history_scan(data_dir: Path, manifests: list[dict[str, Any]]) -> pl.LazyFrame | None:
    """The booking history if kept, else the union of published runs' bookings by key."""
    history = sorted((data_dir / "history").rglob("*.parquet")) if (data_dir / "history").exists() else []
    if history:
        return pl.scan_parquet(history, hive_partitioning=False)
    paths = [Path(m["_dir"]) / "bookings.parquet" for m in manifests]
    paths = [p for p in paths if p.exists()]
    if not paths:
        return None
    return (pl.concat([pl.scan_parquet(p) for p in paths])
            .unique(["entity", "fiscal_year", "journal_id", "line_no"], keep="last"))


def _counts(frame: pl.DataFrame, column: str, top: int | None = None) -> list[dict[str, Any]]:
    if frame.is_empty() or column not in frame.columns:
        return []
    out = (frame.group_by(pl.col(column).fill_null("(–)").alias("key")).len()
           .sort(["len", "key"], descending=[True, False]))
    if top:
        out = out.head(top)
    return [{"key": k, "count": c} for k, c in out.iter_rows()]


def collect(data_dir: Path, month: str, *, entity: str | None = None,
            store: Any | None = None, today: date | None = None) -> ReportData:
    """Gather the month's figures. ``store`` is a ``detect.store.ReviewStore`` (decisions)."""
    first, last = _month_bounds(month)
    today = today or datetime.now(UTC).date()
    manifests = _published_manifests(data_dir)
    if entity:
        manifests = [m for m in manifests if m.get("entity") == entity]
    data = ReportData(month=month, entity=entity)

    bookings = _history_scan(data_dir, manifests)
    if bookings is not None:
        if entity:
            bookings = bookings.filter(pl.col("entity") == entity)
        vol = bookings.filter(pl.col("posting_date").is_between(first, last)).select(
            pl.len().alias("lines"),
            pl.struct("entity", "fiscal_year", "journal_id").n_unique().alias("journals"),
            pl.col("amount").filter(pl.col("amount") > 0).sum().cast(pl.Float64).alias("debit"),
        ).collect()
        data.volume = vol.row(0, named=True)
        data.volume["debit"] = data.volume["debit"] or 0.0

    in_month = [m for m in manifests if str(m.get("created_at", ""))[:7] == month]
    failed = [r for r in (store.list_runs() if store is not None else [])
              if str(r.get("started", ""))[:7] == month and r.get("outcome") not in (None, "published")
              and (not entity or r.get("entity") == entity)]
    data.quality = {
        "runs": len(in_month),
        "failed": len(failed),
        "quarantined": sum(int(m.get("validation", {}).get("rows_quarantined", 0) or 0)
                           for m in in_month),
        "warnings": sum(len(m.get("validation", {}).get("warnings", []) or []) for m in in_month),
    }

    items = _all_items(manifests)
    log = store.decision_log() if store is not None else pl.DataFrame()
    if not log.is_empty():
        log = log.with_columns(pl.col("ts").cast(pl.String).str.slice(0, 10)
                               .str.to_date(strict=False).alias("day"))
    status = _latest_status(log)
    if items.is_empty():
        return data
    items = (items.join(status, on="item_id", how="left")
             .with_columns(pl.col("status").fill_null("open"),
                           pl.col("posting_date").cast(pl.Date)))
    month_items = items.filter(pl.col("posting_date").is_between(first, last))
    data.flagged_total = month_items.height

    families = _rule_families(manifests)
    exploded = (month_items.select("item_id", pl.col("rule_ids").fill_null("").str.split(","))
                .explode("rule_ids").filter(pl.col("rule_ids") != "")
                .with_columns(pl.col("rule_ids").replace_strict(families, default="model")
                              .alias("family")))
    fam = exploded.unique(["item_id", "family"])
    model_only = month_items.filter(pl.col("rule_ids").fill_null("") == "").height
    data.by_family = _counts(fam, "family")
    if model_only:
        data.by_family.append({"key": "model", "count": model_only})
    data.by_severity = _counts(month_items, "severity")
    data.by_cost_center = _counts(month_items, "cost_center", top=10)
    counts = dict(month_items.group_by("status").len().iter_rows())
    data.status_counts = {s: int(counts.get(s, 0)) for s in STATUSES}
    if not log.is_empty():
        data.decided_this_month = log.filter(
            pl.col("day").is_between(first, last) & pl.col("status").is_in(["confirmed", "no_finding"])
        ).height

    # Backlog: items open now whose booking falls in or before the month, aged since the run
    # that first flagged them (as of today; the decision log has no past snapshots to replay).
    backlog = items.filter(pl.col("status").is_in(["open", "clarify"])
                           & (pl.col("posting_date") <= last)).with_columns(
        (pl.lit(today) - pl.col("first_flagged").fill_null(pl.col("posting_date")))
        .dt.total_days().clip(0).alias("age"))
    data.backlog_by_age = [
        {"key": label, "count": backlog.filter(pl.col("age").is_between(lo, hi)).height}
        for lo, hi, label in AGE_BUCKETS]

    amount_col = "journal_amount" if "journal_amount" in items.columns else "amount"
    top = (month_items.filter(pl.col("status") == "confirmed")
           .sort(pl.col(amount_col).cast(pl.Float64).abs(), descending=True).head(10))
    data.top_confirmed = [
        {"journal_id": r["journal_id"], "posting_date": r["posting_date"],
         "gl_account": r.get("gl_account"), "amount": float(r[amount_col] or 0),
         "rule_ids": r.get("rule_ids") or "", "comment": r.get("comment") or ""}
        for r in top.iter_rows(named=True)]

    trend_start = date(first.year - 1, first.month, 1) if first.month == 12 else \
        date(first.year - 1, first.month + 1, 1)
    trend = (items.filter(pl.col("posting_date").is_between(trend_start, last))
             .with_columns(pl.col("posting_date").dt.strftime("%Y-%m").alias("month"))
             .group_by("month").agg(
                 pl.len().alias("flagged"),
                 (pl.col("status") == "confirmed").sum().alias("confirmed"),
                 (pl.col("status") == "no_finding").sum().alias("no_finding"))
             .sort("month"))
    data.trend = trend.to_dicts()

    decided = (items.filter(pl.col("status").is_in(["confirmed", "no_finding"]))
               .select("status", pl.col("rule_ids").fill_null("").str.split(","))
               .explode("rule_ids").filter(pl.col("rule_ids") != ""))
    if not decided.is_empty():
        prec = (decided.group_by("rule_ids").agg(
            pl.len().alias("decided"), (pl.col("status") == "confirmed").sum().alias("confirmed"))
            .with_columns((pl.col("confirmed") / pl.col("decided")).alias("precision"))
            .sort(["precision", "decided"], descending=[False, True]).head(10))
        data.rule_precision = [{"rule_id": r, "decided": d, "confirmed": c, "precision": p}
                               for r, d, c, p in prec.iter_rows()]
    return data


# --- rendering ---------------------------------------------------------------------------------

def _bar_svg(rows: list[dict[str, Any]], title: str, color: str = "#2f5d8a") -> str:
    if not rows:
        return ""
    import altair as alt
    import vl_convert as vlc

    frame = pl.DataFrame(rows)
    chart = alt.Chart(frame).mark_bar(color=color).encode(
        x=alt.X("count:Q", title=None), y=alt.Y("key:N", sort="-x", title=None),
        tooltip=["key", "count"]).properties(width=250, height=max(60, 18 * len(rows)),
                                             title=title)
    return vlc.vegalite_to_svg(chart.to_json())


def _trend_svg(rows: list[dict[str, Any]], lang: str) -> str:
    if not rows:
        return ""
    import altair as alt
    import vl_convert as vlc

    t = TEXT[lang]
    long = pl.DataFrame(rows).unpivot(index="month", on=["flagged", "confirmed", "no_finding"],
                                      variable_name="kind", value_name="count")
    names = {"flagged": t["flagged"], "confirmed": t["status"]["confirmed"],
             "no_finding": t["status"]["no_finding"]}
    long = long.with_columns(pl.col("kind").replace_strict(names))
    chart = alt.Chart(long).mark_line(point=True).encode(
        x=alt.X("month:O", title=t["month"]), y=alt.Y("count:Q", title=t["items"]),
        color=alt.Color("kind:N", title=None, legend=alt.Legend(labelLimit=220))).properties(width=430, height=170)
    return vlc.vegalite_to_svg(chart.to_json())


def render_html(data: ReportData, lang: str = "de") -> str:
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("detect", "templates"),
                      autoescape=select_autoescape(["html", "j2"]))
    env.filters["money"] = lambda v: fmt.money(v, lang)
    env.filters["num"] = lambda v: fmt.number(v, lang)
    env.filters["pct"] = lambda v: fmt.percent(v, lang)
    env.filters["day"] = lambda v: fmt.day(v, lang)
    t = TEXT[lang]
    year, mon = (int(p) for p in data.month.split("-"))
    charts = {
        "family": _bar_svg(data.by_family, t["by_family"]),
        "severity": _bar_svg([{**r, "key": t["severity"].get(r["key"], r["key"])}
                              for r in data.by_severity], t["by_severity"], "#b5542c"),
        "cost_center": _bar_svg(data.by_cost_center, t["by_cost_center"], "#5a7d3a"),
        "backlog": _bar_svg(data.backlog_by_age, t["backlog"], "#8a6d2f"),
        "trend": _trend_svg(data.trend, lang),
    }
    return env.get_template("report.html.j2").render(
        d=data, t=t, lang=lang, charts=charts, month_label=fmt.month_name(year, mon, lang),
        generated=fmt.day(datetime.now(UTC), lang))


def write_pdf(html: str, path: Path) -> None:
    from weasyprint import HTML

    HTML(string=html).write_pdf(path)


def build_report(data_dir: Path, month: str, *, entity: str | None = None,
                 output: Path | None = None, lang: str = "de",
                 settings: Settings | None = None, store: Any | None = None) -> Path:
    """Write the monthly report (HTML or PDF, by the output's suffix) and return its path."""
    from detect.store import ReviewStore

    _month_bounds(month)
    store = store or ReviewStore.for_data_dir(data_dir, settings.store_url if settings else "")
    data = collect(data_dir, month, entity=entity, store=store)
    output = output or data_dir / "reports" / f"report_{entity or 'all'}_{month}.html"
    output.parent.mkdir(parents=True, exist_ok=True)
    html = render_html(data, lang)
    if output.suffix.lower() == ".pdf":
        write_pdf(html, output)
    elif output.suffix.lower() in (".html", ".htm"):
        output.write_text(html, encoding="utf-8")
    else:
        raise UserError(f"report output must end in .html or .pdf, not {output.suffix!r}")
    return output
