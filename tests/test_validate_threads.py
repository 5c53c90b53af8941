"""No module is imported for the first time by a thread other than the main thread during a job.

CPython takes a lock per module while importing it; two threads importing overlapping module
trees at the same time can deadlock (``_DeadlockError``) or see a half-initialised module. That
happened when Great Expectations was imported in a background thread while the models stage
imported PyOD/scikit-learn/pandas (7 errors in ``test_nightly_deltas.py``); GX now runs in a
worker process. This runs a whole small job (``belegwacht run``, with Data Docs) in a subprocess
with an audit hook that records every first-time import outside the main thread.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

AUDIT = """
import sys, threading
seen = []
def hook(event, args):
    if (event == "import" and threading.current_thread() is not threading.main_thread()
            and args[0] not in sys.modules):
        seen.append((threading.current_thread().name, args[0]))
sys.addaudithook(hook)
from detect.cli import main
code = main(sys.argv[1:])
print("THREAD_IMPORTS", sorted(set(seen)))
sys.exit(code)
"""


def test_no_first_time_import_outside_the_main_thread(tmp_path: Path) -> None:
    from sample_data.generate import generate

    generate(2000, 11, tmp_path / "ledger", ["ads"])
    delivery = tmp_path / "ledger" / "ads"
    done = subprocess.run([sys.executable, "-c", AUDIT, "run", str(delivery), "--data-dir",
                           str(tmp_path / "var"), "-q"], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stdout + done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith("THREAD_IMPORTS"))
    assert line == "THREAD_IMPORTS []", line
    runs = list((tmp_path / "var" / "runs").glob("*/validation.json"))
    assert runs and '"great_expectations": "done"' in runs[0].read_text("utf-8")
