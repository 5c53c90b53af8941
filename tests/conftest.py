"""Shared fixtures.

``demo_data_dir`` runs the real nightly job on the committed sample ledger once per test
session (shared across xdist workers through a file lock) and hands each test its own copy, so
tests can record decisions without affecting each other.
"""

from __future__ import annotations

import fcntl
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
DEMO = ROOT / "sample_data" / "demo"


def _build_demo(target: Path) -> None:
    from detect.config import load_settings
    from detect.pipeline import run_delivery
    from detect.runlog import StepLog

    settings = load_settings(None, entity="Musterstadt")
    run_delivery([DEMO], fmt="auto", settings=settings, data_dir=target,
                 log=StepLog(quiet=True))


@pytest.fixture(scope="session")
def demo_data_dir_shared(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """One published demo run per session (read-only: copy before writing)."""
    root = tmp_path_factory.getbasetemp()
    if worker_id != "master":  # xdist: the parent folder is shared by this session's workers
        root = root.parent
    target = root / "demo_run"
    with open(root / "demo_run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "CURRENT").exists():
            shutil.rmtree(target, ignore_errors=True)
            _build_demo(target)
    return target


@pytest.fixture
def demo_data_dir(demo_data_dir_shared: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the published demo run."""
    copy = tmp_path / "var"
    shutil.copytree(demo_data_dir_shared, copy, symlinks=True)
    (copy / "locks").mkdir(exist_ok=True)
    return copy


def shared_sample(*parts: str) -> Path:
    """Path of a genuine sample under ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"genuine sample {path} not available (../shared/data is outside the repo)")
    return path
