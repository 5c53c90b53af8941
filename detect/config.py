"""``belegwacht.toml`` -> typed settings.

Every field has a default, so the bundled sample runs with no config file. A file may hold
top-level defaults and ``[entities.<name>]`` tables that override them per entity
(municipality); ``settings_for(entity)`` merges the two.

Example::

    entity = "Musterstadt"
    state = "NW"                   # Bundesland for public holidays
    fiscal_year_start_month = 1

    [rules.PAY001]                 # per-rule parameters and on/off
    window_days = 45
    [rules.TIM002]
    enabled = false

    [thresholds]
    procurement = [1000, 3000, 25000, 100000]   # Vergabe-Wertgrenzen, EUR net

    [store]
    keep_failed_runs = 10          # failed run folders kept per entity (-1 = all)

    [entities.Nebenstadt]
    state = "BY"
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from detect.errors import ConfigError

DEFAULT_CONFIG_NAME = "belegwacht.toml"


@dataclass
class Thresholds:
    procurement: list[float] = field(default_factory=lambda: [1000.0, 3000.0, 25000.0, 100000.0])
    """Vergabe-Wertgrenzen (procurement thresholds), EUR."""
    materiality: float = 50000.0
    """Amount from which a line counts as material."""
    approval_margin: float = 0.05
    """'Just below' a limit means within this share below it."""


@dataclass
class OfficeHours:
    start_hour: int = 6
    end_hour: int = 20
    workdays: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    """ISO weekdays (1 = Monday)."""


@dataclass
class ValidationSettings:
    placeholder_share_warn: float = 0.5
    """Warn (never quarantine) when this share of a date column is a placeholder."""
    placeholder_dates: list[str] = field(default_factory=lambda: ["1900-01-01", "1899-12-30",
                                                                   "0001-01-01", "9999-12-31"])
    balance_tolerance: float = 0.0
    """Allowed journal imbalance in currency units."""
    control_total_tolerance: float = 0.0
    control_totals: str = "warn"
    """Per-journal control-total mismatch: "warn" (finding + warning) or "stop" (reject).
    Missing journals and overall line/journal counts that differ always stop the run."""
    journal_order: str = "stop"
    """Journal numbers below the entity's previously processed maximum: stop | warn | off."""
    journal_gap_max: int = 1000
    """A jump in numeric journal ids larger than this starts a new number range (no gap)."""
    fiscal_year_tolerance_days: int = 0
    """Posting dates this many days outside the fiscal year are still accepted."""
    closing_period_days: int = 92
    """Lines in period 13+ (closing periods) may be posted this many days after year end."""
    min_document_date: str = "1990-01-01"
    document_date_max_years_after_posting: int = 1
    gx_rows: int = 10_000
    """Great Expectations validates at most this many rows (whole journals, drawn by hash) for
    the Data Docs and to cross-check the vectorised row checks; 0 = every row (slow)."""
    batch_rows: int = 500_000
    """Rows per Great Expectations batch (whole journals stay in one batch)."""
    data_docs: bool = True
    reprocess: bool = False
    """Process a delivery again even if an identical one (same sha256s) was processed."""
    expectations_dir: str = ""
    """Folder with the expectation suites; empty = the bundled ``expectations/``."""


@dataclass
class ModelSettings:
    detectors: list[str] = field(default_factory=lambda: ["ecod"])
    """Any of ecod, iforest, hbos (rank-averaged); ECOD alone measured best
    (docs/models_scoring.md)."""
    seed: int = 42
    fit_sample: int = 200_000
    """Fit on at most this many lines; score all lines in batches."""
    batch_size: int = 500_000
    top_features: int = 3
    worker_min_mb: float = 20.0
    """Deliveries of at least this many MB (all files) run the model stage in a worker
    process next to the rules (``detect.modelworker``); smaller ones in the job's process,
    where the worker's start-up (~2 CPU s) costs more than the overlap saves. 0 = always,
    negative = never."""
    worker_max_lines: int = 5_000_000
    """Above this many history lines the model stage runs in the job's process after the
    rules, as without the worker: side by side, rules and models need the memory of both
    (10M lines: 6.7 GB peak for the process tree instead of 4.65 GB). Negative = no limit."""


@dataclass
class ScoringSettings:
    rule_weight: float = 0.7
    model_weight: float = 0.05
    severity_points: dict[str, float] = field(
        default_factory=lambda: {"low": 10.0, "medium": 25.0, "high": 45.0, "critical": 70.0})
    review_capacity: int = 50
    """Items an audit team can review per run; the run reports how many lie above it."""
    review_capacity_share: float = 0.0
    """Alternatively a share of journals (0 = use review_capacity)."""
    min_risk: float = 0.0
    repeat_decay: float = 0.5
    """Each further hit of the same rule in a journal adds this share of the previous one."""
    family_bonus: float = 15.0
    """Points per additional rule family hitting the same journal (independent signals)."""
    model_bonus: float = 10.0
    """Up to this many points when a journal with rule hits is also unusual to the model: the
    full bonus at model score 1, none at or below ``model_bonus_floor`` (linear in between)."""
    model_bonus_floor: float = 0.99
    model_floor: float = 0.99
    """Model scores below this contribute no points (ordinary lines stay silent)."""
    model_tail_share: float = 0.002
    """A journal with only a model score becomes an item if it is in this top share."""
    score_scale: float = 50.0
    """risk = 100 * (1 - exp(-points / score_scale)): diminishing returns, bounded at 100."""
    rule_specific_share: float = 0.001
    """A rule flagging at most this share of journals counts fully; a noisier rule counts
    (share / rate) ** rule_specificity_power of its severity points."""
    rule_specificity_power: float = 1.0
    """0 switches the specificity weighting off."""
    rule_specificity_floor: float = 0.1
    rule_rate_prior_journals: float = 2000.0
    """Hit rates are smoothed as if this many journals had been seen at rule_specific_share."""


@dataclass
class StoreSettings:
    keep_failed_runs: int = 10
    """Keep the folders (``runs/<id>.failed/``) of this many most recent failed runs per
    entity; older ones are removed at the start of the entity's next run, under its lock (a
    failing 10M delivery leaves ~350 MB a night). Their outcome and error stay in the
    store's runs table. 0 = keep none (a failure's folder lasts until the next run),
    -1 = keep all."""

    def __post_init__(self) -> None:
        value = self.keep_failed_runs
        if isinstance(value, bool) or not isinstance(value, int) or value < -1:
            raise ConfigError(
                f"[store] keep_failed_runs must be a whole number >= -1, not {value!r}",
                hint="the number of failed run folders to keep per entity: 10 (default), "
                     "0 = keep none, -1 = keep all")


@dataclass
class AppSettings:
    session_timeout_minutes: int = 60
    language: str = "de"
    oidc_provider: str = ""
    """Name of an [auth.<provider>] section in .streamlit/secrets.toml; empty = local accounts."""


@dataclass
class Settings:
    entity: str = "default"
    country: str = "DE"
    state: str = "NW"
    fiscal_year_start_month: int = 1
    currency: str = "EUR"
    timezone: str = "Europe/Berlin"
    data_dir: str = "var"
    store_url: str = ""
    """Review store URL; empty = SQLite (WAL) under the data dir."""
    language: str = "de"
    service_users: list[str] = field(default_factory=list)
    generic_users: list[str] = field(default_factory=lambda: ["ADMIN", "SYSTEM", "BATCH", "TEST"])
    manual_sources: list[str] = field(default_factory=lambda: [
        "manual", "manuell", "man", "dialog", "hand", "fb01", "fb50", "fb60", "fb70", "f-02",
        "f-43", "f-53", "fbcj", "fb08"])
    """Values of ``source`` (case-insensitive) that mean a person keyed the entry in."""
    description_keywords: list[str] = field(default_factory=lambda: [
        "privat", "bar", "sonstig", "korrektur", "storno", "diverse", "test", "misc", "cash",
        "personal", "adjust", "gift", "geschenk", "bonus", "ohne beleg", "nachtrag"])
    thresholds: Thresholds = field(default_factory=Thresholds)
    office_hours: OfficeHours = field(default_factory=OfficeHours)
    validation: ValidationSettings = field(default_factory=ValidationSettings)
    models: ModelSettings = field(default_factory=ModelSettings)
    scoring: ScoringSettings = field(default_factory=ScoringSettings)
    app: AppSettings = field(default_factory=AppSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per-rule overrides: ``{rule_id: {"enabled": bool, <param>: value}}``."""
    mapping: str = ""
    """Path of a CSV mapping profile (TOML) for ``--format csv``."""
    posting_date_column: str = ""
    """ADS: take posting_date from this column (e.g. "Entered_Date") instead of Effective_Date,
    for exports whose Effective_Date is a placeholder such as 1900-01-01."""

    def rule_enabled(self, rule_id: str) -> bool:
        return bool(self.rules.get(rule_id, {}).get("enabled", True))

    def rule_params(self, rule_id: str, defaults: dict[str, Any]) -> dict[str, Any]:
        params = dict(defaults)
        params.update({k: v for k, v in self.rules.get(rule_id, {}).items() if k != "enabled"})
        return params

    def fingerprint(self) -> str:
        """Hash of the effective settings, recorded in each run's manifest."""
        blob = json.dumps(asdict(self), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"unknown setting {key!r} in [{where}]",
                              hint=f"known settings: {', '.join(sorted(known))}")
        default = known[key].default_factory() if callable(known[key].default_factory) else known[key].default  # type: ignore[misc]
        if is_dataclass(default):
            if not isinstance(value, dict):
                raise ConfigError(f"[{where}.{key}] must be a table")
            value = _build(type(default), {**asdict(default), **value}, f"{where}.{key}")
        kwargs[key] = value
    return cls(**kwargs)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_raw(path: Path | None) -> dict[str, Any]:
    """Read the TOML file; ``None`` or a missing default file means no overrides."""
    if path is None:
        candidate = Path(DEFAULT_CONFIG_NAME)
        if not candidate.exists():
            return {}
        path = candidate
    if not path.exists():
        raise ConfigError("config file not found", file=str(path))
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", file=str(path)) from exc


def load_settings(path: Path | None = None, entity: str | None = None,
                  overrides: dict[str, Any] | None = None) -> Settings:
    """Effective settings for ``entity``: defaults < file < [entities.<entity>] < overrides."""
    raw = load_raw(path)
    per_entity = raw.pop("entities", {})
    name = entity or raw.get("entity") or Settings.entity
    merged = _merge(raw, per_entity.get(name, {}))
    merged = _merge(merged, overrides or {})
    merged["entity"] = name
    return _build(Settings, merged, "belegwacht.toml")


def entities_in(path: Path | None) -> list[str]:
    """Entities configured in the file (for multi-entity service providers)."""
    raw = load_raw(path)
    return sorted(raw.get("entities", {}))
