"""Pseudonymisation of personal data (IBANs, employee and private-payee names).

Pseudonyms are keyed HMACs: stable within a data dir (so rules can still compare bank accounts
and users), meaningless outside it. The key lives in ``<data_dir>/secrets/pseudonym.key`` and is
created on first use; whoever holds the key and the clear value can re-identify, nobody else.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

import polars as pl

KEY_FILE = Path("secrets") / "pseudonym.key"


def load_key(data_dir: Path) -> bytes:
    path = data_dir / KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(secrets.token_bytes(32))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    return path.read_bytes()


def pseudonym(value: str, key: bytes, prefix: str = "") -> str:
    digest = hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:10]
    return f"{prefix}{digest}"


def _iban_pseudonym(cleaned: str, key: bytes) -> str | None:
    """One cleaned (no blanks, upper case) IBAN -> its pseudonym; already pseudonymised values
    (containing ``#``) pass, an empty one becomes null."""
    if cleaned == "":
        return None
    if "#" in cleaned:
        return cleaned
    return f"{cleaned[:2]}**{cleaned[-4:]}#{pseudonym(cleaned, key)}"


def iban_pseudonyms(values: pl.Series, key: bytes) -> pl.Series:
    """``values`` (IBANs as delivered, any blanks and case) with each replaced by its pseudonym
    (see ``pseudonymise_iban``). The cleaning (blanks out, upper case) and the keyed hash run
    once per distinct delivered value, then every row is one lookup: at 1M lines with ~8k
    accounts, cleaning every row cost 0.3 s."""
    distinct = values.drop_nulls().unique()
    if distinct.is_empty():
        return values.cast(pl.String)
    cleaned = distinct.str.replace_all(r"\s", "").str.to_uppercase()
    pseudonyms = pl.Series([_iban_pseudonym(c, key) for c in cleaned.to_list()],
                           dtype=pl.String)
    return values.replace_strict(distinct, pseudonyms, default=None, return_dtype=pl.String)


class IbanPseudonymiser:
    """``iban_pseudonyms`` for a stream of batches: each distinct value is cleaned and hashed
    once over all batches (ingest pseudonymises bank accounts before anything is written).
    The values seen so far and their pseudonyms are kept as two Series, so a batch costs two
    vectorised lookups, no Python loop over its values. Safe to call from several threads (a
    Polars UDF is): one batch at a time updates and reads the two Series."""

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.raw = pl.Series(dtype=pl.String)
        self.pseudonyms = pl.Series(dtype=pl.String)
        self._lock = threading.Lock()

    def __call__(self, values: pl.Series) -> pl.Series:
        distinct = values.drop_nulls().unique()
        if distinct.is_empty():
            return values.cast(pl.String)
        with self._lock:
            new = distinct.filter(~distinct.is_in(self.raw.implode()))
            if new.len():
                self.raw = pl.concat([self.raw, new])
                self.pseudonyms = pl.concat([self.pseudonyms, iban_pseudonyms(new, self.key)])
            raw, pseudonyms = self.raw, self.pseudonyms
        return values.replace_strict(raw, pseudonyms, default=None, return_dtype=pl.String)


def pseudonymise_iban(frame: pl.LazyFrame | pl.DataFrame, column: str, key: bytes):
    """``DE89370400440532013000`` -> ``DE**3000#1a2b3c4d5e``: country and last four digits stay
    readable (auditors recognise them), the rest becomes a keyed hash. Blanks are removed and
    letters upper-cased first; values already pseudonymised (containing ``#``) pass (upper-cased
    too: not idempotent, pseudonymise a value once); empty ones become null. Cleans and hashes
    each distinct value once, not each row (``iban_pseudonyms``)."""
    lazy = frame.lazy()
    raw = lazy.select(pl.col(column).unique().drop_nulls()).collect().get_column(column)
    if raw.is_empty():
        out = lazy.with_columns(pl.col(column).cast(pl.String))
    else:
        pseudonyms = iban_pseudonyms(raw, key)
        out = lazy.with_columns(pl.col(column).replace_strict(
            raw, pseudonyms, default=None, return_dtype=pl.String))
    return out if isinstance(frame, pl.LazyFrame) else out.collect()


def pseudonymise_master(master: dict[str, pl.DataFrame], key: bytes,
                        ibans: IbanPseudonymiser | None = None) -> list[str]:
    """IBANs in master data pseudonymised like the bookings' (so rules can compare them), in
    place in ``master``: vendors' ``bank_account`` and the old/new values of vendor changes to
    bank fields. Returns the names of the frames changed. ``ibans``: a pseudonymiser that may
    already know most of these IBANs from the bookings (same key, same pseudonyms)."""
    def swap(frame: pl.DataFrame, column: str) -> pl.DataFrame:
        if ibans is None:
            return pseudonymise_iban(frame, column, key)
        return frame.with_columns(ibans(frame.get_column(column).cast(pl.String)).alias(column))

    changed = []
    vendors = master.get("vendors")
    if vendors is not None and "bank_account" in vendors.columns and vendors.height:
        master["vendors"] = swap(vendors, "bank_account")
        changed.append("vendors")
    changes = master.get("vendor_changes")
    if changes is not None and changes.height and "field" in changes.columns:
        is_bank = pl.col("field").str.to_lowercase().str.contains("bank|iban")
        bank, other = changes.filter(is_bank), changes.filter(~is_bank.fill_null(False))
        if bank.height:
            for col in ("old_value", "new_value"):
                bank = swap(bank, col)
            master["vendor_changes"] = pl.concat([other, bank]).sort("changed_at")
            changed.append("vendor_changes")
    return changed


def pseudonymise_name(value: str | None, key: bytes, prefix: str = "P-") -> str | None:
    """An employee's or private payee's name -> ``P-1a2b3c4d5e`` for roles that need no names."""
    if value is None or value == "":
        return value
    return pseudonym(value, key, prefix)


def mask_columns(frame: pl.DataFrame, columns: tuple[str, ...] | list[str], key: bytes,
                 prefix: str = "P-") -> pl.DataFrame:
    """Replace personal values by keyed pseudonyms; hashes each distinct value once."""
    present = [c for c in columns if c in frame.columns]
    if frame.is_empty() or not present:
        return frame
    distinct = (frame.select(pl.concat_list([pl.col(c).cast(pl.String) for c in present])
                             .alias("v")).explode("v").drop_nulls().unique()
                .get_column("v").to_list())
    mapping = {v: pseudonymise_name(v, key, prefix) for v in distinct}
    return frame.with_columns([
        pl.col(c).cast(pl.String).replace_strict(mapping, default=None, return_dtype=pl.String)
        for c in present])


@dataclass
class Masker:
    """Pseudonymises personal data for display: name columns and names inside free texts.

    ``names`` maps each known clear value (employee user ids, private payees' names) to its
    keyed pseudonym. Free texts (reasons, rule explanations, booking texts) are rewritten with
    one Aho-Corasick pass (``str.replace_many``), longest name first, so ``OTTO_WX`` is not
    half-replaced as ``OTTO_W``.
    """

    names: dict[str, str]
    key: bytes

    @classmethod
    def build(cls, values: list[str], key: bytes) -> Masker:
        clean = {v.strip() for v in values if v and len(v.strip()) >= 3}
        return cls({v: pseudonymise_name(v, key) or v for v in clean}, key)

    def _patterns(self) -> tuple[list[str], list[str]]:
        ordered = sorted(self.names, key=len, reverse=True)
        return ordered, [self.names[v] for v in ordered]

    def frame(self, frame: pl.DataFrame, name_columns: tuple[str, ...] | list[str] = (),
              text_columns: tuple[str, ...] | list[str] = ()) -> pl.DataFrame:
        if frame.is_empty():
            return frame
        frame = mask_columns(frame, name_columns, self.key)
        exprs = []
        texts = [c for c in text_columns if c in frame.columns]
        if texts and self.names:
            old, new = self._patterns()
            exprs += [pl.col(c).cast(pl.String).str.replace_many(old, new, leftmost=True)
                      .alias(c) for c in texts]
        return frame.with_columns(exprs) if exprs else frame

    def text(self, value: str | None) -> str | None:
        if not value or not self.names:
            return value
        return self.frame(pl.DataFrame({"t": [value]}), text_columns=["t"])["t"][0]
