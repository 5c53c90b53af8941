"""Switch a rule on or off in ``belegwacht.toml`` (``[rules.<ID>] enabled = false``).

Why the config file and not a store table: the config file is where the nightly job already
reads rule switches and parameters (``Settings.rule_enabled``), it is versionable and reviewable,
and one place of truth avoids "the app says off, the job says on". The edit is textual and
minimal – comments and other sections stay as they are – and is verified by parsing the result
before it replaces the file atomically.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

from detect.config import load_settings
from detect.errors import ConfigError

_ID = re.compile(r"^[A-Z]{2,5}\d{3}$")


def _section_span(lines: list[str], rule_id: str) -> tuple[int, int] | None:
    """Line range [start, end) of the top-level ``[rules.<ID>]`` table, header included."""
    header = re.compile(rf"^\s*\[\s*rules\s*\.\s*\"?{re.escape(rule_id)}\"?\s*\]\s*(#.*)?$")
    start = next((i for i, line in enumerate(lines) if header.match(line)), None)
    if start is None:
        return None
    end = next((j for j in range(start + 1, len(lines))
                if re.match(r"^\s*\[", lines[j])), len(lines))
    return start, end


def set_rule_enabled(path: Path | str, rule_id: str, enabled: bool) -> None:
    """Write ``enabled = true|false`` into ``[rules.<ID>]``, creating the table or file."""
    if not _ID.match(rule_id):
        raise ConfigError(f"invalid rule id {rule_id!r}")
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    lines = text.splitlines()
    value = f"enabled = {'true' if enabled else 'false'}"
    span = _section_span(lines, rule_id)
    if span is None:
        if lines and lines[-1].strip():
            lines.append("")
        lines += [f"[rules.{rule_id}]", value]
    else:
        start, end = span
        found = next((i for i in range(start + 1, end)
                      if re.match(r"^\s*enabled\s*=", lines[i])), None)
        if found is not None:
            lines[found] = value
        else:
            lines.insert(start + 1, value)
    new_text = "\n".join(lines) + "\n"
    try:
        tomllib.loads(new_text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"cannot switch {rule_id}: the result would be invalid TOML ({exc})",
                          file=str(path)) from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(new_text, encoding="utf-8")
    settings = load_settings(tmp)
    if settings.rule_enabled(rule_id) != enabled:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot switch {rule_id} here: the file defines [rules] in a form this "
                          "editor does not change (e.g. an inline table)", file=str(path),
                          hint=f"edit it by hand: [rules.{rule_id}] {value}")
    os.replace(tmp, path)


def rule_states(path: Path | str, rule_ids: list[str]) -> dict[str, bool]:
    """Effective on/off of each rule according to the file (default: on)."""
    path = Path(path)
    settings = load_settings(path if path.exists() else None)
    return {r: settings.rule_enabled(r) for r in rule_ids}
