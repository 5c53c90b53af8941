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


def pseudonymise_iban(frame: pl.LazyFrame | pl.DataFrame, column: str, key: bytes):
    """``DE89370400440532013000`` -> ``DE**3000#1a2b3c4d5e``: country and last four digits stay
    readable (auditors recognise them), the rest becomes a keyed hash. Values already
    pseudonymised (containing ``#``) pass through. Hashes each distinct IBAN once, not each row."""
    lazy = frame.lazy()
    clean = pl.col(column).str.replace_all(r"\s", "").str.to_uppercase()
    lazy = lazy.with_columns(clean.alias(column))
    distinct = (lazy.select(pl.col(column)).unique().drop_nulls().collect()
                .get_column(column).to_list())
    mapping = {
        v: v if ("#" in v or v == "") else f"{v[:2]}**{v[-4:]}#{pseudonym(v, key)}"
        for v in distinct
    }
    out = lazy.with_columns(
        pl.col(column).replace_strict(mapping, default=None, return_dtype=pl.String)
        .replace("", None).alias(column))
    return out if isinstance(frame, pl.LazyFrame) else out.collect()


def pseudonymise_name(value: str | None, key: bytes, prefix: str = "P-") -> str | None:
    """An employee's or private payee's name -> ``P-1a2b3c4d5e`` for roles that need no names."""
    if value is None or value == "":
        return value
    return pseudonym(value, key, prefix)
