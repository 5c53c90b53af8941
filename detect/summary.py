"""The short summary a run prints: what was read, what was written, how long each step took."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from detect import fmt


def _fmt_int(n: Any) -> str:
    return fmt.number(int(n), "de")


def _fmt_money(value: Any) -> str:
    return fmt.number(Decimal(str(value)), "de", 2)


def run_summary_lines(manifest: dict[str, Any], run_dir: Path) -> list[str]:
    lines = [f"Run {manifest['run_id']} ({manifest['entity']}, format {manifest['format']})"]
    for stat in manifest.get("per_input", []):
        lines.append(f"  read {stat['source_file']}: {_fmt_int(stat['lines'])} lines, "
                     f"{_fmt_int(stat['journals'])} journals, debit {_fmt_money(stat['debit'])}, "
                     f"credit {_fmt_money(stat['credit'])}")
    for name, count in manifest.get("master", {}).items():
        lines.append(f"  master data {name}: {_fmt_int(count)} rows")
    validation = manifest.get("validation", {})
    for text in validation.get("headline", []):
        lines.append(f"  {text}")
    rules = manifest.get("rules", {})
    for text in rules.get("headline", []):
        lines.append(f"  {text}")
    findings = manifest.get("findings", {})
    for text in findings.get("headline", []):
        lines.append(f"  {text}")
    lines.append(f"  wrote {run_dir}")
    durations = manifest.get("durations", {})
    if durations:
        lines.append("  time: " + ", ".join(f"{k} {v:.1f}s" for k, v in durations.items()))
    return lines


def print_run_summary(manifest: dict[str, Any], run_dir: Path) -> None:
    print("\n".join(run_summary_lines(manifest, run_dir)))
