"""The CLI as a user runs it: `python -m detect ...` in a subprocess, exit codes and output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DELIVERY = ROOT / "tests" / "fixtures" / "ads" / "delivery"


def belegwacht(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "detect", *args], capture_output=True,
                          text=True, cwd=cwd, env={"PATH": "/usr/bin:/bin"}, timeout=300)


def test_run_prints_what_was_read_written_and_timed(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    result = belegwacht("run", str(DELIVERY), "--data-dir", str(data_dir), "-q")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "6 lines, 3 journals, debit 1.834,46, credit 1.834,46" in out
    assert "master data users: 3 rows" in out
    assert "control totals log_file.csv: 3 journals checked, 0 do not reconcile" in out
    assert "time: ingest" in out and "total" in out

    run_id = (data_dir / "CURRENT").read_text().strip()
    manifest = json.loads((data_dir / "runs" / run_id / "manifest.json").read_text())
    assert manifest["run_id"] == run_id and manifest["outcome"] == "published"
    gl = next(i for i in manifest["inputs"] if i["path"].endswith(".csv") and "GL_Detail" in i["path"])
    assert len(gl["sha256"]) == 64
    assert manifest["per_input"][0]["lines"] == 6


def test_same_delivery_again_is_recognised_and_does_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    assert belegwacht("run", str(DELIVERY), "--data-dir", str(data_dir), "-q").returncode == 0
    first = (data_dir / "CURRENT").read_text()
    again = belegwacht("run", str(DELIVERY), "--data-dir", str(data_dir), "-q")
    assert again.returncode == 0
    assert "already processed" in again.stdout + again.stderr
    assert (data_dir / "CURRENT").read_text() == first


def test_user_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    result = belegwacht("run", str(empty), "--data-dir", str(tmp_path / "var"))
    assert result.returncode == 2
    assert "empty.csv" in result.stderr and "empty" in result.stderr
    assert "Traceback" not in result.stderr

    missing = belegwacht("run", str(tmp_path / "nope.csv"), "--data-dir", str(tmp_path / "var"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_data_dir_is_created_on_first_use(tmp_path: Path) -> None:
    result = belegwacht("verify-log", "--data-dir", str(tmp_path / "fresh"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "fresh").is_dir()


def test_program_exit_skips_teardown_but_runs_exit_handlers_and_flushes(tmp_path: Path) -> None:
    """``run_program`` leaves with ``os._exit`` (no interpreter teardown): exit handlers must
    still run (they stop worker processes) and piped output must be complete."""
    marker = tmp_path / "handler_ran"
    script = ("import atexit, sys\n"
              "from detect import cli\n"
              f"atexit.register(lambda: open({str(marker)!r}, 'w').write('ran'))\n"
              "sys.argv = ['belegwacht', *sys.argv[1:]]\n"
              "cli.run_program()\n"
              "raise SystemExit(99)  # not reached\n")
    listed = subprocess.run([sys.executable, "-c", script, "rules", "list"], capture_output=True,
                            text=True, cwd=ROOT, env={"PATH": "/usr/bin:/bin"}, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert marker.read_text() == "ran"
    rule_files = sorted(p.stem for p in (ROOT / "rules").rglob("*.yaml"))
    assert len(rule_files) > 30 and all(rule_id in listed.stdout for rule_id in rule_files)

    marker.unlink()
    failed = subprocess.run([sys.executable, "-c", script, "run", str(tmp_path / "nope.csv"),
                             "--data-dir", str(tmp_path / "var")], capture_output=True,
                            text=True, cwd=ROOT, env={"PATH": "/usr/bin:/bin"}, timeout=120)
    assert failed.returncode == 2 and "no such file" in failed.stderr
    assert marker.read_text() == "ran"


def test_run_sets_the_allocator_defaults_before_polars_loads(tmp_path: Path) -> None:
    """``belegwacht run`` sets ``RUN_ALLOCATOR_ENV`` (read by Polars' jemalloc when Polars
    loads; the workers inherit the environment) before anything imports Polars; a value the
    user has set stays. (The run itself fails at once: the file does not exist.)"""
    script = ("import os, sys\n"
              "from detect import cli\n"
              "assert 'polars' not in sys.modules, 'detect.cli imports Polars'\n"
              f"cli.main(['run', {str(tmp_path / 'nope.csv')!r}, '--data-dir', "
              f"{str(tmp_path / 'var')!r}])\n"
              "print(os.environ.get('_RJEM_MALLOC_CONF'))\n")

    def run(env: dict[str, str]) -> str:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              cwd=ROOT, env={"PATH": "/usr/bin:/bin", **env}, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    from detect.cli import RUN_ALLOCATOR_ENV, allocator_env

    # Polars puts its own defaults in front when it loads; the last setting of a key wins
    assert run({}).endswith("," + RUN_ALLOCATOR_ENV["_RJEM_MALLOC_CONF"])
    mine = run({"_RJEM_MALLOC_CONF": "narenas:2"})
    assert mine.endswith(",narenas:2") and RUN_ALLOCATOR_ENV["_RJEM_MALLOC_CONF"] not in mine
    env = {"_RJEM_MALLOC_CONF": "mine"}
    assert allocator_env(env) == {k: v for k, v in RUN_ALLOCATOR_ENV.items() if k not in env}
    assert env["_RJEM_MALLOC_CONF"] == "mine"


def test_step_log_records_the_page_faults_of_each_step(tmp_path: Path) -> None:
    """``step_done`` carries this process's minor page faults during the step (what an
    allocator setting changes, docs/performance.md), next to seconds, CPU and peak RSS."""
    from detect.runlog import StepLog

    log = StepLog(json_path=tmp_path / "run.log.jsonl", quiet=True)
    with log.step("touch"):
        block = bytearray(32 << 20)  # 32 MB, zeroed: a fresh mapping, faulted in page by page
        block[::4096] = b"\1" * len(block[::4096])
    with log.step("idle"):
        pass
    done = {e["step"]: e for e in map(json.loads, log.json_path.read_text().splitlines())
            if e["event"] == "step_done"}
    # 8192 pages of 4 KB (16 where transparent huge pages map 2 MB at a time)
    assert done["touch"]["minor_faults"] >= 16
    assert 0 <= done["idle"]["minor_faults"] < done["touch"]["minor_faults"]


def test_a_run_freezes_the_imported_objects_once_per_process(tmp_path: Path) -> None:
    """The modules' objects leave the garbage collector's generations before the run's work
    (``pipeline.freeze_imported_objects``), once: a second run in the same process (an inbox)
    must not pin the first run's objects."""
    code = """
import gc, sys
from pathlib import Path
from detect.cli import main
calls = []
real = gc.freeze
gc.freeze = lambda: (calls.append(gc.get_freeze_count()), real())
for n in (1, 2):
    assert main(["run", sys.argv[1], "--data-dir", sys.argv[2] + str(n), "-q"]) == 0
print(len(calls), gc.get_freeze_count() > 0)
"""
    result = subprocess.run([sys.executable, "-c", code, str(DELIVERY), str(tmp_path / "v")],
                            capture_output=True, text=True, cwd=ROOT, timeout=300,
                            env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["1", "True"]
