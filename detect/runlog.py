"""Step log: what the run is doing, for a person on a terminal and for machines.

On a TTY each step shows a live spinner (rich); otherwise plain lines. Every step is also
appended as one JSON object per line to ``run.log.jsonl`` in the run folder (the structured log).
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Iterator

from rich.console import Console


def max_rss_mb() -> int | None:
    """Peak resident memory of this process so far (which step raised it shows in the log)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def minor_faults() -> int | None:
    """Minor page faults of this process so far: each is a page the kernel had to map (and
    usually zero) on first touch, the system time an allocator that returns freed memory too
    eagerly costs (docs/performance.md, "Memory allocator")."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


@dataclass
class StepLog:
    json_path: Path | None = None
    quiet: bool = False
    durations: dict[str, float] = field(default_factory=dict)
    console: Console = field(default_factory=lambda: Console(stderr=True, highlight=False))

    def event(self, kind: str, **data: Any) -> None:
        if self.json_path is None:
            return
        self.json_path.parent.mkdir(parents=True, exist_ok=True)
        record = {"ts": datetime.now(UTC).isoformat(timespec="milliseconds"), "event": kind, **data}
        with open(self.json_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=str, ensure_ascii=False) + "\n")

    def info(self, message: str, **data: Any) -> None:
        if not self.quiet:
            self.console.print(message, markup=False)
        self.event("info", message=message, **data)

    def warn(self, message: str, **data: Any) -> None:
        if not self.quiet:
            self.console.print(f"warning: {message}", style="yellow", markup=False)
        self.event("warning", message=message, **data)

    @contextmanager
    def step(self, name: str, label: str | None = None) -> Iterator[dict[str, Any]]:
        """Time a stage; the duration lands in ``durations`` and the JSON log.

        Yields a dict the stage may fill: ``seconds``, ``cpu_seconds`` and ``max_rss_mb``
        given there replace this process's figures (a stage run by a worker process reports
        the worker's own; this process's are then kept as ``main_seconds``,
        ``main_cpu_seconds``, ``main_max_rss_mb``), any other key is added to the event.
        ``minor_faults``: this process's minor page faults during the step."""
        label = label or name
        start, cpu_start = time.perf_counter(), time.process_time()
        faults_start = minor_faults()
        self.event("step_start", step=name)
        status = None
        if not self.quiet and self.console.is_terminal:
            status = self.console.status(f"{label} …")
            status.start()
        elif not self.quiet:
            print(f"{label} …", file=sys.stderr, flush=True)
        report: dict[str, Any] = {}
        try:
            yield report
        except BaseException as exc:
            self.event("step_failed", step=name, error=str(exc))
            raise
        finally:
            if status is not None:
                status.stop()
        own = {"seconds": round(time.perf_counter() - start, 3),
               "cpu_seconds": round(time.process_time() - cpu_start, 3),
               "max_rss_mb": max_rss_mb()}
        faults = minor_faults()
        if faults is not None and faults_start is not None:
            own["minor_faults"] = faults - faults_start
        record = dict(own)
        if any(k in report for k in own):
            record.update({f"main_{k}": v for k, v in own.items()})
        record.update(report)
        seconds = float(record["seconds"])
        self.durations[name] = self.durations.get(name, 0.0) + seconds
        # CPU seconds of all threads: wall time on a shared machine says little about cost
        self.event("step_done", step=name, **record)
        if not self.quiet:
            extra = f" (this process {own['seconds']:.2f} s)" if seconds != own["seconds"] \
                else ""
            self.console.print(f"  {label}: {seconds:.2f} s{extra}", markup=False)
