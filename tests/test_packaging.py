"""A normal (non-editable) install must work: the wheel carries the rule catalog, the
expectation suites and the app pages, and the installed code finds them.

``rules/`` and ``expectations/`` live at the repository root, outside the ``detect`` package;
the code used to find them only as ``<package>/../rules``, which exists in a checkout or an
editable install but not next to an installed wheel (empty catalog, no suites). The wheel is
built offline from a copy of the checkout (a build in the checkout itself would reuse a stale
``build/``), installed with ``--target`` and imported in a subprocess whose cwd is outside the
checkout and which sees no ``BELEGWACHT_*`` variables. ~15 s, most of it the sample job.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from detect.rules.loader import load_catalog

ROOT = Path(__file__).resolve().parents[1]
# what the build reads: pyproject (readme, license file) and the folders it packages
BUILD_INPUTS = ("pyproject.toml", "README.md", "LICENSE", "detect", "sample_data", "rules",
                "expectations")
SAMPLE = ROOT / "sample_data" / "demo"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Build the wheel from a copy of the checkout and install it into ``<tmp>/site``."""
    tmp = tmp_path_factory.mktemp("packaging")
    src, wheels, site = tmp / "src", tmp / "wheels", tmp / "site"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in BUILD_INPUTS:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    env = _clean_env()
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation",
         "--no-index", "-q", "-w", str(wheels)],
        cwd=src, env=env, capture_output=True, text=True, timeout=180)
    assert build.returncode == 0, (
        "offline wheel build failed (the venv needs setuptools>=77 for the SPDX license "
        f"string; `make install` upgrades it):\n{build.stdout}\n{build.stderr}")
    (wheel,) = wheels.glob("belegwacht-*.whl")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
         "--target", str(site), str(wheel)],
        env=env, capture_output=True, text=True, timeout=180)
    assert install.returncode == 0, install.stdout + install.stderr
    return {"tmp": tmp, "wheel": wheel, "site": site}


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment without BELEGWACHT_* overrides and without a PYTHONPATH to the checkout."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("BELEGWACHT_") and k != "PYTHONPATH"}
    env.update(extra)
    return env


def _run_installed(installed: dict[str, Path], *args: str,
                   timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Python in a fresh cwd outside the checkout, importing ``detect`` from the install."""
    cwd = installed["tmp"] / "cwd"
    cwd.mkdir(exist_ok=True)
    return subprocess.run([sys.executable, *args], cwd=cwd,
                          env=_clean_env(PYTHONPATH=str(installed["site"])),
                          capture_output=True, text=True, timeout=timeout)


def test_wheel_contains_catalog_suites_and_every_module(installed: dict[str, Path]) -> None:
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    rules = sorted(p.relative_to(ROOT / "rules").as_posix()
                   for p in (ROOT / "rules").glob("*/*.y*ml"))
    suites = sorted(p.name for p in (ROOT / "expectations").glob("*.json"))
    assert rules and suites
    assert {f"detect/_catalog/{r}" for r in rules} <= names
    assert {f"detect/_expectations/{s}" for s in suites} <= names
    # pyproject lists the packages explicitly: a new sub-package must not be left out
    modules = {p.relative_to(ROOT).as_posix() for top in ("detect", "sample_data")
               for p in (ROOT / top).rglob("*.py") if "__pycache__" not in p.parts}
    assert modules - names == set()
    assert "detect/app/pages/queue.py" in names and "detect/app_entry.py" in names
    assert "detect/templates/report.html.j2" in names


def test_installed_package_finds_catalog_and_suites(installed: dict[str, Path]) -> None:
    probe = (
        "import json, detect\n"
        "from detect.rules.loader import default_rules_dir, load_catalog\n"
        "from detect.validation.suites import BUNDLED_DIR, load_suite, master_suite_names\n"
        "suites = {p.stem: len(load_suite(p.stem, BUNDLED_DIR).checks)\n"
        "          for p in sorted(BUNDLED_DIR.glob('*.json'))}\n"
        "print(json.dumps({'file': detect.__file__, 'rules_dir': str(default_rules_dir()),\n"
        "                  'rules': [r.id for r in load_catalog()],\n"
        "                  'suites_dir': str(BUNDLED_DIR), 'suites': suites,\n"
        "                  'master': master_suite_names(BUNDLED_DIR)}))\n")
    proc = _run_installed(installed, "-c", probe)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    site = installed["site"].resolve()
    for key in ("file", "rules_dir", "suites_dir"):
        assert Path(got[key]).resolve().is_relative_to(site), (key, got[key])
    assert got["rules"] == [r.id for r in load_catalog(ROOT / "rules")]
    assert set(got["suites"]) == {p.stem for p in (ROOT / "expectations").glob("*.json")}
    assert got["suites"]["bookings"] > 0 and got["master"]


def test_installed_package_runs_the_sample_job(installed: dict[str, Path]) -> None:
    data_dir = installed["tmp"] / "var"
    proc = _run_installed(installed, "-m", "detect", "run", str(SAMPLE),
                          "--entity", "Musterstadt", "--data-dir", str(data_dir), "-q",
                          timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (manifest,) = data_dir.glob("runs/*/manifest.json")
    rules = json.loads(manifest.read_text("utf-8"))["rules"]
    assert len(rules["ran"]) + len(rules["skipped"]) == len(load_catalog(ROOT / "rules"))
    assert rules["ran"] and rules["hits"] > 0
