"""Numbers, money and dates in the reader's locale (German by default: ``1.234,56 €``, ``31.03.2025``)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

MONTHS = {
    "de": ["Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September",
           "Oktober", "November", "Dezember"],
    "en": ["January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December"],
}


def number(value: float | int | Decimal | None, lang: str = "de", decimals: int = 0) -> str:
    if value is None:
        return "–"
    text = f"{float(value):,.{decimals}f}"
    if lang == "de":
        text = text.replace(",", "\x00").replace(".", ",").replace("\x00", ".")
    return text


def money(value: float | int | Decimal | None, lang: str = "de", currency: str = "EUR") -> str:
    if value is None:
        return "–"
    symbol = "€" if currency == "EUR" else currency
    if lang == "de" or symbol != "€":
        return f"{number(value, lang, 2)} {symbol}"
    sign = "-" if value < 0 else ""
    return f"{sign}€{number(abs(value), lang, 2)}"


def percent(share: float | None, lang: str = "de", decimals: int = 1) -> str:
    if share is None:
        return "–"
    return f"{number(share * 100, lang, decimals)} %" if lang == "de" else f"{number(share * 100, lang, decimals)}%"


def day(value: date | datetime | None, lang: str = "de") -> str:
    if value is None:
        return "–"
    return value.strftime("%d.%m.%Y") if lang == "de" else value.strftime("%Y-%m-%d")


def month_name(year: int, month: int, lang: str = "de") -> str:
    return f"{MONTHS[lang][month - 1]} {year}"
