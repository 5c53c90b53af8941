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


def _max_rss_mb() -> int | None:
    """Peak resident memory of this process so far (which step raised it shows in the log)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


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
    def step(self, name: str, label: str | None = None) -> Iterator[None]:
        """Time a stage; the duration lands in ``durations`` and the JSON log."""
        label = label or name
        start, cpu_start = time.perf_counter(), time.process_time()
        self.event("step_start", step=name)
        status = None
        if not self.quiet and self.console.is_terminal:
            status = self.console.status(f"{label} …")
            status.start()
        elif not self.quiet:
            print(f"{label} …", file=sys.stderr, flush=True)
        try:
            yield
        except BaseException as exc:
            self.event("step_failed", step=name, error=str(exc))
            raise
        finally:
            if status is not None:
                status.stop()
        seconds = time.perf_counter() - start
        self.durations[name] = self.durations.get(name, 0.0) + seconds
        # CPU seconds of all threads: wall time on a shared machine says little about cost
        self.event("step_done", step=name, seconds=round(seconds, 3),
                   cpu_seconds=round(time.process_time() - cpu_start, 3),
                   max_rss_mb=_max_rss_mb())
        if not self.quiet:
            self.console.print(f"  {label}: {seconds:.2f} s", markup=False)
