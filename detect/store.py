"""Review store: runs, review items, hash-chained decisions, suppressions, users, access log.

Why a separate database: DuckDB locks its file against every other process, but auditors decide
in the app while the nightly job publishes. So review state lives in a small transactional
database that several processes use at once: SQLite in WAL mode under the data dir by default
(zero set-up), PostgreSQL given a URL (``postgresql+psycopg://…``). The same SQLAlchemy Core code
serves both.

Concurrency on SQLite: WAL (readers never block the writer), ``busy_timeout`` (a writer waits
instead of failing) and ``BEGIN IMMEDIATE`` for every write transaction, so the write lock is
taken up front and two writers never deadlock on a lock upgrade. On PostgreSQL the decision
chain is serialised with a transaction-scoped advisory lock.

Decisions are append-only events. Each carries the hash of the previous event; its own hash is
sha256 over the canonical JSON of its fields plus that previous hash. A one-row ``log_head``
table holds the newest id and hash, so deleting the newest event is detected too. Changing,
deleting or reordering any event breaks the chain, and ``verify_log`` names the first broken
link (GoBD: Unveränderbarkeit, Nachvollziehbarkeit). The head hash is also written into every
run manifest, which anchors the chain outside the database.

The schema is versioned: ``schema_version`` records applied migrations; ``MIGRATIONS`` are
ordered functions applied once each, inside a write transaction.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any

import polars as pl
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from detect.errors import UserError

STATUSES: tuple[str, ...] = ("open", "confirmed", "no_finding", "clarify")
COMMENT_REQUIRED: frozenset[str] = frozenset({"confirmed", "no_finding"})
ROLES: tuple[str, ...] = ("auditor", "manager", "admin")
SCOPE_KEYS: tuple[str, ...] = ("rule_id", "vendor_id", "gl_account", "entered_by", "cost_center")
GENESIS = "0" * 64
STORE_FILE = "review.sqlite"
BUSY_TIMEOUT_MS = 60_000


class Keep(Enum):
    """Type of ``KEEP``: a decision that leaves a field as it is.

    ``None`` cannot mean "unchanged" for the assignee because ``None`` is also how a reviewer
    un-assigns an item, so an explicit marker is the default instead.
    """

    KEEP = "keep"


KEEP = Keep.KEEP
"""``assignee=KEEP`` (the default of every decision method): each item keeps its current
assignee, and the event records that assignee (the log stays a full picture of each state)."""


class StoreError(UserError):
    """A review-store request that cannot be honoured (unknown item, bad status, ...)."""


def item_id(entity: str, fiscal_year: int, journal_id: str) -> str:
    """Stable review-item id: the same journal keeps its id, decisions and history across runs."""
    return hashlib.sha1(f"{entity}|{int(fiscal_year)}|{journal_id}".encode()).hexdigest()[:16]


def now_iso() -> str:
    """Timestamps are stored as ISO-8601 UTC text: portable and hashed byte for byte."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


# --- schema ------------------------------------------------------------------------------------

metadata = sa.MetaData()

schema_version = sa.Table(
    "schema_version", metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("description", sa.String, nullable=False),
    sa.Column("applied_at", sa.String, nullable=False),
)

runs = sa.Table(
    "runs", metadata,
    sa.Column("id", sa.String, primary_key=True),
    sa.Column("entity", sa.String, nullable=False, index=True),
    sa.Column("started", sa.String, nullable=False),
    sa.Column("finished", sa.String),
    sa.Column("outcome", sa.String, nullable=False),  # running | published | failed | aborted
    sa.Column("delivery_hash", sa.String),
    sa.Column("counts", sa.Text),                      # JSON
    sa.Column("manifest", sa.Text),                    # JSON
    sa.Column("error", sa.Text),
)

deliveries = sa.Table(
    "deliveries", metadata,
    sa.Column("entity", sa.String, primary_key=True),
    sa.Column("delivery_hash", sa.String, primary_key=True),
    sa.Column("run_id", sa.String, nullable=False),
    sa.Column("processed_at", sa.String, nullable=False),
    sa.Column("files", sa.Text),                       # JSON list of {name, sha256, size}
)

# Finding fields copied onto an item: name -> (SQL type, Polars type as stored).
ITEM_FIELDS: dict[str, tuple[Any, pl.DataType]] = {
    "line_no": (sa.Integer, pl.Int64()),
    "posting_date": (sa.String, pl.String()),
    "period": (sa.Integer, pl.Int64()),
    "gl_account": (sa.String, pl.String()),
    "amount": (sa.String, pl.String()),               # exact decimal as text
    "journal_amount": (sa.String, pl.String()),
    "risk_score": (sa.Float, pl.Float64()),
    "rank": (sa.Integer, pl.Int64()),
    "rule_ids": (sa.String, pl.String()),
    "severity": (sa.String, pl.String()),
    "model_score": (sa.Float, pl.Float64()),
    "reasons": (sa.Text, pl.String()),
    "reasons_en": (sa.Text, pl.String()),
    "cost_center": (sa.String, pl.String()),
    "entered_by": (sa.String, pl.String()),
    "vendor_id": (sa.String, pl.String()),
    "document_type": (sa.String, pl.String()),
    "description": (sa.Text, pl.String()),
    "above_capacity": (sa.Boolean, pl.Boolean()),
    "n_rules": (sa.Integer, pl.Int64()),
    "n_lines": (sa.Integer, pl.Int64()),
}
EVIDENCE_FIELDS: tuple[str, ...] = ("line_no", "posting_date", "gl_account", "amount",
                                     "journal_amount", "rule_ids", "vendor_id", "n_lines")
"""What an auditor decided on: a change here marks a decided item ``changed_since_decision``.
Scores, ranks and reason wording move with every refit and history growth; they do not."""
KEY_FIELDS: dict[str, pl.DataType] = {"entity": pl.String(), "fiscal_year": pl.Int64(),
                                      "journal_id": pl.String()}

items = sa.Table(
    "items", metadata,
    sa.Column("item_id", sa.String, primary_key=True),
    # no index of its own: uq_items_journal and ix_items_flagged start with it (migration 3)
    sa.Column("entity", sa.String, nullable=False),
    sa.Column("fiscal_year", sa.Integer, nullable=False),
    sa.Column("journal_id", sa.String, nullable=False),
    *[sa.Column(name, typ) for name, (typ, _) in ITEM_FIELDS.items()],
    sa.Column("first_run", sa.String, nullable=False),
    sa.Column("last_run", sa.String, nullable=False),   # the run that last changed this item
    sa.Column("flagged", sa.Boolean, nullable=False),
    sa.Column("suppressed_by", sa.String),              # comma-separated suppression ids
    sa.Column("status", sa.String, nullable=False),     # denormalised from the newest decision
    sa.Column("assignee", sa.String),
    sa.Column("last_decision_id", sa.Integer),
    sa.Column("last_decision_at", sa.String),
    sa.Column("last_decision_by", sa.String),
    sa.Column("last_comment", sa.Text),
    sa.Column("changed_since_decision", sa.Boolean, nullable=False),
    sa.UniqueConstraint("entity", "fiscal_year", "journal_id", name="uq_items_journal"),
)

decisions = sa.Table(
    "decisions", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("item_id", sa.String, nullable=False, index=True),
    sa.Column("status", sa.String, nullable=False),
    sa.Column("comment", sa.Text, nullable=False),
    sa.Column("user", sa.String, nullable=False),
    sa.Column("ts", sa.String, nullable=False),
    sa.Column("run_id", sa.String),
    sa.Column("assignee", sa.String),
    sa.Column("suppression_id", sa.String),
    sa.Column("prev_hash", sa.String, nullable=False),
    sa.Column("hash", sa.String, nullable=False),
)
EVENT_FIELDS: tuple[str, ...] = ("id", "item_id", "status", "comment", "user", "ts", "run_id",
                                 "assignee", "suppression_id", "prev_hash")
"""Fields covered by an event's hash (everything but the hash itself)."""

log_head = sa.Table(
    "log_head", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("last_id", sa.Integer, nullable=False),
    sa.Column("last_hash", sa.String, nullable=False),
)

suppressions = sa.Table(
    "suppressions", metadata,
    sa.Column("id", sa.String, primary_key=True),
    sa.Column("rule_id", sa.String, nullable=False),
    sa.Column("scope", sa.Text, nullable=False),        # JSON over SCOPE_KEYS
    sa.Column("created_by", sa.String, nullable=False),
    sa.Column("created_at", sa.String, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("item_id", sa.String),
    sa.Column("revoked_by", sa.String),
    sa.Column("revoked_at", sa.String),
    sa.Column("revoked_reason", sa.Text),
)

users = sa.Table(
    "users", metadata,
    sa.Column("username", sa.String, primary_key=True),
    sa.Column("display_name", sa.String),
    sa.Column("role", sa.String, nullable=False),
    sa.Column("password_hash", sa.String),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.String, nullable=False),
)

access_log = sa.Table(
    "access_log", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("user", sa.String, nullable=False),
    sa.Column("ts", sa.String, nullable=False),
    sa.Column("action", sa.String, nullable=False),
    sa.Column("detail", sa.Text),
)


def _m1_initial(conn: Connection) -> None:
    for table in (runs, deliveries, items, decisions, log_head, suppressions, users,
                  access_log):
        table.create(conn, checkfirst=True)
    conn.execute(log_head.insert().values(id=1, last_id=0, last_hash=GENESIS))


def _m2_indexes(conn: Connection) -> None:
    # plain DDL: an sa.Index object would attach itself to the table metadata, and migration 1
    # would then create it on fresh databases too
    conn.execute(sa.text("CREATE INDEX IF NOT EXISTS ix_items_flagged ON items (entity, flagged)"))
    conn.execute(sa.text("CREATE INDEX IF NOT EXISTS ix_access_log_ts ON access_log (ts)"))


def _m3_drop_entity_index(conn: Connection) -> None:
    # ix_items_entity (entity) duplicated the first column of uq_items_journal (entity,
    # fiscal_year, journal_id) and ix_items_flagged (entity, flagged), which serve every
    # lookup by entity; keeping it up to date was ~10 % of inserting items (0.02 of 0.23 CPU s
    # for the 28k items of a 1M-line delivery). Stores created since have never had it.
    conn.execute(sa.text("DROP INDEX IF EXISTS ix_items_entity"))


MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "initial tables", _m1_initial),
    (2, "listing indexes", _m2_indexes),
    (3, "drop the items' entity index (covered by two others)", _m3_drop_entity_index),
]
"""Ordered; each runs once. Never edit a released migration: append a new one."""


# --- engine ------------------------------------------------------------------------------------

_ENGINES: dict[tuple[str, int], Engine] = {}


def _sqlite_engine(url: str) -> Engine:
    engine = sa.create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (see _on_begin)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA synchronous=FULL")  # a committed decision survives power loss
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("belegwacht_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def get_engine(url: str) -> Engine:
    """One engine per URL and process (engines must not cross a fork)."""
    key = (url, os.getpid())
    if key not in _ENGINES:
        if url.startswith("sqlite"):
            _ENGINES[key] = _sqlite_engine(url)
        else:
            _ENGINES[key] = sa.create_engine(url, pool_pre_ping=True)
    return _ENGINES[key]


@dataclass
class VerifyResult:
    ok: bool
    events: int
    first_broken: int | None
    message: str
    head_hash: str = GENESIS


def event_hash(fields: dict[str, Any]) -> str:
    """sha256 over the canonical JSON (sorted keys, no spaces, UTF-8) of the event fields."""
    body = {k: fields.get(k) for k in EVENT_FIELDS}
    blob = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


# --- the store ---------------------------------------------------------------------------------

class ReviewStore:
    """All review state. Every public method is one transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = get_engine(url)
        self.dialect = self.engine.dialect.name
        self.migrate()

    @classmethod
    def for_data_dir(cls, data_dir: Path, url: str = "") -> ReviewStore:
        """``url`` empty: SQLite (WAL) at ``data_dir/review.sqlite``."""
        if not url:
            data_dir = Path(data_dir)
            data_dir.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{(data_dir / STORE_FILE).resolve()}"
        return cls(url)

    # -- transactions --

    @contextmanager
    def _write(self, *, checkpoint_later: bool = False) -> Iterator[Connection]:
        """A write transaction: BEGIN IMMEDIATE on SQLite, so the write lock is taken up front.

        ``checkpoint_later`` (SQLite): the commit does not copy the WAL into the database file
        itself (SQLite's automatic checkpoint once the WAL passes 1,000 pages); a background
        thread does it right after (``_checkpoint_soon``). For a publish of ~18 MB (28k items)
        that takes ~0.05 s of writing and fsync off the commit. The commit is as durable either
        way: it is fsynced into the WAL, which a checkpoint only copies on."""
        with self.engine.connect() as conn:
            conn.execution_options(belegwacht_write=True)
            raw = conn.connection.dbapi_connection if checkpoint_later and \
                self.dialect == "sqlite" else None
            if raw is not None:  # the driver's own connection: SQLAlchemy would begin here
                pages = raw.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
                raw.execute("PRAGMA wal_autocheckpoint = 0")
            try:
                with conn.begin():
                    yield conn
            finally:
                if raw is not None:
                    raw.execute(f"PRAGMA wal_autocheckpoint = {int(pages)}")
        if raw is not None:
            _checkpoint_soon(self.engine)

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            with conn.begin():
                yield conn

    def _lock_chain(self, conn: Connection) -> None:
        """Serialise appends to the decision chain (SQLite: already by BEGIN IMMEDIATE)."""
        if self.dialect == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(7411002)"))

    # -- migrations --

    def schema_version(self) -> int:
        with self._read() as conn:
            if not sa.inspect(conn).has_table("schema_version"):
                return 0
            return conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0

    def migrate(self) -> int:
        """Apply pending migrations in order; return the schema version now in force."""
        latest = MIGRATIONS[-1][0]
        if self.schema_version() == latest:
            return latest
        with self._write() as conn:
            if self.dialect == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(7411001)"))
            schema_version.create(conn, checkfirst=True)
            current = conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0
            if current > latest:
                raise StoreError(f"the review store has schema version {current}, newer than "
                                 f"this belegwacht ({latest})", file=self._where(),
                                 hint="upgrade belegwacht")
            for version, description, apply in MIGRATIONS:
                if version > current:
                    apply(conn)
                    conn.execute(schema_version.insert().values(
                        version=version, description=description, applied_at=now_iso()))
        return latest

    def _where(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    # -- runs and deliveries --

    def start_run(self, run_id: str, entity: str, *, delivery_hash: str | None = None,
                  started: str | None = None) -> None:
        with self._write() as conn:
            conn.execute(runs.insert().values(id=run_id, entity=entity,
                                              started=started or now_iso(),
                                              outcome="running", delivery_hash=delivery_hash))

    def fail_run(self, run_id: str, error: str, outcome: str = "failed",
                 entity: str | None = None) -> None:
        """Record why a run did not publish; nothing else changes."""
        with self._write() as conn:
            exists = conn.execute(sa.select(runs.c.outcome).where(runs.c.id == run_id)).first()
            if exists is None:
                conn.execute(runs.insert().values(id=run_id, entity=entity or "?",
                                                  started=now_iso(), outcome=outcome))
            elif exists[0] == "published":
                return
            conn.execute(runs.update().where(runs.c.id == run_id).values(
                outcome=outcome, finished=now_iso(), error=error))

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        with self._read() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).mappings().first()
        return _run_dict(row) if row else None

    def list_runs(self, entity: str | None = None) -> list[dict[str, Any]]:
        """Every run, newest first."""
        query = sa.select(runs).order_by(runs.c.started.desc(), runs.c.id.desc())
        if entity:
            query = query.where(runs.c.entity == entity)
        with self._read() as conn:
            return [_run_dict(r) for r in conn.execute(query).mappings()]

    def latest_published_run(self, entity: str) -> str | None:
        with self._read() as conn:
            return conn.execute(
                sa.select(runs.c.id).where(runs.c.entity == entity,
                                           runs.c.outcome == "published")
                .order_by(runs.c.id.desc()).limit(1)).scalar()

    def delivery_run(self, entity: str, delivery_hash: str) -> str | None:
        """The run that already processed this delivery (by content hash), if any."""
        with self._read() as conn:
            return conn.execute(sa.select(deliveries.c.run_id).where(
                deliveries.c.entity == entity,
                deliveries.c.delivery_hash == delivery_hash)).scalar()

    # -- publish --

    def publish_run(self, ctx: Any, findings: pl.DataFrame, *,
                    scope: pl.DataFrame | None = None, delivery_hash: str | None = None,
                    delivery_files: list[dict[str, Any]] | None = None,
                    manifest: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
                    before_commit: Callable[[], None] | None = None) -> dict[str, Any]:
        """Upsert the run's review items in ONE transaction and mark the run published.

        ``scope``: the journals (entity, fiscal_year, journal_id) this run looked at; items in
        scope that are not in ``findings`` are marked no longer flagged. Default: the journals
        of ``ctx.run_dir/bookings.parquet`` (the delivery), or every item of the entity when
        ``ctx.rescore_history``. Items outside the scope are left alone (a delta does not
        un-flag last month). Rerunning identical findings changes no item. ``delivery_hash`` is
        registered as processed in the same transaction, so a delivery counts as processed
        exactly when its run is published.

        ``manifest`` may be a function returning it: it is called inside the transaction once
        the items are written, so the caller can compute it meanwhile (the pipeline's manifest
        statistics run in DuckDB/Polars threads while SQLite inserts: ~0.25 s at 1M lines).
        """
        entity = ctx.entity
        run_id = ctx.run_id
        new = _normalise_findings(findings, entity)
        scope_keys = self._scope(ctx, new, scope)
        with self._write(checkpoint_later=True) as conn:
            active = self._active_suppressions(conn)
            new = _apply_suppressions(new, active)
            entities = {entity, *new["entity"].to_list()}
            if scope_keys is not None:
                entities |= set(scope_keys.select(pl.col("entity").unique()).collect()
                                .get_column("entity").to_list())
            old = self._entity_items(conn, sorted(entities))
            cache_size = None
            if self.dialect == "sqlite":
                # a 64 MB page cache for the bulk upsert (default 2 MB): 280k items (10M
                # lines) touch the table and four indexes all over; 4.4 -> 3.2 CPU s
                cache_size = conn.exec_driver_sql("PRAGMA cache_size").scalar()
                conn.exec_driver_sql("PRAGMA cache_size = -65536")
            try:
                counts = self._upsert(conn, run_id, new, old, scope_keys)
            finally:
                if cache_size is not None:  # the connection's own setting, not a guess
                    conn.exec_driver_sql(f"PRAGMA cache_size = {int(cache_size)}")
            counts["log_head"] = conn.execute(
                sa.select(log_head.c.last_hash).where(log_head.c.id == 1)).scalar()
            counts["headline"] = _headline(counts, active, new)
            if callable(manifest):
                manifest = manifest()
            values = dict(entity=entity, outcome="published", finished=now_iso(),
                          counts=json.dumps(counts, default=str),
                          manifest=json.dumps(manifest, default=str) if manifest else None,
                          delivery_hash=delivery_hash)
            exists = conn.execute(sa.select(runs.c.id).where(runs.c.id == run_id)).first()
            if exists:
                conn.execute(runs.update().where(runs.c.id == run_id).values(**values))
            else:
                conn.execute(runs.insert().values(id=run_id, started=now_iso(), **values))
            if delivery_hash:
                registered = conn.execute(sa.select(deliveries.c.run_id).where(
                    deliveries.c.entity == entity,
                    deliveries.c.delivery_hash == delivery_hash)).first()
                if registered is None:
                    conn.execute(deliveries.insert().values(
                        entity=entity, delivery_hash=delivery_hash, run_id=run_id,
                        processed_at=now_iso(), files=json.dumps(delivery_files or [])))
            if before_commit is not None:
                before_commit()  # crash tests: dying here must roll the whole publish back
        return counts

    def _scope(self, ctx: Any, new: pl.DataFrame,
               scope: pl.DataFrame | None) -> pl.LazyFrame | None:
        """Journal keys in scope of this run (lazy; keys may repeat), or None for 'every item of
        the entity'. Lazy because only the few items that lose their flag are looked up in it:
        de-duplicating a 1M-line delivery's keys up front cost ~0.3 s."""
        if getattr(ctx, "rescore_history", False):
            return None
        if scope is None:
            delivery = Path(ctx.run_dir) / "bookings.parquet"
            if not delivery.exists():
                return new.lazy().select(list(KEY_FIELDS))
            source = pl.scan_parquet(delivery)
        else:
            source = scope.lazy()
        return pl.concat([source.select([pl.col(k).cast(t) for k, t in KEY_FIELDS.items()]),
                          new.lazy().select(list(KEY_FIELDS))])

    def _entity_items(self, conn: Connection, entities: list[str]) -> pl.DataFrame:
        cols = ["item_id", *KEY_FIELDS, *ITEM_FIELDS, "flagged", "suppressed_by",
                "last_decision_id", "changed_since_decision"]
        query = (sa.select(*[items.c[c] for c in cols]).where(items.c.entity.in_(entities))
                 .compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True}))
        # the driver's rows as they come (no per-value result processing: ~10x faster for
        # 28k items); booleans arrive as 0/1 on SQLite and are cast below
        params = (tuple(query.params[k] for k in query.positiontup or ()) if query.positional
                  else query.params)
        rows = conn.exec_driver_sql(query.string, params).cursor.fetchall()
        schema = {"item_id": pl.String(), **KEY_FIELDS,
                  **{k: t for k, (_, t) in ITEM_FIELDS.items()}, "flagged": pl.Boolean(),
                  "suppressed_by": pl.String(), "last_decision_id": pl.Int64(),
                  "changed_since_decision": pl.Boolean()}
        raw = {k: (pl.Int64() if t == pl.Boolean() else t) for k, t in schema.items()}
        columns = list(zip(*rows)) if rows else [[] for _ in raw]  # by column: ~4x faster
        return pl.DataFrame(dict(zip(raw, columns)), schema=raw).cast(schema)  # type: ignore

    def _upsert(self, conn: Connection, run_id: str, new: pl.DataFrame,
                old: pl.DataFrame, scope: pl.LazyFrame | None) -> dict[str, Any]:
        compare = [*ITEM_FIELDS, "suppressed_by"]
        joined = new.join(old.select("item_id", "flagged", "last_decision_id",
                                     "changed_since_decision",
                                     *[pl.col(c).alias(f"{c}__old") for c in compare]),
                          on="item_id", how="left")
        is_new = pl.col("flagged").is_null()
        content_changed = pl.any_horizontal(
            [pl.col(c).ne_missing(pl.col(f"{c}__old")) for c in EVIDENCE_FIELDS])
        joined = joined.with_columns(
            is_new.alias("_new"),
            content_changed.alias("_content"),
            pl.any_horizontal([pl.col(c).ne_missing(pl.col(f"{c}__old")) for c in compare]
                              + [~pl.col("flagged").fill_null(True)]).alias("_changed"))
        inserts = joined.filter("_new")
        updates = joined.filter(~pl.col("_new") & pl.col("_changed")).with_columns(
            (pl.col("changed_since_decision")
             | (pl.col("_content") & pl.col("last_decision_id").is_not_null()))
            .alias("changed_since_decision"))
        item_cols = ["item_id", *KEY_FIELDS, *ITEM_FIELDS, "suppressed_by"]
        if inserts.height:
            # the values every new item shares are written into the statement, not bound per
            # row: 5 of 41 parameters (~0.015 CPU s for 28k items)
            same = _literals(conn, items, {"first_run": run_id, "last_run": run_id,
                                           "flagged": True, "status": "open",
                                           "changed_since_decision": False})
            _executemany(conn, items.insert().values(same), inserts.select(item_cols))
        if updates.height:
            set_cols = [*ITEM_FIELDS, "suppressed_by", "changed_since_decision"]
            stmt = items.update().where(items.c.item_id == sa.bindparam("_id")).values(
                {c: sa.bindparam(c) for c in set_cols} | {"flagged": True, "last_run": run_id})
            _executemany(conn, stmt, updates.select(pl.col("item_id").alias("_id"), *set_cols))
        # items in scope that this run no longer flags
        candidates = old.filter(pl.col("flagged")).join(new.select("item_id"), on="item_id",
                                                        how="anti")
        if scope is not None and candidates.height:
            # the scope's keys of the candidates only (the small side builds the join)
            keys = list(KEY_FIELDS)
            in_scope = scope.join(candidates.lazy().select(keys), on=keys, how="semi").select(
                keys).unique().collect()
            candidates = candidates.join(in_scope, on=keys, how="semi")
        if candidates.height:
            _executemany(conn, items.update().where(items.c.item_id == sa.bindparam("_id"))
                         .values(flagged=False, last_run=run_id),
                         candidates.select(pl.col("item_id").alias("_id")))
        return {"items": new.height, "new": inserts.height,
                "still_flagged": new.height - inserts.height,
                "changed": updates.filter(pl.col("_content")).height,
                "no_longer_flagged": candidates.height,
                "suppressed": new.filter(pl.col("suppressed_by").is_not_null()).height}

    # -- listing --

    def items(self, entity: str | None = None, *, include_unflagged: bool = False) -> pl.DataFrame:
        """Flagged items (of each entity's latest publish) with current status and assignee.

        ``suppressed`` items are included (flag set) so the app can show or hide them.
        """
        query = sa.select(items)
        if entity:
            query = query.where(items.c.entity == entity)
        if not include_unflagged:
            query = query.where(items.c.flagged.is_(True))
        with self._read() as conn:
            rows = conn.execute(query.order_by(items.c.entity, items.c.rank,
                                               items.c.item_id)).all()
        schema = {c.name: _polars_type(c) for c in items.columns}
        frame = pl.DataFrame([tuple(r) for r in rows], schema=schema, orient="row")
        return frame.with_columns(
            pl.col("posting_date").str.to_date(strict=False),
            pl.col("amount").cast(pl.Decimal(18, 2), strict=False),
            pl.col("journal_amount").cast(pl.Decimal(18, 2), strict=False),
            pl.col("fiscal_year").cast(pl.Int32),
            pl.col("line_no").cast(pl.Int32),
            pl.col("suppressed_by").is_not_null().alias("suppressed"),
            pl.col("suppressed_by").alias("suppression_id"),
        )

    def get_item(self, item_id_: str) -> dict[str, Any] | None:
        with self._read() as conn:
            row = conn.execute(sa.select(items).where(items.c.item_id == item_id_)) \
                .mappings().first()
        return dict(row) if row else None

    # -- decisions --

    def record_decision(self, item_id: str, status: str, comment: str, user: str, *,
                        run_id: str | None = None, assignee: str | None | Keep = KEEP,
                        suppression: dict[str, Any] | None = None) -> int:
        """Append one decision event; return its id. A correction is simply a newer event.

        ``assignee``: ``KEEP`` (default) leaves the item's assignee as it is, a name assigns,
        ``None`` un-assigns.

        ``suppression`` (only with ``no_finding``): a scope dict over ``SCOPE_KEYS`` that later
        runs apply; it is created in the same transaction and its id is part of the event.
        """
        if suppression is not None and status != "no_finding":
            raise StoreError("a suppression can only be added with the status no_finding")
        with self._write() as conn:
            self._lock_chain(conn)
            supp_id = None
            if suppression is not None:
                scope = dict(suppression)
                rule_id = scope.get("rule_id")
                supp_id = self._insert_suppression(conn, rule_id, scope, user, comment, item_id)
            return self._append(conn, [item_id], status, comment, user, run_id, assignee,
                                supp_id)[0]

    def record_decisions(self, item_ids: list[str], status: str, comment: str, user: str, *,
                         assignee: str | None | Keep = KEEP) -> int:
        """The same decision for many items, in one transaction; returns the number recorded.

        ``assignee=KEEP`` (default): every item keeps its own assignee (a bulk decision must not
        undo the work allocation); a name or ``None`` sets or clears it on all of them.
        """
        if not item_ids:
            return 0
        with self._write() as conn:
            self._lock_chain(conn)
            return len(self._append(conn, list(item_ids), status, comment, user, None,
                                    assignee, None))

    def _append(self, conn: Connection, item_ids: list[str], status: str, comment: str,
                user: str, run_id: str | None, assignee: str | None | Keep,
                suppression_id: str | None) -> list[int]:
        if status not in STATUSES:
            raise StoreError(f"unknown status {status!r}", hint=f"use one of {', '.join(STATUSES)}")
        comment = (comment or "").strip()
        if status in COMMENT_REQUIRED and not comment:
            raise StoreError(f"a comment is required for the status {status}")
        if not (user or "").strip():
            raise StoreError("a decision needs a user")
        # Read in the chain's write transaction (lock held), so KEEP sees the committed state.
        rows = conn.execute(sa.select(items.c.item_id, items.c.last_run, items.c.assignee)
                            .where(items.c.item_id.in_(item_ids))).all()
        known = {r[0]: r[1] for r in rows}
        current = {r[0]: r[2] for r in rows}
        missing = [i for i in item_ids if i not in known]
        if missing:
            raise StoreError(f"unknown review item {missing[0]!r}")
        head = conn.execute(sa.select(log_head.c.last_id, log_head.c.last_hash)
                            .where(log_head.c.id == 1)).one()
        last_id, prev = int(head[0]), str(head[1])
        events = []
        for iid in item_ids:
            last_id += 1
            ev = {"id": last_id, "item_id": iid, "status": status, "comment": comment,
                  "user": user, "ts": now_iso(), "run_id": run_id or known[iid],
                  "assignee": current[iid] if assignee is KEEP else assignee,
                  "suppression_id": suppression_id, "prev_hash": prev}
            ev["hash"] = prev = event_hash(ev)
            events.append(ev)
        conn.execute(decisions.insert(), events)
        conn.execute(log_head.update().where(log_head.c.id == 1)
                     .values(last_id=last_id, last_hash=prev))
        conn.execute(items.update().where(items.c.item_id == sa.bindparam("_id")).values(
            status=sa.bindparam("status"), assignee=sa.bindparam("assignee"),
            last_decision_id=sa.bindparam("id"), last_decision_at=sa.bindparam("ts"),
            last_decision_by=sa.bindparam("user"), last_comment=sa.bindparam("comment"),
            changed_since_decision=False),
            [{"_id": e["item_id"], "status": e["status"], "assignee": e["assignee"],
              "id": e["id"], "ts": e["ts"], "user": e["user"], "comment": e["comment"]}
             for e in events])
        return [e["id"] for e in events]

    def history(self, item_id: str) -> list[dict[str, Any]]:
        """Decision events of one item, oldest first."""
        with self._read() as conn:
            rows = conn.execute(sa.select(decisions).where(decisions.c.item_id == item_id)
                                .order_by(decisions.c.id)).mappings().all()
        return [dict(r) for r in rows]

    def decision_log(self) -> pl.DataFrame:
        """Every decision event with its journal, oldest first (the audit-trail page)."""
        query = (sa.select(decisions, items.c.entity, items.c.fiscal_year, items.c.journal_id)
                 .select_from(decisions.outerjoin(items, items.c.item_id == decisions.c.item_id))
                 .order_by(decisions.c.id))
        with self._read() as conn:
            result = conn.execute(query)
            names = list(result.keys())
            rows = result.all()
        schema = {n: (pl.Int64() if n in ("id", "fiscal_year") else pl.String()) for n in names}
        return pl.DataFrame([tuple(r) for r in rows], schema=schema, orient="row")

    def verify_log(self, anchors: dict[str, str] | None = None) -> VerifyResult:
        """Recompute the chain; name the first event whose link or content does not hold.

        ``anchors`` (run id -> head hash recorded in that run's manifest, see
        ``anchors_from_runs``) catch a chain rewritten consistently from the start: every
        recorded head must still be a link of the chain.
        """
        with self._read() as conn:
            rows = conn.execute(sa.select(decisions).order_by(decisions.c.id)).mappings().all()
            head = conn.execute(sa.select(log_head.c.last_id, log_head.c.last_hash)
                                .where(log_head.c.id == 1)).one()
        prev, expected_id = GENESIS, 1
        for row in rows:
            ev = dict(row)
            where = f"event {ev['id']} (item {ev['item_id']}, {ev['user']}, {ev['ts']})"
            if ev["id"] != expected_id:
                return _broken(len(rows), expected_id,
                               f"event {expected_id} is missing (deleted or renumbered); "
                               f"next stored event is {ev['id']}")
            if ev["prev_hash"] != prev:
                return _broken(len(rows), ev["id"],
                               f"{where} does not link to the event before it "
                               f"(deleted, inserted or reordered)")
            if event_hash(ev) != ev["hash"]:
                return _broken(len(rows), ev["id"],
                               f"{where}: its content does not match its hash (changed)")
            prev, expected_id = ev["hash"], expected_id + 1
        if int(head[0]) != expected_id - 1 or head[1] != prev:
            return _broken(len(rows), expected_id,
                           f"the log head says event {head[0]} is the newest, but the chain "
                           f"ends at event {expected_id - 1} (newest events deleted?)")
        links = {GENESIS, *(r["hash"] for r in rows)}
        for run_id, head_hash in sorted((anchors or {}).items()):
            if head_hash and head_hash not in links:
                return VerifyResult(False, len(rows), None,
                                    f"decision log BROKEN: run {run_id} recorded the head "
                                    f"{head_hash[:16]} at publish, which is no longer in the "
                                    f"chain (the log was rewritten)", prev)
        checked = f", {len(anchors)} run anchors checked" if anchors else ""
        return VerifyResult(True, len(rows), None,
                            f"decision log intact: {len(rows)} events, head {prev[:16]}{checked}",
                            prev)

    # -- suppressions --

    def add_suppression(self, rule_id: str, scope: dict[str, Any], user: str, reason: str,
                        item_id: str | None = None) -> str:
        with self._write() as conn:
            return self._insert_suppression(conn, rule_id, scope, user, reason, item_id)

    def _insert_suppression(self, conn: Connection, rule_id: str | None, scope: dict[str, Any],
                            user: str, reason: str, item_id: str | None) -> str:
        scope = {k: v for k, v in dict(scope).items() if v is not None and v != ""}
        unknown = sorted(set(scope) - set(SCOPE_KEYS))
        if unknown:
            raise StoreError(f"unknown suppression scope key {unknown[0]!r}",
                             hint=f"use {', '.join(SCOPE_KEYS)}")
        rule_id = rule_id or scope.get("rule_id")
        if not rule_id:
            raise StoreError("a suppression needs a rule_id")
        if scope.get("rule_id", rule_id) != rule_id:
            raise StoreError("rule_id and scope['rule_id'] differ")
        scope["rule_id"] = rule_id
        if len(scope) < 2:
            raise StoreError("a suppression must be narrow: name the rule and at least one of "
                             "vendor_id, gl_account, entered_by, cost_center")
        if not (reason or "").strip():
            raise StoreError("a suppression needs a reason")
        supp_id = "S" + uuid.uuid4().hex[:11]
        conn.execute(suppressions.insert().values(
            id=supp_id, rule_id=rule_id, scope=json.dumps(scope, sort_keys=True),
            created_by=user, created_at=now_iso(), reason=reason.strip(), item_id=item_id))
        return supp_id

    def _active_suppressions(self, conn: Connection) -> list[dict[str, Any]]:
        rows = conn.execute(sa.select(suppressions).where(suppressions.c.revoked_at.is_(None))
                            .order_by(suppressions.c.created_at)).mappings().all()
        return [{**r, "scope": json.loads(r["scope"])} for r in rows]

    def list_suppressions(self, include_revoked: bool = False) -> list[dict[str, Any]]:
        query = sa.select(suppressions).order_by(suppressions.c.created_at)
        if not include_revoked:
            query = query.where(suppressions.c.revoked_at.is_(None))
        with self._read() as conn:
            rows = conn.execute(query).mappings().all()
        return [{**r, "scope": json.loads(r["scope"]), "active": r["revoked_at"] is None}
                for r in rows]

    def revoke_suppression(self, suppression_id: str, user: str, reason: str) -> None:
        """Stop applying a suppression; items it hid show again at once."""
        if not (reason or "").strip():
            raise StoreError("revoking a suppression needs a reason")
        with self._write() as conn:
            row = conn.execute(sa.select(suppressions.c.revoked_at)
                               .where(suppressions.c.id == suppression_id)).first()
            if row is None:
                raise StoreError(f"no suppression {suppression_id!r}",
                                 hint="see `belegwacht suppressions list`")
            if row[0] is not None:
                raise StoreError(f"suppression {suppression_id} is already revoked")
            conn.execute(suppressions.update().where(suppressions.c.id == suppression_id)
                         .values(revoked_by=user, revoked_at=now_iso(),
                                 revoked_reason=reason.strip()))
            # items it hid show again now; the next publish recomputes coverage
            conn.execute(items.update().where(items.c.suppressed_by.contains(suppression_id))
                         .values(suppressed_by=None))

    # -- users and access log --

    def add_user(self, username: str, password_hash: str | None, role: str,
                 display_name: str | None = None) -> None:
        _check_role(role)
        if not (username or "").strip():
            raise StoreError("a user name is required")
        with self._write() as conn:
            taken = sa.select(users.c.username).where(users.c.username == username)
            if conn.execute(taken).first():
                raise StoreError(f"user {username!r} exists already")
            conn.execute(users.insert().values(username=username, display_name=display_name,
                                               role=role, password_hash=password_hash,
                                               active=True, created_at=now_iso()))

    def get_user(self, username: str) -> dict[str, Any] | None:
        with self._read() as conn:
            row = conn.execute(sa.select(users).where(users.c.username == username)) \
                .mappings().first()
        return dict(row) if row else None

    def list_users(self) -> list[dict[str, Any]]:
        with self._read() as conn:
            return [dict(r) for r in conn.execute(sa.select(users).order_by(users.c.username))
                    .mappings()]

    def _update_user(self, username: str, **values: Any) -> None:
        with self._write() as conn:
            done = conn.execute(users.update().where(users.c.username == username).values(**values))
            if done.rowcount == 0:
                raise StoreError(f"no user {username!r}")

    def set_role(self, username: str, role: str) -> None:
        _check_role(role)
        self._update_user(username, role=role)

    def disable_user(self, username: str) -> None:
        self._update_user(username, active=False)

    def set_password_hash(self, username: str, password_hash: str) -> None:
        self._update_user(username, password_hash=password_hash)

    def log_access(self, user: str, action: str, detail: str | None = None) -> None:
        with self._write() as conn:
            conn.execute(access_log.insert().values(user=user or "?", ts=now_iso(),
                                                    action=action, detail=detail))

    def access_log(self, limit: int = 1000) -> list[dict[str, Any]]:
        with self._read() as conn:
            return [dict(r) for r in conn.execute(
                sa.select(access_log).order_by(access_log.c.id.desc()).limit(limit)).mappings()]


# --- helpers -----------------------------------------------------------------------------------

_CHECKPOINTS: list[threading.Thread] = []
_CHECKPOINTS_LOCK = threading.Lock()
_JOIN_AT_EXIT: list[bool] = []  # the exit handler is registered once


def _checkpoint_soon(engine: Engine) -> None:
    """Copy the WAL into the database file in a background thread (``PRAGMA
    wal_checkpoint(PASSIVE)``: never waits for readers or writers, does what it can). The
    process waits for it when it exits (``join_checkpoints``, an exit handler): one cut short
    loses nothing, the next commit's automatic checkpoint would finish it."""
    def run() -> None:
        try:
            raw = engine.raw_connection()
            try:
                raw.driver_connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                raw.close()
        except Exception:  # noqa: BLE001 - an optimisation: SQLite's own checkpoint catches up
            pass

    thread = threading.Thread(target=run, name="belegwacht-checkpoint", daemon=True)
    with _CHECKPOINTS_LOCK:
        if not _JOIN_AT_EXIT:
            atexit.register(join_checkpoints)
            _JOIN_AT_EXIT.append(True)
        _CHECKPOINTS[:] = [t for t in _CHECKPOINTS if t.is_alive()] + [thread]
    thread.start()


def join_checkpoints(timeout: float | None = 30.0) -> None:
    """Wait for the background checkpoints started so far (``_checkpoint_soon``)."""
    with _CHECKPOINTS_LOCK:
        pending = list(_CHECKPOINTS)
    for thread in pending:
        thread.join(timeout)


def _executemany(conn: Connection, stmt: Any, rows: pl.DataFrame) -> None:
    """Run ``stmt`` for every row of ``rows`` (columns named like its parameters) as ONE
    driver-level ``executemany``.

    Why: SQLAlchemy's ``execute(stmt, [dict, ...])`` builds and processes a parameter dict per
    row (~35 µs a row: 1 s for the 28k items of a 1M-line delivery). The statement is compiled
    once instead and the rows go to the driver as Polars gives them; every item column is a
    plain str/int/float/bool/None, which SQLite and psycopg bind natively. Values the statement
    carries itself (``.values(flagged=True)``) are filled in per row."""
    names = [c for c in rows.columns if c in stmt.table.c] if stmt.is_insert else None
    compiled = stmt.compile(dialect=conn.dialect, column_keys=names)
    fixed = {k: b.effective_value for k, b in compiled.binds.items() if k not in rows.columns}
    rows = rows.with_columns(pl.lit(v).alias(k) for k, v in fixed.items())
    if compiled.positional:
        params: Any = rows.select(list(compiled.positiontup or ())).rows()
    else:
        params = rows.select(list(compiled.binds)).to_dicts()
    conn.exec_driver_sql(compiled.string, params)


def _literals(conn: Connection, table: sa.Table, values: dict[str, Any]
              ) -> dict[str, Any]:
    """``values`` as SQL literals of ``table``'s column types, rendered by SQLite's literal
    processors (which quote and escape), for a statement that would otherwise bind the same
    value in every row of an ``executemany``. Other databases get the values to bind as usual:
    psycopg's pyformat would need its '%' escaped once more (tested with PostgreSQL: the
    processor and ``literal_column`` each double it)."""
    if conn.dialect.name != "sqlite":
        return dict(values)
    out = {}
    for name, value in values.items():
        render = table.c[name].type.literal_processor(conn.dialect)
        if render is None:  # a type without a literal form: bound as usual
            out[name] = value
        else:
            out[name] = sa.literal_column(render(value))
    return out


def anchors_from_runs(data_dir: Path) -> dict[str, str]:
    """Head hashes recorded in the published runs' manifests (outside the database)."""
    out: dict[str, str] = {}
    for manifest in sorted(Path(data_dir).glob("runs/*/manifest.json")):
        try:
            head = json.loads(manifest.read_text("utf-8")).get("findings", {}).get("log_head")
        except (OSError, ValueError):
            continue
        if head:
            out[manifest.parent.name] = head
    return out


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise StoreError(f"unknown role {role!r}", hint=f"use one of {', '.join(ROLES)}")


def _broken(events: int, first: int, message: str) -> VerifyResult:
    return VerifyResult(False, events, first, f"decision log BROKEN at event {first}: {message}")


def _run_dict(row: Any) -> dict[str, Any]:
    out = dict(row)
    for key in ("counts", "manifest"):
        out[key] = json.loads(out[key]) if out.get(key) else {}
    return out


def _polars_type(col: sa.Column) -> pl.DataType:
    if col.name in ITEM_FIELDS:
        return ITEM_FIELDS[col.name][1]
    if isinstance(col.type, sa.Boolean):
        return pl.Boolean()
    if isinstance(col.type, sa.Integer):
        return pl.Int64()
    if isinstance(col.type, sa.Float):
        return pl.Float64()
    return pl.String()


def _normalise_findings(findings: pl.DataFrame, entity: str) -> pl.DataFrame:
    """Findings -> the item columns as stored (decimals and dates as text), one row per journal."""
    if findings.is_empty():  # literals would broadcast to one row on a frame without columns
        return pl.DataFrame(schema={**KEY_FIELDS, **{k: t for k, (_, t) in ITEM_FIELDS.items()},
                                    "item_id": pl.String(), "suppressed_by": pl.String()})
    present = set(findings.columns)
    exprs = [pl.col(k).cast(t) if k in present else pl.lit(None, dtype=t).alias(k)
             for k, t in KEY_FIELDS.items()]
    for name, (_, dtype) in ITEM_FIELDS.items():
        if name not in present:
            exprs.append(pl.lit(None, dtype=dtype).alias(name))
        elif dtype == pl.String() and findings.schema[name] in (pl.Date(), pl.Datetime()):
            exprs.append(pl.col(name).dt.strftime("%Y-%m-%d").alias(name))
        else:
            exprs.append(pl.col(name).cast(dtype).alias(name))
    frame = findings.select(exprs).with_columns(pl.col("entity").fill_null(entity))
    incomplete = frame.filter(pl.col("fiscal_year").is_null() | pl.col("journal_id").is_null())
    if incomplete.height:
        raise StoreError(f"{incomplete.height} finding(s) without fiscal_year or journal_id")
    if "item_id" in present:
        ids = findings["item_id"].cast(pl.String())
    else:  # scoring provides item_id; compute it only for hand-made findings
        keys = frame.select(list(KEY_FIELDS)).iter_rows()
        ids = pl.Series([item_id(e, y, j) for e, y, j in keys], dtype=pl.String())
    frame = frame.with_columns(ids.alias("item_id"),
                               pl.lit(None, dtype=pl.String()).alias("suppressed_by"))
    return frame.unique("item_id", keep="first").sort("item_id")


def _apply_suppressions(frame: pl.DataFrame, active: list[dict[str, Any]]) -> pl.DataFrame:
    """Mark items whose every rule is covered by a matching active suppression."""
    if not active or frame.is_empty():
        return frame
    rules = frame.select("item_id", "vendor_id", "gl_account", "entered_by", "cost_center",
                         pl.col("rule_ids").fill_null("").str.split(",")
                         .list.eval(pl.element().str.strip_chars()).alias("rule_id")) \
        .explode("rule_id").filter(pl.col("rule_id") != "")
    covered = []
    for supp in active:
        cond = pl.lit(True)
        for key, value in supp["scope"].items():
            cond = cond & (pl.col(key) == str(value))
        covered.append(rules.filter(cond).select("item_id", "rule_id",
                                                 pl.lit(supp["id"]).alias("supp")))
    hits = pl.concat(covered)
    per_rule = rules.join(hits, on=["item_id", "rule_id"], how="left")
    per_item = per_rule.group_by("item_id").agg(
        pl.col("supp").is_not_null().all().alias("all_covered"),
        pl.col("supp").drop_nulls().unique().sort().str.join(",").alias("by"))
    suppressed = per_item.filter("all_covered").select("item_id", "by")
    return frame.join(suppressed, on="item_id", how="left").with_columns(
        pl.col("by").alias("suppressed_by")).drop("by").sort("item_id")


def _headline(counts: dict[str, Any], active: list[dict[str, Any]],
              new: pl.DataFrame) -> list[str]:
    lines = [f"published {counts['items']} items: {counts['new']} new, "
             f"{counts['still_flagged']} still flagged, {counts['no_longer_flagged']} no longer "
             f"flagged, {counts['suppressed']} suppressed"]
    used = new.filter(pl.col("suppressed_by").is_not_null()).select(
        pl.col("suppressed_by").str.split(",")).explode("suppressed_by")["suppressed_by"]
    tally = used.value_counts()
    by_id = {s["id"]: s for s in active}
    for sid, n in tally.sort("suppressed_by").iter_rows():
        s = by_id.get(sid)
        if s:
            scope = ", ".join(f"{k}={v}" for k, v in sorted(s["scope"].items()) if k != "rule_id")
            lines.append(f"suppression {sid} ({s['rule_id']}; {scope}) by {s['created_by']}: "
                         f"{n} item(s) - {s['reason']}")
    return lines
