"""Worker processes bound to the job: started early, handed a job later, collected at the end.

Two parts of a run live in a child process: Great Expectations (``validation/gxrun.py`` +
``gxworker.py``) and the outlier models (``modelworker.py``), in one shared worker process when
a run uses both (``detect.jobworker``). The pattern is kept here so it exists once:

* the parent starts ``python -m <module> JOB_DIR PARENT_PID MAIN`` early (``BoundWorker``), so
  the worker's imports overlap the parent's own work; its output goes to ``JOB_DIR/worker.log``;
* the worker ties its life to the parent (``bind_to_parent``): a killed job leaves no worker;
* the parent writes the job's inputs into ``JOB_DIR`` and a line to the worker's stdin
  (``send``); end of input before the job is complete means the parent gave up or died (a
  dying parent's pipe is closed before its death signal arrives): the worker removes its
  folder and exits;
* the worker writes ``JOB_DIR/result.json`` atomically (``write_result``): no result means it
  died, which the parent reports with its exit code (``exit_text``);
* the parent reaps it with ``wait4`` (``wait``): the worker's CPU seconds (all threads) and
  peak RSS, which the run log reports as the stage's own.

Why processes and not threads: a second import of big packages (GX, PyOD/scikit-learn) in a
thread while the main thread imports overlapping modules deadlocked CPython's per-module
import locks; a process shares no import state and no GIL. This module imports only the
standard library: workers import it before their heavy imports.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any

RESULT, LOG = "result.json", "worker.log"
STALE_SECONDS = 86_400


# --------------------------------------------------------------------------- parent side

def new_job_dir(prefix: str, run_id: str) -> Path:
    """A private temporary folder for one worker's job, named after the run and this process.

    Folders left behind (their process was killed after its worker had finished, so neither
    could remove them) are removed once the process that made them is gone, or a day old. Not
    in the run folder: the pipeline removes the run's ``tmp/`` before it publishes and renames
    the folder of a failed run."""
    tmp = Path(tempfile.gettempdir())
    now = time.time()
    for old in tmp.glob(prefix + "*"):
        try:
            if not owner_alive(old.name) or now - old.stat().st_mtime > STALE_SECONDS:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{run_id}-p{os.getpid()}-"))


def owner_alive(name: str) -> bool:
    """False only when the folder names its process (``...-p<pid>-<random>``) and no such
    process exists; a reused pid just keeps the folder until it is a day old."""
    parts = name.rsplit("-", 2)
    if len(parts) < 3 or not parts[1].startswith("p") or not parts[1][1:].isdigit():
        return True
    try:
        os.kill(int(parts[1][1:]), 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process: alive
        pass
    return True


class BoundWorker:
    """One worker process (``python -m module JOB_DIR PARENT_PID MAIN [ARGS...]``), bound to
    this one.

    ``start_error`` is set (and ``proc`` None) when it could not be started at all; callers
    decide what that means (GX: a warning; models: the stage runs in-process). A worker not
    collected is killed and its folder removed by ``close()``, when the object is garbage
    collected, or at interpreter exit."""

    def __init__(self, module: str, job_dir: Path, *, env: dict[str, str] | None = None,
                 args: tuple[str, ...] = ()) -> None:
        self.module = module
        self.job_dir = job_dir
        # PR_SET_PDEATHSIG fires when the *thread* that started the child ends: only asked for
        # when that is the main thread (else the worker relies on watching getppid)
        main = "1" if threading.current_thread() is threading.main_thread() else "0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start_error: str | None = None
        try:
            with open(job_dir / LOG, "wb") as log:
                # no preexec_fn: it is not safe with Polars'/DuckDB's threads running
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", module, str(job_dir), str(os.getpid()), main, *args],
                    stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                    env=env, close_fds=True)  # None: this process's environment
        except OSError as exc:
            self.start_error = f"{type(exc).__name__}: {exc}"
        self.cpu_seconds: float | None = None
        self.max_rss_mb: int | None = None
        self._finalizer = weakref.finalize(self, _cancel, self.proc, job_dir)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc is not None else None

    def running(self) -> bool:
        """The worker has not ended. Does not reap it: ``Popen.poll()`` would, and ``wait()``
        could then no longer read its CPU seconds and peak RSS (``wait4``)."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return False
        if not hasattr(os, "waitid"):
            return proc.poll() is None
        try:
            return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
        except ChildProcessError:  # reaped elsewhere
            return proc.poll() is None

    def send(self, line: bytes, *, last: bool = False) -> bool:
        """Write ``line`` to the worker's stdin (``last``: then close it; an empty line with
        ``last`` just closes it: "no job"). False when the worker is gone (broken pipe)."""
        if self.proc is None or self.proc.stdin is None:
            return False
        stdin = self.proc.stdin
        try:
            if line:
                stdin.write(line)
                stdin.flush()
            if last:
                self.proc.stdin = None
                stdin.close()
            return True
        except OSError:  # BrokenPipeError: the worker is gone
            self.proc.stdin = None
            try:
                stdin.close()
            except OSError:
                pass
            return False

    def wait(self) -> int | None:
        """Reap the worker (if not yet); its exit code. Sets ``cpu_seconds`` (user + system of
        the worker and its threads) and ``max_rss_mb`` where ``wait4`` exists."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            usage = _wait(self.proc)
            if usage is not None:
                self.cpu_seconds, self.max_rss_mb = usage
        return self.proc.returncode

    def result(self, name: str = RESULT) -> dict[str, Any] | None:
        """The worker's ``result.json`` (or ``name``), or None when it wrote none."""
        path = self.job_dir / name
        if not path.exists():
            return None
        return json.loads(path.read_text(encoding="utf-8"))

    def await_result(self, name: str = RESULT, poll: float = 0.002) -> dict[str, Any] | None:
        """Wait until the worker has written ``name`` (it may go on working: a result it
        hands over before its last step) or has ended; the result or None. Polls the file:
        a few ms of latency against a worker that works for seconds."""
        path = self.job_dir / name
        while not path.exists():
            if not self.running():
                break
            time.sleep(poll)
        return self.result(name)

    def exit_text(self) -> str:
        """How the worker ended (``killed by signal 9`` / ``exited with code 7``) and the last
        line of its output, for the error of a worker that left no result."""
        code = self.returncode
        how = f"killed by signal {-code}" if code is not None and code < 0 else \
            f"exited with code {code}"
        tail = ""
        try:
            lines = (self.job_dir / LOG).read_text("utf-8", "replace").strip().splitlines()
            tail = lines[-1] if lines else ""
        except OSError:
            pass
        return how + " without a result" + (f" ({tail})" if tail else "")

    def close(self) -> None:
        """Kill the worker if it still runs; remove the job folder."""
        self._finalizer()


def _wait(proc: subprocess.Popen[bytes]) -> tuple[float, int] | None:
    """Reap ``proc``; its CPU seconds (user + system) and peak RSS in MB where ``wait4``
    exists."""
    if not hasattr(os, "wait4"):
        proc.wait()
        return None
    while True:
        try:
            _, status, usage = os.wait4(proc.pid, 0)
            break
        except InterruptedError:
            continue
        except ChildProcessError:  # reaped elsewhere
            proc.wait()
            return None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return round(usage.ru_utime + usage.ru_stime, 3), int(usage.ru_maxrss // 1024)


def _cancel(proc: subprocess.Popen[bytes] | None, job_dir: Path) -> None:
    if proc is not None:
        if proc.stdin is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass
        if proc.returncode is None and proc.poll() is None:
            proc.kill()
            proc.wait()
    shutil.rmtree(job_dir, ignore_errors=True)


def renice(pid: int, nice: int) -> None:
    """Set a process's nice value. Lowering it again needs privileges: where that is refused
    the worker just stays polite."""
    try:
        os.setpriority(os.PRIO_PROCESS, pid, nice)
    except (AttributeError, OSError):
        pass


# --------------------------------------------------------------------------- worker side

def worker_args(argv: list[str]) -> tuple[str, int, bool]:
    """``JOB_DIR PARENT_PID MAIN`` as given by ``BoundWorker`` (its ``args`` follow them)."""
    return argv[0], int(argv[1]), argv[2] == "1"


def bind_to_parent(parent: int, pdeathsig: bool, job_dir: str, name: str = "worker") -> None:
    """Exit, removing the job folder, when the parent dies: the kernel sends SIGTERM
    (``PR_SET_PDEATHSIG``, Linux) when the starting thread was the main thread, and a daemon
    thread watches ``getppid`` in any case (re-parenting changes it; also covers other
    systems). Nothing is imported in that thread or the handler."""
    import signal

    def orphaned(*_: object) -> None:
        shutil.rmtree(job_dir, ignore_errors=True)  # the parent can no longer collect it
        os._exit(3)

    signal.signal(signal.SIGTERM, orphaned)
    if pdeathsig and sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the line above
        orphaned()

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                orphaned()

    threading.Thread(target=watch, name=f"{name}-parent-watch", daemon=True).start()


def exit_now(code: int) -> None:
    """End the worker at once (``os._exit``) once its result is written: the parent waits for
    the exit (``wait4``), and a normal interpreter exit spent ~0.5 s at 1M lines freeing the
    frames and tearing down NumPy/scikit-learn/GX modules while the job waited."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def write_result(job_dir: str | Path, payload: dict[str, Any], name: str = RESULT) -> None:
    """``result.json`` (or ``name``) atomically: a worker that dies while writing leaves none."""
    directory = Path(job_dir)
    tmp = directory / (name + ".tmp")
    tmp.write_text(json.dumps(payload, default=str, ensure_ascii=False), "utf-8")
    tmp.replace(directory / name)
