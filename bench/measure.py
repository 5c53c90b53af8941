"""Run a command and measure wall time and peak RSS of its whole process tree."""

from __future__ import annotations

import os
import resource
import subprocess
import threading
import time
from dataclasses import dataclass

import psutil


@dataclass
class Measured:
    seconds: float
    peak_rss_mb: float
    returncode: int
    cpu_seconds: float
    """User + system CPU of the process and its waited-for children (all threads): on a shared
    machine wall time depends on the neighbours, CPU time much less."""
    stdout: str
    stderr: str
    killed_over_mb: float | None = None
    """Set when the tree was killed for exceeding ``max_rss_mb`` (a guard for shared machines)."""


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total


def _kill_tree(proc: psutil.Process) -> None:
    try:
        procs = [*proc.children(recursive=True), proc]
    except psutil.Error:
        procs = [proc]
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            continue


def run_measured(cmd: list[str], env: dict[str, str] | None = None,
                 interval: float = 0.05, max_rss_mb: float | None = None) -> Measured:
    """Start ``cmd``, sample the RSS of it and its children every ``interval`` seconds; kill
    the tree if it grows beyond ``max_rss_mb`` (other people's jobs share the machine)."""
    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    ps = psutil.Process(proc.pid)
    peak = 0
    killed: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _tree_rss(ps))
            if max_rss_mb and peak / 2**20 > max_rss_mb and not killed:
                killed.append(peak / 2**20)
                _kill_tree(ps)
            stop.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    stop.set()
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Measured(time.perf_counter() - start, peak / 2**20, proc.returncode, cpu, out, err,
                    killed[0] if killed else None)
