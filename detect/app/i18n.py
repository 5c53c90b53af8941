"""UI texts in German (default) and English, and vectorised German/English formatting.

Why one table: a missing translation shows up as the key itself, and a test checks both
languages have the same keys. Formatting of whole columns is done with Polars expressions
(no Python loop over rows), single values with ``detect.fmt``.
"""

from __future__ import annotations

import polars as pl

LANGS = ("de", "en")

TEXT: dict[str, tuple[str, str]] = {
    # shell
    "app_title": ("Belegwacht", "Belegwacht"),
    "language": ("Sprache", "Language"),
    "login_title": ("Anmelden", "Sign in"),
    "login_intro": ("Bitte melden Sie sich an, um die Prüfliste zu sehen.",
                    "Please sign in to see the review queue."),
    "username": ("Benutzername", "User name"),
    "password": ("Passwort", "Password"),
    "login_button": ("Anmelden", "Sign in"),
    "login_failed": ("Anmeldung fehlgeschlagen: Benutzername oder Passwort falsch, oder Konto "
                     "gesperrt.", "Sign-in failed: wrong user name or password, or account "
                     "disabled."),
    "login_locked": ("Zu viele Fehlversuche für dieses Konto – bitte {minutes} Minuten warten.",
                     "Too many failed attempts for this account – please wait {minutes} minutes."),
    "login_oidc": ("Mit Single Sign-on anmelden", "Sign in with single sign-on"),
    "oidc_no_account": ("Ihre Identität {who} ist keinem aktiven Konto zugeordnet. Bitte wenden "
                        "Sie sich an die Administration.",
                        "Your identity {who} is not mapped to an active account. Please ask an "
                        "administrator."),
    "session_expired": ("Sitzung abgelaufen – bitte erneut anmelden.",
                        "Session expired – please sign in again."),
    "logout": ("Abmelden", "Sign out"),
    "signed_in_as": ("Angemeldet: {name} ({role})", "Signed in: {name} ({role})"),
    "denied": ("Keine Berechtigung: {detail}", "Not permitted: {detail}"),
    "no_run": ("Noch kein veröffentlichter Lauf in {dir}. Starten Sie `belegwacht run …`.",
               "No published run in {dir} yet. Start `belegwacht run …`."),
    # roles, statuses, severities
    "role_auditor": ("Prüfer/in", "Auditor"),
    "role_manager": ("Leitung", "Manager"),
    "role_admin": ("Administration", "Admin"),
    "status_open": ("offen", "open"),
    "status_confirmed": ("bestätigt", "confirmed"),
    "status_no_finding": ("kein Befund", "no finding"),
    "status_clarify": ("in Klärung", "to clarify"),
    "sev_low": ("niedrig", "low"),
    "sev_medium": ("mittel", "medium"),
    "sev_high": ("hoch", "high"),
    "sev_critical": ("kritisch", "critical"),
    # pages
    "page_queue": ("Prüfliste", "Review queue"),
    "page_item": ("Beleg", "Item"),
    "page_bulk": ("Sammelentscheidung", "Bulk decision"),
    "page_runs": ("Läufe", "Runs"),
    "page_rules": ("Regeln", "Rules"),
    "page_audit": ("Prüfpfad", "Audit trail"),
    "page_report": ("Monatsbericht", "Monthly report"),
    "report_month": ("Monat", "Month"),
    "report_download_html": ("Als HTML herunterladen", "Download as HTML"),
    "report_make_pdf": ("PDF erzeugen", "Make PDF"),
    "report_download_pdf": ("PDF herunterladen", "Download PDF"),
    "page_users": ("Benutzer", "Users"),
    "page_export": ("Export", "Export"),
    # queue
    "filters": ("Filter", "Filters"),
    "f_status": ("Status", "Status"),
    "f_rule": ("Regel", "Rule"),
    "f_severity": ("Schwere", "Severity"),
    "f_period": ("Periode", "Period"),
    "f_account": ("Konto", "Account"),
    "f_cost_center": ("Kostenstelle", "Cost center"),
    "f_user": ("Erfasser/in", "User"),
    "f_vendor": ("Kreditor", "Vendor"),
    "f_amount_min": ("Betrag ab", "Amount from"),
    "f_amount_max": ("Betrag bis", "Amount to"),
    "f_text": ("Suche (Text, Beleg, Referenz)", "Search (text, journal, reference)"),
    "f_assignee": ("Zugewiesen an", "Assigned to"),
    "choose": ("Auswählen …", "Choose …"),
    "f_reset": ("Filter zurücksetzen", "Reset filters"),
    "count_line": ("{shown} von {total} Einträgen · {open} offen · {confirmed} bestätigt · "
                   "{no_finding} kein Befund · {clarify} in Klärung",
                   "{shown} of {total} items · {open} open · {confirmed} confirmed · "
                   "{no_finding} no finding · {clarify} to clarify"),
    "capacity_line": ("Prüfkapazität: {capacity} Einträge je Lauf – {above} Einträge liegen "
                      "über der Kapazitätslinie, davon {above_open} noch offen.",
                      "Review capacity: {capacity} items per run – {above} items lie above the "
                      "capacity line, {above_open} of them still open."),
    "page_size": ("Zeilen je Seite", "Rows per page"),
    "page_no": ("Seite", "Page"),
    "page_of": ("Seite {page} von {pages}", "Page {page} of {pages}"),
    "open_item": ("Beleg öffnen", "Open item"),
    "open_button": ("Öffnen", "Open"),
    "select_hint": ("Zeile anklicken oder unten auswählen, um den Beleg zu öffnen.",
                    "Click a row or choose below to open the item."),
    "no_items": ("Keine Einträge für diese Filter.", "No items match these filters."),
    # columns
    "c_rank": ("Rang", "Rank"),
    "c_risk": ("Risiko", "Risk"),
    "c_status": ("Status", "Status"),
    "c_journal": ("Beleg", "Journal"),
    "c_line": ("Zeile", "Line"),
    "c_date": ("Buchungsdatum", "Posting date"),
    "c_period": ("Periode", "Period"),
    "c_account": ("Konto", "Account"),
    "c_amount": ("Betrag", "Amount"),
    "c_journal_amount": ("Belegsumme", "Journal amount"),
    "c_rules": ("Regeln", "Rules"),
    "c_severity": ("Schwere", "Severity"),
    "c_reason": ("Hauptgrund", "Main reason"),
    "c_user": ("Erfasser/in", "User"),
    "c_vendor": ("Kreditor", "Vendor"),
    "c_cost_center": ("Kostenstelle", "Cost center"),
    "c_assignee": ("Zugewiesen", "Assigned"),
    "c_capacity": ("In Kapazität", "In capacity"),
    "c_description": ("Text", "Text"),
    "c_reference": ("Referenz", "Reference"),
    "c_bank_account": ("IBAN (pseudonymisiert)", "IBAN (pseudonymised)"),
    "c_approved_by": ("Freigabe", "Approved by"),
    "c_entered_at": ("Erfasst am", "Entered at"),
    "c_document_type": ("Belegart", "Document type"),
    "c_source": ("Herkunft", "Source"),
    "c_run": ("Lauf", "Run"),
    "c_current": ("aktuell", "current"),
    "c_created": ("erstellt", "created"),
    "c_rows_in": ("Zeilen gelesen", "Rows read"),
    "c_rows_clean": ("Zeilen geprüft", "Rows clean"),
    "c_items": ("Einträge", "Items"),
    "c_outcome": ("Ergebnis", "Outcome"),
    "c_time": ("Zeitpunkt", "Time"),
    "c_who": ("Wer", "Who"),
    "c_event": ("Ereignis", "Event"),
    "c_title": ("Titel", "Title"),
    "c_family": ("Familie", "Family"),
    "c_entity": ("Körperschaft", "Entity"),
    "c_fy": ("Jahr", "Year"),
    # item
    "no_item": ("Kein Beleg gewählt – bitte in der Prüfliste einen Eintrag öffnen.",
                "No item chosen – please open one from the review queue."),
    "item_missing": ("Beleg {item} ist im aktuellen Lauf nicht vorhanden.",
                     "Item {item} is not in the current run."),
    "item_header": ("Beleg {journal} · {entity} {fy}", "Journal {journal} · {entity} {fy}"),
    "reasons": ("Gründe", "Reasons"),
    "rule_reasons": ("Regeln", "Rules"),
    "model_reasons": ("Statistische Auffälligkeit (Modell)", "Statistical outlier (model)"),
    "model_score_line": ("Modellwert {score} (0 = gewöhnlich, 1 = sehr ungewöhnlich)",
                         "Model score {score} (0 = ordinary, 1 = very unusual)"),
    "feature": ("Merkmal", "Feature"),
    "value": ("Wert", "Value"),
    "contribution": ("Beitrag", "Contribution"),
    "journal_lines": ("Alle Zeilen des Belegs", "All lines of the journal"),
    "context": ("Kontext", "Context"),
    "ctx_account": ("Beträge auf Konto {account} (dieser Beleg markiert)",
                    "Amounts on account {account} (this entry marked)"),
    "ctx_vendor": ("Letzte Zahlungen an Kreditor {vendor}", "Recent payments to vendor {vendor}"),
    "ctx_hours": ("Übliche Erfassungszeiten von {user}", "Usual posting hours of {user}"),
    "ctx_hour": ("Stunde", "Hour"),
    "ctx_lines": ("Zeilen", "Lines"),
    "ctx_none": ("Keine Vergleichsdaten.", "No comparison data."),
    "ctx_other": ("Vergleich mit Beleg {other} (aus Regel {rule})",
                  "Compared with journal {other} (from rule {rule})"),
    "this_entry": ("dieser Beleg", "this entry"),
    "history": ("Entscheidungsverlauf", "Decision history"),
    "no_history": ("Noch keine Entscheidung.", "No decision yet."),
    "decide": ("Entscheidung", "Decision"),
    "comment": ("Kommentar", "Comment"),
    "comment_required": ("Ein Kommentar ist für „bestätigt“ und „kein Befund“ Pflicht.",
                         "A comment is required for “confirmed” and “no finding”."),
    "assign_to": ("Zuweisen an", "Assign to"),
    "nobody": ("(niemand)", "(nobody)"),
    "suppress": ("Künftig unterdrücken (eng begrenzt)", "Suppress in future (narrow scope)"),
    "suppress_rule": ("Regel", "Rule"),
    "suppress_scope": ("Nur wenn zusätzlich gleich", "Only when also equal"),
    "suppress_reason": ("Begründung der Unterdrückung", "Reason for the suppression"),
    "suppress_too_wide": ("Eine Unterdrückung braucht eine Regel und mindestens ein weiteres "
                          "Merkmal (Kreditor, Konto, Erfasser/in, Kostenstelle).",
                          "A suppression needs a rule and at least one more key (vendor, "
                          "account, user, cost center)."),
    "save": ("Entscheidung speichern", "Save decision"),
    "saved": ("Gespeichert (Ereignis {event}).", "Saved (event {event})."),
    "cannot_decide": ("Ihre Rolle ({role}) kann Einträge lesen, aber nicht entscheiden.",
                      "Your role ({role}) can read items but not decide."),
    "reveal": ("Klarnamen anzeigen (wird protokolliert)", "Show real names (logged)"),
    "revealed": ("Klarnamen werden angezeigt; der Zugriff wurde protokolliert.",
                 "Real names shown; the access was logged."),
    "pseudonymised": ("Personenbezogene Daten sind pseudonymisiert.",
                      "Personal data is pseudonymised."),
    "back_to_queue": ("Zurück zur Prüfliste", "Back to queue"),
    # bulk
    "bulk_intro": ("Entscheidung für alle {n} Einträge der aktuellen Filterauswahl der "
                   "Prüfliste, mit einem gemeinsamen Kommentar.",
                   "Decision for all {n} items of the review queue's current filter, with one "
                   "shared comment."),
    "bulk_only_open": ("Nur offene Einträge", "Only open items"),
    "bulk_confirm": ("Ich habe die Auswahl geprüft ({n} Einträge).",
                     "I have checked the selection ({n} items)."),
    "bulk_save": ("Für alle speichern", "Save for all"),
    "bulk_done": ("{n} Entscheidungen gespeichert.", "{n} decisions saved."),
    "bulk_none": ("Keine Einträge ausgewählt.", "No items selected."),
    # runs
    "runs_intro": ("Veröffentlichte nächtliche Läufe, neuester zuerst.",
                   "Published nightly runs, newest first."),
    "data_docs": ("Great-Expectations-Datendokumentation", "Great Expectations Data Docs"),
    "data_docs_zip": ("Data Docs von {run} herunterladen (ZIP)",
                      "Download Data Docs of {run} (ZIP)"),
    "data_docs_none": ("Dieser Lauf hat keine Data Docs.", "This run has no Data Docs."),
    "warnings": ("Warnungen", "Warnings"),
    "quarantined": ("Quarantäne", "Quarantined"),
    "run_detail": ("Lauf", "Run"),
    # rules
    "rules_intro": ("Der Regelkatalog mit Treffern je Lauf und der bisherigen Trefferquote "
                    "(bestätigt ÷ (bestätigt + kein Befund)).",
                    "The rule catalog with hits per run and precision so far "
                    "(confirmed ÷ (confirmed + no finding))."),
    "precision": ("Trefferquote", "Precision"),
    "hits": ("Treffer", "Hits"),
    "confirmed_n": ("bestätigt", "confirmed"),
    "no_finding_n": ("kein Befund", "no finding"),
    "enabled": ("aktiv", "enabled"),
    "rule_switch": ("Regel aktiv", "Rule enabled"),
    "rule_switch_saved": ("{rule} ist jetzt {state} (gespeichert in {path}); wirkt ab dem "
                          "nächsten Lauf.", "{rule} is now {state} (saved in {path}); takes "
                          "effect with the next run."),
    "hits_per_run": ("Treffer je Lauf", "Hits per run"),
    "no_catalog": ("Der Regelkatalog ist nicht verfügbar: {err}",
                   "The rule catalog is not available: {err}"),
    "suppressions": ("Unterdrückungen", "Suppressions"),
    "revoke": ("Widerrufen", "Revoke"),
    "revoke_reason": ("Begründung des Widerrufs", "Reason for revoking"),
    "revoked": ("Unterdrückung {id} widerrufen.", "Suppression {id} revoked."),
    # audit
    "audit_intro": ("Wer hat wann was entschieden. Einträge werden nur angehängt und sind "
                    "verkettet (Hash der Vorgängerzeile).",
                    "Who decided what, when. Events are append-only and chained (hash of the "
                    "previous entry)."),
    "chain_ok": ("Prüfkette intakt: {msg}", "Chain intact: {msg}"),
    "chain_broken": ("Prüfkette verletzt: {msg}", "Chain broken: {msg}"),
    # users
    "users_intro": ("Lokale Konten der Prüf-App.", "Local accounts of the review app."),
    "add_user": ("Benutzer anlegen", "Add user"),
    "display_name": ("Anzeigename", "Display name"),
    "role": ("Rolle", "Role"),
    "user_added": ("{user} angelegt.", "{user} added."),
    "set_role": ("Rolle ändern", "Change role"),
    "disable": ("Sperren", "Disable"),
    "user_changed": ("{user} geändert.", "{user} changed."),
    "active": ("aktiv", "active"),
    "disabled": ("gesperrt", "disabled"),
    # export
    "export_intro": ("Export der gefilterten Prüfliste ({n} Einträge) mit Entscheidungen. "
                     "Zellen, die mit = + - @ beginnen, werden entschärft.",
                     "Export of the filtered review queue ({n} items) with decisions. Cells "
                     "starting with = + - @ are neutralised."),
    "export_prepare": ("Datei erzeugen", "Build file"),
    "export_download": ("{fmt} herunterladen", "Download {fmt}"),
    "format": ("Format", "Format"),
}


def t(key: str, lang: str = "de", **kwargs: object) -> str:
    """The text for ``key`` in ``lang`` with ``{placeholders}`` filled; the key if unknown."""
    pair = TEXT.get(key)
    if pair is None:
        return key
    text = pair[0] if lang != "en" else pair[1]
    return text.format(**kwargs) if kwargs else text


_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]()<>#|~!$"})


def md(text: object) -> str:
    """Escape Markdown: values from data (booking texts, ids, names, URL parameters) are shown
    through Streamlit's Markdown, where ``[x](javascript:…)`` or ``**`` would otherwise act."""
    return ("" if text is None else str(text)).translate(_MD_SPECIAL)


def status_label(status: str | None, lang: str) -> str:
    return t(f"status_{status or 'open'}", lang)


def money_expr(column: str, lang: str = "de", symbol: str = "€") -> pl.Expr:
    """``-1234567.5`` -> ``-1.234.567,50 €`` (de) / ``-1,234,567.50 €`` (en), vectorised."""
    thousands, decimal = (".", ",") if lang == "de" else (",", ".")
    value = pl.col(column).cast(pl.Float64)
    cents = (value.abs() * 100).round(0).cast(pl.Int64)
    units = cents // 100
    groups = [(units // 10 ** (3 * k)) % 1000 for k in range(4, -1, -1)]  # 10^12 .. 10^0
    text = pl.lit("")
    started = pl.lit(False)
    for i, group in enumerate(groups):
        last = i == len(groups) - 1
        padded = group.cast(pl.String).str.zfill(3)
        piece = pl.when(started).then(pl.lit(thousands) + padded).otherwise(
            group.cast(pl.String))
        show = started | (group > 0) | pl.lit(last)
        text = pl.when(show).then(text + piece).otherwise(text)
        started = started | (group > 0)
    frac = (cents % 100).cast(pl.String).str.zfill(2)
    sign = pl.when(value < 0).then(pl.lit("-")).otherwise(pl.lit(""))
    out = sign + text + pl.lit(decimal) + frac + pl.lit(f" {symbol}" if symbol else "")
    return pl.when(value.is_null()).then(pl.lit(None, pl.String)).otherwise(out).alias(column)


def date_expr(column: str, lang: str = "de") -> pl.Expr:
    return pl.col(column).dt.strftime("%d.%m.%Y" if lang == "de" else "%Y-%m-%d")
