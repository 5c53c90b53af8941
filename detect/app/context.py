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
from detect.privacy import Masker, load_key, mask_columns  # noqa: F401 (re-exported)
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
