"""Model explanations in words (German and English), built vectorised with Polars.

Why ECOD tail scores: for each feature, ``-log P(a usual line is at least this extreme)`` says
exactly how unusual the value is, needs no extra model, and costs one ``searchsorted`` per
feature. The top features by tail score are named with the values an auditor can check
("amount 9,950.00 € is above 99.7% of amounts on account 521100"). They explain what is unusual
about the line; IForest and HBOS scores agree with them in most cases because they see the
same features, but no claim is made about IForest's internal splits.

Strings are composed with Polars expressions per feature and then picked per slot with
``when/then`` chains: no Python loop over rows.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import polars as pl

MIN_TAIL = float(np.log(20))
"""A feature is named only if fewer than 5 % of usual lines are as extreme (the strongest
feature of a line is always named)."""

WEEKDAY = {
    "de": {1: "Montag", 2: "Dienstag", 3: "Mittwoch", 4: "Donnerstag", 5: "Freitag",
           6: "Samstag", 7: "Sonntag"},
    "en": {1: "Monday", 2: "Tuesday", 3: "Wednesday", 4: "Thursday", 5: "Friday",
           6: "Saturday", 7: "Sunday"},
}


def fmt_int(expr: pl.Expr, lang: str) -> pl.Expr:
    """Integer with thousands separators (de: 1.234.567, en: 1,234,567)."""
    sep = "." if lang == "de" else ","
    v = expr.cast(pl.Int64).abs()
    g = [((v // 10 ** (3 * k)) % 1000) for k in range(5)]
    parts = []
    for k in range(4, 0, -1):
        head = v >= 10 ** (3 * k)
        top = pl.when(v < 10 ** (3 * (k + 1))).then(g[k].cast(pl.String)) \
            .otherwise(g[k].cast(pl.String).str.zfill(3))
        parts.append(pl.when(head).then(pl.concat_str([top, pl.lit(sep)])).otherwise(pl.lit("")))
    last = pl.when(v >= 1000).then(g[0].cast(pl.String).str.zfill(3)) \
        .otherwise(g[0].cast(pl.String))
    sign = pl.when(expr < 0).then(pl.lit("-")).otherwise(pl.lit(""))
    return pl.concat_str([sign, *parts, last])


def fmt_money(expr: pl.Expr, lang: str) -> pl.Expr:
    """9950.0 -> '9.950,00 €' (de) / '9,950.00 €' (en); uses the absolute amount."""
    cents = (expr.abs() * 100).round(0).cast(pl.Int64)
    dec = "," if lang == "de" else "."
    return pl.concat_str([fmt_int(cents // 100, lang), pl.lit(dec),
                          (cents % 100).cast(pl.String).str.zfill(2), pl.lit(" €")])


def fmt_pct(share: pl.Expr, lang: str) -> pl.Expr:
    """0.9973 -> '99,7 %' (de) / '99.7%' (en); rounded down so 'above 100 %' never appears."""
    tenths = (share * 1000).floor().cast(pl.Int64)
    whole = (tenths // 10).cast(pl.String)
    frac = (tenths % 10).cast(pl.String)
    if lang == "de":
        return pl.concat_str([whole, pl.lit(","), frac, pl.lit(" %")])
    return pl.concat_str([whole, pl.lit("."), frac, pl.lit("%")])


def _s(text: str) -> pl.Expr:
    return pl.lit(text)


def templates(lang: str, settings: Any) -> dict[str, pl.Expr]:
    """One string expression per feature, quoting the values behind it."""
    de = lang == "de"
    c = pl.col
    amt = fmt_money(c("amount_f"), lang)
    acct = c("gl_account").fill_null("?")
    user = c("entered_by").fill_null("?")
    vendor = c("vendor_j").fill_null("?")
    n = lambda col: fmt_int(c(col), lang)  # noqa: E731
    start, end = settings.office_hours.start_hour, settings.office_hours.end_hour
    weekday = c("day").dt.weekday().replace_strict(WEEKDAY[lang], return_dtype=pl.String)
    day = c("day").dt.strftime("%d.%m.%Y" if de else "%Y-%m-%d")
    post_days = c("entry_post").abs().cast(pl.String)
    doc_days = c("doc_post").abs().cast(pl.String)
    if de:
        return {
            "amount_log": pl.concat_str([_s("Betrag "), amt, _s(" ist höher als "),
                                         fmt_pct(c("amount_pct_all"), lang),
                                         _s(" aller Beträge")]),
            "amount_z_account": pl.concat_str([_s("Betrag "), amt, _s(" liegt über "),
                                               fmt_pct(c("amount_pct_account"), lang),
                                               _s(" der Beträge auf Konto "), acct]),
            "account_rarity": pl.concat_str([_s("Konto "), acct, _s(" wird selten bebucht ("),
                                             n("account_lines"), _s(" Zeilen in der Historie)")]),
            "pair_rarity": pl.concat_str([_s("Kontenpaar "), acct, _s("/"),
                                          c("contra_account").fill_null("?"),
                                          _s(" kam nur in "), n("pair_journals"),
                                          _s(" Beleg(en) vor")]),
            "user_account_rarity": pl.when(c("ua_other") <= 0).then(pl.concat_str(
                [_s("Benutzer "), user, _s(" hat sonst nie auf Konto "), acct, _s(" gebucht")]))
            .otherwise(pl.concat_str([_s("Benutzer "), user, _s(" hat nur in "), n("ua_other"),
                                      _s(" anderen Beleg(en) auf Konto "), acct,
                                      _s(" gebucht")])),
            "user_rarity": pl.concat_str([_s("Benutzer "), user, _s(" bucht selten ("),
                                          n("user_lines"), _s(" Zeilen in der Historie)")]),
            "vendor_account_rarity": pl.when(c("va_other") <= 0).then(pl.concat_str(
                [_s("Kreditor "), vendor, _s(" wurde sonst nie auf Konto "), acct,
                 _s(" gebucht")]))
            .otherwise(pl.concat_str([_s("Kreditor "), vendor, _s(" wurde nur in "),
                                      n("va_other"), _s(" anderen Beleg(en) auf Konto "), acct,
                                      _s(" gebucht")])),
            "vendor_new": pl.concat_str([_s("Kreditor "), vendor, _s(" ist neu ("),
                                         n("vendor_age_days"),
                                         _s(" Tage seit Anlage bzw. erster Buchung)")]),
            "bank_rarity": pl.concat_str([_s("Bankverbindung von Kreditor "), vendor,
                                          _s(" nur in "), n("bank_journals"), _s(" von "),
                                          n("vendor_bank_journals"),
                                          _s(" Zahlungen verwendet")]),
            "off_hours": pl.concat_str([_s("erfasst um "), c("entry_time").fill_null("?"),
                                        _s(f" Uhr, außerhalb der Bürozeiten ({start}–{end} "
                                           "Uhr; "),
                                        user, _s(" sonst bei "),
                                        fmt_pct(c("user_off_share"), lang), _s(" der Zeilen)")]),
            "non_workday": pl.concat_str([_s("erfasst/gebucht an einem Wochenende oder Feiertag ("),
                                          weekday, _s(", "), day, _s("; "), user,
                                          _s(" sonst bei "), fmt_pct(c("user_nonwork_share"), lang),
                                          _s(" der Zeilen)")]),
            "doc_post_days": pl.concat_str([_s("Buchungsdatum liegt "), doc_days, _s(" Tage "),
                                            pl.when(c("doc_post") >= 0).then(_s("nach"))
                                            .otherwise(_s("vor")), _s(" dem Belegdatum")]),
            "entry_post_days": pl.concat_str([_s("Buchungsdatum liegt "), post_days,
                                              _s(" Tage "),
                                              pl.when(c("entry_post") >= 0).then(_s("nach"))
                                              .otherwise(_s("vor")),
                                              _s(" dem Erfassungstag")]),
            "round_zeros": pl.concat_str([_s("runder Betrag "), amt]),
            "trailing_nines": pl.concat_str([_s("Betrag "), amt,
                                             _s(" endet auf Neunen (knapp unter einer Grenze?)")]),
            "user_day_z": pl.concat_str([_s("Benutzer "), user, _s(" hat an diesem Tag "),
                                         n("user_day_lines"), _s(" Zeilen erfasst (sonst etwa "),
                                         n("user_day_median"), _s(")")]),
        }
    return {
        "amount_log": pl.concat_str([_s("amount "), amt, _s(" is larger than "),
                                     fmt_pct(c("amount_pct_all"), lang), _s(" of all amounts")]),
        "amount_z_account": pl.concat_str([_s("amount "), amt, _s(" is above "),
                                           fmt_pct(c("amount_pct_account"), lang),
                                           _s(" of amounts on account "), acct]),
        "account_rarity": pl.concat_str([_s("account "), acct, _s(" is rarely used ("),
                                         n("account_lines"), _s(" lines in the history)")]),
        "pair_rarity": pl.concat_str([_s("account pair "), acct, _s("/"),
                                      c("contra_account").fill_null("?"),
                                      _s(" occurred in only "), n("pair_journals"),
                                      _s(" journal(s)")]),
        "user_account_rarity": pl.when(c("ua_other") <= 0).then(pl.concat_str(
            [_s("user "), user, _s(" has never otherwise posted to account "), acct]))
        .otherwise(pl.concat_str([_s("user "), user, _s(" posted to account "), acct,
                                  _s(" in only "), n("ua_other"), _s(" other journal(s)")])),
        "user_rarity": pl.concat_str([_s("user "), user, _s(" rarely posts ("), n("user_lines"),
                                      _s(" lines in the history)")]),
        "vendor_account_rarity": pl.when(c("va_other") <= 0).then(pl.concat_str(
            [_s("vendor "), vendor, _s(" was never otherwise booked to account "), acct]))
        .otherwise(pl.concat_str([_s("vendor "), vendor, _s(" was booked to account "), acct,
                                  _s(" in only "), n("va_other"), _s(" other journal(s)")])),
        "vendor_new": pl.concat_str([_s("vendor "), vendor, _s(" is new ("),
                                     n("vendor_age_days"),
                                     _s(" days since creation or first booking)")]),
        "bank_rarity": pl.concat_str([_s("bank account of vendor "), vendor, _s(" used in only "),
                                      n("bank_journals"), _s(" of "), n("vendor_bank_journals"),
                                      _s(" payments")]),
        "off_hours": pl.concat_str([_s("entered at "), c("entry_time").fill_null("?"),
                                    _s(f", outside office hours ({start}:00–{end}:00; "), user,
                                    _s(" otherwise in "), fmt_pct(c("user_off_share"), lang),
                                    _s(" of lines)")]),
        "non_workday": pl.concat_str([_s("entered/posted on a weekend or public holiday ("),
                                      weekday, _s(", "), day, _s("; "), user, _s(" otherwise in "),
                                      fmt_pct(c("user_nonwork_share"), lang), _s(" of lines)")]),
        "doc_post_days": pl.concat_str([_s("posting date is "), doc_days, _s(" days "),
                                        pl.when(c("doc_post") >= 0).then(_s("after"))
                                        .otherwise(_s("before")), _s(" the document date")]),
        "entry_post_days": pl.concat_str([_s("posting date is "), post_days, _s(" days "),
                                          pl.when(c("entry_post") >= 0).then(_s("after"))
                                          .otherwise(_s("before")), _s(" the entry date")]),
        "round_zeros": pl.concat_str([_s("round amount "), amt]),
        "trailing_nines": pl.concat_str([_s("amount "), amt,
                                         _s(" ends in nines (just below a limit?)")]),
        "user_day_z": pl.concat_str([_s("user "), user, _s(" entered "), n("user_day_lines"),
                                     _s(" lines that day (usually about "),
                                     n("user_day_median"), _s(")")]),
    }


def explain(frame: pl.DataFrame, tails: np.ndarray, names: list[str], k: int,
            settings: Any) -> pl.DataFrame:
    """``model_reasons_de``, ``model_reasons_en``, ``top_features`` for each row of ``frame``.

    ``tails`` is the (rows x features) ECOD tail-score matrix for ``names``.
    """
    k = max(1, min(k, len(names)))
    order = np.argsort(-tails, axis=1, kind="stable")[:, :k]
    contrib = np.take_along_axis(tails, order, axis=1)
    values = np.take_along_axis(frame.select(names).to_numpy(), order, axis=1)
    label = pl.Series(names, dtype=pl.String)
    n = frame.height
    # feature names by a gather of their index, not as NumPy unicode arrays: converting
    # those to Polars strings cost ~0.03 of this function's ~0.145 CPU s for 26k lines
    slots = {}
    for i in range(k):
        slots[f"_f{i}"] = label.gather(order[:, i])
        slots[f"_c{i}"] = np.round(contrib[:, i], 3)
        slots[f"_v{i}"] = np.round(values[:, i].astype(np.float64), 4)
    work = pl.DataFrame(slots)
    # long form (row, slot, feature): each feature's sentence is rendered only on the rows
    # that name it, so the cost is ~k sentences per row, not one per feature per row
    long = pl.DataFrame({
        "_row": np.repeat(np.arange(n, dtype=np.int64), k),
        "_slot": np.tile(np.arange(k, dtype=np.int64), n),
        "_feat": order.ravel().astype(np.int32),
        "_contrib": contrib.ravel(),
    }).filter((pl.col("_slot") == 0) | (pl.col("_contrib") >= MIN_TAIL))
    de, en = templates("de", settings), templates("en", settings)
    parts = []
    for j, name in enumerate(names):  # loop over features (~15), vectorised over rows
        rows = long.filter(pl.col("_feat") == j)
        if rows.height == 0:
            continue
        # only the columns the two sentences read are gathered, not the whole frame (~45
        # columns: 0.07 of this function's 0.16 CPU s for 33k lines)
        used = dict.fromkeys(de[name].meta.root_names() + en[name].meta.root_names())
        ctx = frame.select(list(used))[rows.get_column("_row").to_numpy()]
        parts.append(ctx.select(de[name].alias("de"), en[name].alias("en"))
                     .hstack(rows.select("_row", "_slot")))
    # lists joined after the grouping (nulls skipped): ``str.join`` as the aggregation took
    # ~0.04 of this function's ~0.16 CPU s for 33k lines
    text = (pl.concat(parts).sort("_row", "_slot")
            .group_by("_row", maintain_order=True)
            .agg(pl.col("de").alias("model_reasons_de"), pl.col("en").alias("model_reasons_en"))
            .with_columns(pl.col("model_reasons_de", "model_reasons_en").list.join("; "))
            if parts else pl.DataFrame(schema={"_row": pl.Int64, "model_reasons_de": pl.String,
                                               "model_reasons_en": pl.String}))
    reasons = (pl.DataFrame({"_row": np.arange(n, dtype=np.int64)})
               .join(text, on="_row", how="left", maintain_order="left")
               .with_columns(pl.col("model_reasons_de", "model_reasons_en").fill_null("")))
    items = [pl.concat_str([_s('{"feature":"'), pl.col(f"_f{i}"), _s('","value":'),
                            pl.col(f"_v{i}").cast(pl.String), _s(',"contribution":'),
                            pl.col(f"_c{i}").cast(pl.String), _s("}")]) for i in range(k)]
    top = work.select(pl.concat_str([_s("["), pl.concat_str(items, separator=","), _s("]")])
                      .alias("top_features"))
    return reasons.select("model_reasons_de", "model_reasons_en").hstack(top)


def parse_top_features(value: str) -> list[dict[str, Any]]:
    """The JSON list in ``top_features`` (for tests and the app)."""
    return json.loads(value)
