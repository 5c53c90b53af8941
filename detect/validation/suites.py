"""Expectation suites as reviewable JSON files in ``expectations/``.

The files are plain Great Expectations 1.x suites (``type``, ``kwargs``, ``severity``, ``notes``)
with a few ``meta`` keys that say what Belegwacht does with a failure:

- ``key``: stable id of the check, written to ``quarantine.parquet`` column ``expectation``
- ``reason``: short label for the run summary; checks with the same label are counted together
- ``reason_column``: take the row's reason text from this column (``ingest_issue``)
- ``requires``: master data the check needs (skipped, with a note, when it is absent)
- ``keep_first``: for uniqueness checks, keep the first occurrence and quarantine the repeats

``severity: critical`` quarantines the failing rows, ``warning`` only reports them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detect.config import Settings
from detect.errors import ConfigError


def _bundled_dir() -> Path:
    """The suites the wheel ships (``detect/_expectations``, mapped from ``expectations/`` in
    pyproject.toml), else the checkout's ``expectations/`` (source tree, editable install):
    an installed package has no ``expectations/`` next to it."""
    package = Path(__file__).resolve().parents[1]
    bundled = package / "_expectations"
    return bundled if bundled.is_dir() else package.parent / "expectations"


BUNDLED_DIR = _bundled_dir()
COLUMN_KWARGS = ("column", "column_A", "column_B")


@dataclass(frozen=True)
class Check:
    """One expectation of a suite plus what a failure means for the row."""

    key: str
    type: str
    kwargs: dict[str, Any]
    severity: str
    reason: str
    reason_column: str | None = None
    requires: str | None = None
    keep_first: bool = False
    notes: str = ""

    @property
    def columns(self) -> list[str]:
        cols = [self.kwargs[k] for k in COLUMN_KWARGS if k in self.kwargs]
        return cols + list(self.kwargs.get("column_list", []))

    @property
    def quarantines(self) -> bool:
        return self.severity == "critical"


@dataclass
class Suite:
    name: str
    path: Path
    raw: dict[str, Any]
    checks: list[Check] = field(default_factory=list)

    def columns(self) -> list[str]:
        seen: dict[str, None] = {}
        for check in self.checks:
            seen.update(dict.fromkeys(check.columns))
        return list(seen)

    def without(self, keys: set[str]) -> "Suite":
        """The suite minus checks that cannot run (e.g. no chart of accounts delivered)."""
        kept = [c for c in self.checks if c.key not in keys]
        raw = dict(self.raw)
        raw["expectations"] = [e for e in self.raw["expectations"] if e["meta"]["key"] not in keys]
        return Suite(self.name, self.path, raw, kept)


def suites_dir(settings: Settings) -> Path:
    configured = settings.validation.expectations_dir
    return Path(configured) if configured else BUNDLED_DIR


def load_suite(name: str, directory: Path) -> Suite:
    path = directory / f"{name}.json"
    if not path.exists():
        raise ConfigError("expectation suite not found", file=str(path),
                          hint="set [validation] expectations_dir or restore expectations/")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid JSON: {exc.msg}", file=str(path), line=exc.lineno) from exc
    return suite_from_raw(raw, path, name)


def suite_from_raw(raw: dict[str, Any], path: Path, name: str | None = None) -> Suite:
    """A suite from its parsed JSON (``Suite.raw``): how the GX worker process gets the exact
    suite the gate used (``without`` applied) without reading the file again."""
    checks = []
    for i, exp in enumerate(raw.get("expectations", []), start=1):
        meta = exp.get("meta") or {}
        if "key" not in meta or "type" not in exp:
            raise ConfigError(f"expectation {i} needs a type and meta.key", file=str(path))
        checks.append(Check(
            key=meta["key"], type=exp["type"], kwargs=exp.get("kwargs", {}),
            severity=exp.get("severity", "critical"), reason=meta.get("reason", meta["key"]),
            reason_column=meta.get("reason_column"), requires=meta.get("requires"),
            keep_first=bool(meta.get("keep_first", False)), notes=exp.get("notes") or ""))
    keys = [c.key for c in checks]
    if len(set(keys)) != len(keys):
        raise ConfigError("meta.key values must be unique within a suite", file=str(path))
    return Suite(raw.get("name", name or path.stem), path, raw, checks)


def master_suite_names(directory: Path) -> dict[str, str]:
    """Master-data name -> suite name, for every ``master_<name>.json`` present."""
    return {p.stem.removeprefix("master_"): p.stem for p in sorted(directory.glob("master_*.json"))}
