"""Where the app finds its data: data dir, settings, review store, pseudonym key.

``belegwacht app`` passes ``BELEGWACHT_DATA_DIR`` (and optionally ``BELEGWACHT_CONFIG``) to the
Streamlit process; tests set the same variables. Nothing here imports Streamlit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from detect.config import DEFAULT_CONFIG_NAME, Settings, load_settings
from detect.privacy import load_key, pseudonymise_name
from detect.store import ReviewStore

DATA_DIR_ENV = "BELEGWACHT_DATA_DIR"
CONFIG_ENV = "BELEGWACHT_CONFIG"


@dataclass
class AppContext:
    data_dir: Path
    settings: Settings
    store: ReviewStore
    config_path: Path
    """The belegwacht.toml that rule switches are written to (may not exist yet)."""
    pseudonym_key: bytes


def config_path_from_env() -> Path:
    env = os.environ.get(CONFIG_ENV)
    return Path(env) if env else Path.cwd() / DEFAULT_CONFIG_NAME


def build_context(data_dir: Path | None = None, config: Path | None = None) -> AppContext:
    data_dir = Path(data_dir or os.environ.get(DATA_DIR_ENV) or "var").resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    config = config or config_path_from_env()
    settings = load_settings(config if config.exists() else None)
    store = ReviewStore.for_data_dir(data_dir, settings.store_url)
    return AppContext(data_dir, settings, store, config, load_key(data_dir))


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
