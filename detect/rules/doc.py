"""``python -m detect.rules.doc [--check]``: (re)generate docs/rules.md from the rule files.

It also refreshes the catalog table in README.md between ``<!-- rules:begin -->`` and
``<!-- rules:end -->`` when both markers are there, so the README cannot drift from the
rule files either. ``--check`` writes nothing and exits 1 when either file is out of date.
"""

from __future__ import annotations

import sys
from pathlib import Path

from detect.rules.docs import catalog_markdown, catalog_table_markdown
from detect.rules.loader import load_catalog
from detect.rules.model import Rule

ROOT = Path(__file__).resolve().parents[2]
DOC_PATH = ROOT / "docs" / "rules.md"
README_PATH = ROOT / "README.md"
BEGIN = "<!-- rules:begin -->"
END = "<!-- rules:end -->"


class MarkerError(ValueError):
    """The README has one marker without the other, or them in the wrong order."""


def readme_with_table(readme: str, catalog: list[Rule]) -> str | None:
    """``readme`` with the catalog table between the markers; None when it has no markers."""
    has_begin, has_end = BEGIN in readme, END in readme
    if not has_begin and not has_end:
        return None
    start, stop = readme.find(BEGIN), readme.find(END)
    if not (has_begin and has_end) or readme.count(BEGIN) > 1 or readme.count(END) > 1 \
            or stop < start:
        raise MarkerError(f"README needs exactly one {BEGIN} followed by one {END}")
    table = catalog_table_markdown(catalog, link="docs/rules.md")
    return readme[:start + len(BEGIN)] + "\n" + table + readme[stop:]


def main(argv: list[str] | None = None, doc_path: Path = DOC_PATH,
         readme_path: Path = README_PATH) -> int:
    argv = sys.argv[1:] if argv is None else argv
    catalog = load_catalog()
    wanted = {doc_path: catalog_markdown(catalog)}
    if readme_path.exists():
        try:
            readme = readme_with_table(readme_path.read_text(encoding="utf-8"), catalog)
        except MarkerError as exc:
            print(f"{readme_path}: {exc}", file=sys.stderr)
            return 2
        if readme is not None:
            wanted[readme_path] = readme
    if "--check" in argv:
        stale = [path for path, text in wanted.items()
                 if (path.read_text(encoding="utf-8") if path.exists() else "") != text]
        for path in stale:
            print(f"{path} is out of date: run python -m detect.rules.doc", file=sys.stderr)
        return 1 if stale else 0
    for path, text in wanted.items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
