"""``python -m detect.rules.doc [--check]``: (re)generate docs/rules.md from the rule files."""

from __future__ import annotations

import sys
from pathlib import Path

from detect.rules.docs import catalog_markdown
from detect.rules.loader import load_catalog

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "rules.md"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = catalog_markdown(load_catalog())
    if "--check" in argv:
        current = DOC_PATH.read_text(encoding="utf-8") if DOC_PATH.exists() else ""
        if current != text:
            print(f"{DOC_PATH} is out of date: run python -m detect.rules.doc", file=sys.stderr)
            return 1
        return 0
    DOC_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {DOC_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
