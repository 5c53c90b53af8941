"""Run lifecycle: one run per data dir and entity, crash recovery, delivery identity, inbox.

Why: the job runs unattended from cron. Two runs for the same entity must not interleave; a run
killed at any point (OOM killer, reboot, ``kill -9``) must leave the previous published state
fully usable; the next run must notice and clean up; and the same delivery dropped twice into
the inbox (perhaps under another name) must not be processed twice.

- ``RunLock``: a lock file ``locks/<entity>.lock`` holding pid, hostname, process start time and
  run id. A lock whose process is gone (or whose pid now belongs to a younger process) is stale
  and taken over, with a note. Checking and taking over happens under an ``flock`` on a guard
  file, which the kernel releases when a process dies, so two recoverers cannot both win.
- ``fingerprint``: a delivery is identified by the sha256 of its files' contents (names and
  order do not matter).
- ``recover``: at the start of a run (under the lock) every ``runs/<id>.partial`` of the entity
  is either completed (the store had committed it: roll forward) or renamed to
  ``runs/<id>.failed`` and recorded as aborted; an interrupted history merge is finished or
  discarded; ``CURRENT`` is pointed at the newest published run if a crash left it behind.
- ``prune_failed``: at the start of a run (under the lock, after ``recover``) only the newest
  ``[store] keep_failed_runs`` ``runs/<id>.failed`` folders of the entity are kept; their errors
  stay in the store's runs table.
- ``crash_point``: named checkpoints; ``BELEGWACHT_CRASH_AT=<name>`` makes the process SIGKILL
  itself there (for the crash tests; never set it in production).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Iterator

from detect.errors import RunLocked, UserError
from detect.fsutil import fsync_path

LOCKS = "locks"
RUN_INFO = "RUN_INFO.json"
CRASH_ENV = "BELEGWACHT_CRASH_AT"
FOREIGN_LOCK_STALE_HOURS = 24.0
"""A lock held by another host cannot be checked; it counts as stale after this long."""

CRASH_POINTS: tuple[str, ...] = (
    "locked", "ingested", "validated", "history_partition_written", "history_committed",
    "history_merged", "rules_done", "models_done", "scored", "manifest_written",
    "store_uncommitted", "store_committed", "renamed", "current_switched")
"""Every checkpoint of a run, in order (the crash test kills the job at each)."""


def crash_point(name: str) -> None:
    """Kill this process with SIGKILL if ``BELEGWACHT_CRASH_AT`` names this point."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


# --- delivery identity -------------------------------------------------------------------------

@dataclass
class Fingerprint:
    hash: str
    files: list[dict[str, Any]] = field(default_factory=list)
    """{name, sha256, size} per file, sorted by name."""


def delivery_key(sha256s: list[str]) -> str:
    """One hash for the set of file contents (the same formula as ``validation.state``)."""
    return hashlib.sha256("\n".join(sorted(set(sha256s))).encode()).hexdigest()


def fingerprint(sources: list[Path]) -> Fingerprint:
    """Content hash of a delivery: files named directly plus every file in named folders."""
    from detect.ingest import expand_sources
    from detect.ingest.textio import sha256_of

    files = expand_sources([Path(s) for s in sources])
    entries = sorted(({"name": str(f), "sha256": sha256_of(f), "size": f.stat().st_size}
                      for f in files), key=lambda e: e["name"])
    return Fingerprint(delivery_key([e["sha256"] for e in entries]), entries)


# --- lock --------------------------------------------------------------------------------------

def _process_start(pid: int) -> float | None:
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def lock_path(data_dir: Path, entity: str) -> Path:
    from detect.history import entity_dirname

    return Path(data_dir) / LOCKS / f"{entity_dirname(entity)}.lock"


def stale_reason(info: dict[str, Any] | None, now: float | None = None) -> str | None:
    """Why a lock is stale (holder gone), or None while its holder may still be running."""
    if not info:
        return "the lock file is empty or unreadable (its writer died while taking it)"
    now = now or time.time()
    if info.get("hostname") != socket.gethostname():
        age_h = (now - float(info.get("acquired", now))) / 3600
        if age_h > FOREIGN_LOCK_STALE_HOURS:
            return f"held by host {info.get('hostname')} for {age_h:.0f} h"
        return None
    started = _process_start(int(info.get("pid", -1)))
    if started is None:
        return f"process {info.get('pid')} no longer exists"
    if abs(started - float(info.get("started", 0))) > 1.0:
        return f"process id {info.get('pid')} now belongs to another process"
    return None


class RunLock:
    """Exclusive right to run for (data dir, entity); see the module docstring."""

    def __init__(self, data_dir: Path, entity: str, *, run_id: str = "",
                 wait_seconds: float = 0.0) -> None:
        self.path = lock_path(data_dir, entity)
        self.entity = entity
        self.run_id = run_id
        self.wait_seconds = wait_seconds
        self.notes: list[str] = []
        self._held = False

    @contextmanager
    def _guard(self) -> Iterator[None]:
        guard = self.path.with_suffix(".guard")
        fd = os.open(guard, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _read(self) -> dict[str, Any] | None:
        """The holder's info; None when empty or unreadable (checked under the guard)."""
        try:
            return json.loads(self.path.read_text("utf-8"))
        except (OSError, ValueError):
            return None

    def _try_take(self) -> dict[str, Any] | None:
        """Take the lock (returns None) or return the live holder's info."""
        with self._guard():
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = self._read()
                reason = stale_reason(holder)
                if reason is None:
                    return holder or {}
                os.replace(self.path, self.path.with_name(f"{self.path.name}.stale"))
                self.notes.append(f"recovered a stale lock for {self.entity}: {reason}"
                                  + (f" (run {holder.get('run_id')})" if holder else ""))
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            info = {"pid": os.getpid(), "hostname": socket.gethostname(),
                    "started": _process_start(os.getpid()) or time.time(),
                    "acquired": time.time(), "run_id": self.run_id, "entity": self.entity}
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(info, fh)
                fh.flush()
                os.fsync(fh.fileno())
            self._held = True
            return None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.wait_seconds
        while True:
            holder = self._try_take()
            if holder is None:
                return self
            if time.monotonic() >= deadline:
                since = datetime.fromtimestamp(float(holder.get("acquired", time.time())), UTC)
                raise RunLocked(
                    f"another run for entity {self.entity!r} is in progress (pid "
                    f"{holder.get('pid', '?')} on {holder.get('hostname', '?')}, run "
                    f"{holder.get('run_id') or '?'}, since {since:%Y-%m-%d %H:%M:%S} UTC)",
                    file=str(self.path),
                    hint="wait for it to finish; a lock left by a killed run is recovered "
                         "automatically")
            time.sleep(min(0.5, max(0.05, deadline - time.monotonic())))

    def release(self) -> None:
        if self._held:
            with self._guard():
                holder = self._read()
                if holder and holder.get("pid") == os.getpid():
                    self.path.unlink(missing_ok=True)
            self._held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


# --- run folders and pointers ------------------------------------------------------------------

def write_run_info(partial: Path, run_id: str, entity: str, delivery: Fingerprint | None) -> None:
    info = {"run_id": run_id, "entity": entity, "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "delivery_hash": delivery.hash if delivery else None}
    (partial / RUN_INFO).write_text(json.dumps(info, indent=1), "utf-8")


def _run_entity(folder: Path) -> str | None:
    try:
        return json.loads((folder / RUN_INFO).read_text("utf-8")).get("entity")
    except (OSError, ValueError):
        return None


def entity_pointer(data_dir: Path, entity: str) -> Path:
    from detect.history import entity_dirname

    return Path(data_dir) / "current" / entity_dirname(entity)


def publish_pointers(data_dir: Path, entity: str, run_id: str) -> None:
    """Point the entity's pointer at ``run_id``; ``CURRENT`` too unless it names a newer run.

    Run ids start with a UTC timestamp, so they sort by time; with several entities in one
    data dir, ``CURRENT`` names the newest published run of any entity.
    """
    from detect.pipeline import CURRENT, switch_current

    pointer = entity_pointer(data_dir, entity)
    pointer.parent.mkdir(parents=True, exist_ok=True)
    _atomic_text(pointer, run_id)
    current = Path(data_dir) / CURRENT
    existing = current.read_text("utf-8").strip() if current.exists() else ""
    if existing <= run_id or not (Path(data_dir) / "runs" / existing).is_dir():
        switch_current(Path(data_dir), run_id)


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def finish_publish(data_dir: Path, entity: str, run_id: str, counts: dict[str, Any]) -> Path:
    """After the store committed: final manifest, rename the folder, switch the pointers.

    Idempotent, so recovery can call it for a run killed anywhere after the store commit.
    """
    from detect.pipeline import RUNS, write_manifest

    runs = Path(data_dir) / RUNS
    partial, final = runs / f"{run_id}.partial", runs / run_id
    if partial.is_dir() and final.is_dir():
        shutil.rmtree(partial)  # stray leftovers written after the rename: never the run itself
    if partial.is_dir():
        manifest_path = partial / "manifest.json"
        manifest = json.loads(manifest_path.read_text("utf-8")) if manifest_path.exists() else {}
        manifest["findings"] = {**manifest.get("findings", {}), **counts}
        manifest["outcome"] = "published"
        write_manifest(partial, manifest)
        crash_point("store_committed")
        os.replace(partial, final)
        fsync_path(runs)
    crash_point("renamed")
    publish_pointers(data_dir, entity, run_id)
    crash_point("current_switched")
    return final


def fail_folder(data_dir: Path, run_id: str) -> Path | None:
    """Keep a failed run's partial folder for diagnosis as ``runs/<id>.failed``."""
    from detect.pipeline import RUNS

    partial = Path(data_dir) / RUNS / f"{run_id}.partial"
    if not partial.is_dir():
        return None
    failed = partial.with_name(f"{run_id}.failed")
    os.replace(partial, failed)
    return failed


def recover(data_dir: Path, entity: str, store: Any) -> list[str]:
    """Clean up after killed runs of ``entity`` (call under the lock); return what was done."""
    from detect import history
    from detect.pipeline import RUNS

    notes = list(history.recover(Path(data_dir), entity))
    runs = Path(data_dir) / RUNS
    for partial in sorted(runs.glob("*.partial")) if runs.is_dir() else []:
        if _run_entity(partial) not in (entity, None):
            continue  # another entity's run, possibly alive under its own lock
        run_id = partial.name.removesuffix(".partial")
        if _run_entity(partial) is None and not run_id.endswith(_entity_suffix(entity)):
            continue
        record = store.get_run(run_id)
        if record and record["outcome"] == "published":
            finish_publish(data_dir, entity, run_id, record.get("counts") or {})
            notes.append(f"completed run {run_id}: it was killed after publishing")
        else:
            fail_folder(data_dir, run_id)
            store.fail_run(run_id, "aborted: the process ended before publishing (found "
                           "its partial folder)", outcome="aborted", entity=entity)
            notes.append(f"run {run_id} was interrupted before publishing; kept as "
                         f"runs/{run_id}.failed, the previous run stays current")
    latest = store.latest_published_run(entity)
    if latest and (runs / latest).is_dir():
        pointer = entity_pointer(data_dir, entity)
        named = pointer.read_text("utf-8").strip() if pointer.exists() else ""
        if named != latest:
            publish_pointers(data_dir, entity, latest)
            notes.append(f"pointed CURRENT at {latest}, the newest published run")
    return notes


def _run_id_entity(run_id: str) -> str:
    """The entity part of a run id (``<UTC stamp>_<safe entity>``; the stamp has no '_')."""
    return run_id.partition("_")[2]


def prune_failed(data_dir: Path, entity: str, store: Any, keep: int) -> list[str]:
    """Remove all but the newest ``keep`` ``runs/<id>.failed`` folders of ``entity``.

    Why: a delivery that fails every night keeps its ingested Parquet in each ``.failed``
    folder (10M lines: ~350 MB a night) and nothing else ever removes them. Whole folders go,
    not just their ``tmp/``: the error stays in the store's runs table (recorded before the
    folder was renamed), and a bounded count is simpler to reason about than stubs that still
    pile up. Call under the entity's lock, after ``recover`` (so runs it just aborted count).
    Run ids start with a fixed-width UTC stamp, so they sort by time; the newest are kept.
    Only ``.failed`` folders are considered (never ``.partial`` ones, which ``recover``
    handles, nor published runs); another entity's folders, and any folder the store says
    was published, are left alone. ``keep`` < 0 keeps all. Returns the notes for the log.
    """
    from detect.pipeline import RUNS

    runs = Path(data_dir) / RUNS
    if keep < 0 or not runs.is_dir():
        return []
    mine = []
    for folder in runs.glob("*.failed"):
        run_id = folder.name.removesuffix(".failed")
        owner = _run_entity(folder)
        if owner == entity or (owner is None
                               and _run_id_entity(run_id) == _entity_suffix(entity)[1:]):
            mine.append(folder)
    mine.sort(key=lambda f: f.name)
    removed: list[str] = []
    notes: list[str] = []
    for folder in mine[:max(0, len(mine) - keep)]:
        run_id = folder.name.removesuffix(".failed")
        record = store.get_run(run_id)
        if record and record["outcome"] == "published":
            continue  # cannot happen by design; never delete what the store calls published
        if record is None:  # e.g. a folder copied in by hand: leave a trace before it goes
            store.fail_run(run_id, "failed run folder found without a record; removed by "
                           "[store] keep_failed_runs", outcome="aborted", entity=entity)
        try:
            shutil.rmtree(folder)
        except OSError as exc:  # housekeeping must not fail the run; say so and go on
            notes.append(f"could not remove runs/{run_id}.failed: {exc}")
            continue
        removed.append(run_id)
    if not removed:
        return notes
    return notes + [f"removed {len(removed)} old failed run folder(s) of {entity} ([store] "
            f"keep_failed_runs = {keep}; their errors stay in the store's runs table): "
            + ", ".join(f"runs/{r}.failed" for r in removed)]


def _entity_suffix(entity: str) -> str:
    return "_" + "".join(c if c.isalnum() or c in "-_" else "_" for c in entity)


# --- inbox -------------------------------------------------------------------------------------

SKIP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", "~")


@dataclass
class InboxEntry:
    name: str
    outcome: str  # published | skipped | failed | locked
    message: str
    run_id: str | None = None


@dataclass
class InboxResult:
    inbox: Path
    entries: list[InboxEntry] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        return sum(e.outcome == outcome for e in self.entries)

    def lines(self) -> list[str]:
        head = (f"inbox {self.inbox}: {len(self.entries)} deliveries: "
                f"{self.count('published')} processed, {self.count('skipped')} already "
                f"processed, {self.count('failed')} failed")
        if self.count("locked"):
            head += f", {self.count('locked')} not started (locked)"
        labels = {"published": "ok     ", "skipped": "skipped", "failed": "FAILED ",
                  "locked": "LOCKED "}
        return [head] + [f"  {labels[e.outcome]} {e.name}: {e.message}" for e in self.entries]

    def exit_code(self) -> int:
        """0 when nothing failed; 4 when a lock stopped the inbox; else 1 (cron mails it)."""
        if self.count("failed"):
            return 1
        if self.count("locked"):
            return RunLocked.exit_code
        return 0


def inbox_deliveries(inbox: Path) -> list[Path]:
    """Files and folders in the inbox, oldest first; hidden and half-written names skipped."""
    if not inbox.is_dir():
        raise UserError("the inbox is not a folder", file=str(inbox))
    found = [p for p in inbox.iterdir()
             if not p.name.startswith(".") and not p.name.endswith(SKIP_SUFFIXES)]
    return sorted(found, key=lambda p: (p.stat().st_mtime, p.name))


def process_inbox(inbox: Path, run_one: Any) -> InboxResult:
    """Run ``run_one(path) -> RunSummary`` for each delivery; one failure does not stop the rest."""
    from detect.errors import AlreadyProcessed

    result = InboxResult(inbox)
    pending = inbox_deliveries(inbox)
    for n, path in enumerate(pending):
        try:
            summary = run_one(path)
        except AlreadyProcessed as exc:
            result.entries.append(InboxEntry(path.name, "skipped", exc.message))
        except RunLocked as exc:
            for rest in pending[n:]:
                result.entries.append(InboxEntry(rest.name, "locked", exc.message))
            break
        except UserError as exc:
            text = str(exc).replace("\n  hint: ", " - hint: ").replace("\n", " ")
            result.entries.append(InboxEntry(path.name, "failed", text))
        except Exception as exc:  # noqa: BLE001 - one broken delivery must not block the others
            result.entries.append(InboxEntry(path.name, "failed",
                                             f"internal error: {type(exc).__name__}: {exc}"))
        else:
            headline = (summary.manifest.get("findings", {}).get("headline") or [""])[0]
            result.entries.append(InboxEntry(path.name, "published",
                                             f"run {summary.run_id}: {headline}".rstrip(": "),
                                             summary.run_id))
    return result
