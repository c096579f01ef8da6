"""The durable instance registry: one SQLite file under the worker's data dir.

Every instance is written here *before* its workload is created, and every change bumps a
global revision and appends an event, so a worker killed with ``kill -9`` finds each instance
again on start and a watcher can resume from any revision still retained.

The same file keeps port *reservations*: ports promised to an instance that does not exist yet
(GPUStack assigns an instance its ports before it asks for it to start), under a key, the id
the instance will have. They survive a restart, take no revision and make no event; creating
the instance consumes its reservation in the transaction that records it.

Locks: ``_lock`` (re-entrant) guards the one connection and every transaction on it, the
revision counter and the trim counter: every write, the event trim included, runs its whole
transaction under it, so two threads' transactions never overlap on the shared connection.
``_cache_lock`` guards the in-memory copy (records, reservations, revision) that reads are
served from, so a read never waits on the file; it is only ever taken for dict work, never
around I/O, and never while waiting for ``_lock``. WAL journal; a busy timeout so a reader in
another process (``sqlite3 registry.db``) does not fail writes. Callers on an event loop send
writes to a thread: a write is an SQLite commit.

The stored spec keeps secret env values (an instance cannot be restarted without them); the
file is created ``0600`` in a ``0700`` dir, and events carry only the summary (no spec, no env).
A file written by an earlier berth opens as it is: tables are created only when missing.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from berth.worker.errors import InstanceConflict, RegistryUnavailable
from berth.worker.redact import redact_text, secret_values
from berth.worker.store._endpoints import Endpoints
from berth.worker.store._states import InstanceState

logger = logging.getLogger(__name__)

REGISTRY_FILE = "registry.db"
_SCHEMA_VERSION = 2  # 2: the reservations table
_JSON_COLUMNS = ("spec", "ports", "gpus", "identity", "endpoints")
_COLUMNS = (
    "id", "revision", "source", "spec", "state", "reason", "exit_code", "ports", "gpus", "deployer",
    "workload", "identity", "restarts", "restart_policy", "max_restarts", "endpoints",
    "created_at", "updated_at", "started_at", "ready_at",
)
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS instances (
    id TEXT PRIMARY KEY, revision INTEGER NOT NULL, source TEXT NOT NULL, spec TEXT NOT NULL,
    state TEXT NOT NULL, reason TEXT NOT NULL, exit_code INTEGER, ports TEXT NOT NULL,
    gpus TEXT NOT NULL, deployer TEXT NOT NULL, workload TEXT NOT NULL, identity TEXT NOT NULL,
    restarts INTEGER NOT NULL, restart_policy TEXT NOT NULL, max_restarts INTEGER NOT NULL,
    endpoints TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL,
    started_at REAL, ready_at REAL
);
CREATE TABLE IF NOT EXISTS events (
    revision INTEGER PRIMARY KEY AUTOINCREMENT, instance_id TEXT NOT NULL, type TEXT NOT NULL,
    data TEXT NOT NULL, at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS reservations (
    key TEXT PRIMARY KEY, ports TEXT NOT NULL, created_at REAL NOT NULL
);
PRAGMA user_version = {_SCHEMA_VERSION};
"""


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """One instance as the registry holds it. Immutable: changes go through :meth:`Registry.update`."""

    id: str
    source: str
    spec: dict[str, Any]
    deployer: str
    workload: str
    state: InstanceState = InstanceState.PENDING
    reason: str = ""
    exit_code: int | None = None
    ports: dict[str, Any] = field(default_factory=dict)
    gpus: list[int] = field(default_factory=list)
    identity: dict[str, str] = field(default_factory=dict)
    restarts: int = 0
    restart_policy: str = "never"
    max_restarts: int = 0
    endpoints: Endpoints = field(default_factory=Endpoints)
    created_at: float = 0.0
    updated_at: float = 0.0
    started_at: float | None = None
    ready_at: float | None = None
    revision: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.endpoints, Endpoints):  # a stored row's or a caller's JSON shape
            object.__setattr__(self, "endpoints", Endpoints.from_json(self.endpoints))

    def _json(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        data["endpoints"] = self.endpoints.to_json()
        return data

    def summary(self) -> dict[str, Any]:
        """Everything but the spec (which holds env values): safe for events and views."""
        data = self._json()
        data.pop("spec")
        return data

    def _row(self) -> tuple[Any, ...]:
        data = self._json()
        for name in _JSON_COLUMNS:
            data[name] = json.dumps(data[name])
        return tuple(data[name] for name in _COLUMNS)

    @classmethod
    def _from_row(cls, row: sqlite3.Row) -> InstanceRecord:
        data = {name: row[name] for name in _COLUMNS}
        for name in _JSON_COLUMNS:
            data[name] = json.loads(data[name])
        data["state"] = InstanceState(data["state"])
        return cls(**data)


def _redacted(record: InstanceRecord) -> InstanceRecord:
    """The record with its own secrets kept out of its reason (reasons are shown and logged)."""
    if not record.reason:
        return record
    reason = redact_text(record.reason, secret_values(record.spec))
    return record if reason == record.reason else replace(record, reason=reason)


@dataclass(frozen=True, slots=True)
class Event:
    """A change to one instance: ``created``, ``updated`` or ``deleted``, at ``revision``."""

    revision: int
    type: str
    instance_id: str
    instance: dict[str, Any]
    at: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Registry:
    """The SQLite registry. Constructing it does no I/O; :meth:`open` creates or opens the file."""

    def __init__(self, data_dir: str | os.PathLike[str], *, retention: int = 10000) -> None:
        self.path = Path(data_dir) / REGISTRY_FILE
        self.retention = retention
        self._lock = threading.RLock()  # writers, and the connection
        self._cache_lock = threading.Lock()  # the in-memory copy: reads never wait on the file
        self._conn: sqlite3.Connection | None = None
        self._cache: dict[str, InstanceRecord] = {}
        self._reserved: dict[str, tuple[int, ...]] = {}
        self._revision = 0
        self._since_trim = 0

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> Registry:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not self.path.exists():
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        conn = sqlite3.connect(self.path, timeout=5.0, check_same_thread=False, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.executescript(_SCHEMA)
        self._conn = conn
        self._load()
        return self

    def _load(self) -> None:
        conn = self._connection()
        rows = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM instances ORDER BY created_at").fetchall()
        self._cache = {row["id"]: InstanceRecord._from_row(row) for row in rows}
        rows = conn.execute("SELECT key, ports FROM reservations ORDER BY created_at").fetchall()
        self._reserved = {row["key"]: tuple(json.loads(row["ports"])) for row in rows}
        last = conn.execute("SELECT MAX(revision) FROM events").fetchone()[0]
        self._revision = max([int(last or 0), *(r.revision for r in self._cache.values())])

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RegistryUnavailable("the registry is not open")
        return self._conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            raise RegistryUnavailable(f"registry {self.path} cannot be written: {exc}") from exc

    # -- reads -------------------------------------------------------------------------------

    def get(self, instance_id: str) -> InstanceRecord | None:
        with self._cache_lock:
            return self._cache.get(instance_id)

    def all(self) -> list[InstanceRecord]:
        with self._cache_lock:
            return list(self._cache.values())

    @property
    def revision(self) -> int:
        with self._cache_lock:
            return self._revision

    def reservations(self) -> dict[str, tuple[int, ...]]:
        """Ports reserved for instances not created yet, by key (the id the instance will have)."""
        with self._cache_lock:
            return dict(self._reserved)

    def oldest_revision(self) -> int:
        """The oldest revision still retained (events before it were trimmed)."""
        with self._lock:
            row = self._connection().execute("SELECT MIN(revision) FROM events").fetchone()
        return int(row[0] or self._revision + 1)

    def events_since(self, revision: int, limit: int = 500) -> list[Event]:
        """Events with a revision greater than ``revision``, oldest first."""
        with self._lock:
            rows = self._connection().execute(
                "SELECT revision, type, instance_id, data, at FROM events WHERE revision > ? "
                "ORDER BY revision LIMIT ?",
                (revision, limit),
            ).fetchall()
        return [Event(r["revision"], r["type"], r["instance_id"], json.loads(r["data"]), r["at"]) for r in rows]

    # -- writes ------------------------------------------------------------------------------

    def insert(self, record: InstanceRecord) -> InstanceRecord:
        """Record a new instance, consuming the reservation kept under its id (if any) in the same
        transaction; :class:`InstanceConflict` when the id is taken."""
        with self._lock:
            if record.id in self._cache:
                raise InstanceConflict(f"instance {record.id!r} already exists")
            now = time.time()
            record = _redacted(replace(record, created_at=now, updated_at=now))
            with self._transaction() as conn:
                record = replace(record, revision=self._event(conn, "created", record))
                marks = ", ".join("?" for _ in _COLUMNS)
                conn.execute(f"INSERT INTO instances ({', '.join(_COLUMNS)}) VALUES ({marks})", record._row())
                conn.execute("DELETE FROM reservations WHERE key = ?", (record.id,))
            with self._cache_lock:
                self._reserved.pop(record.id, None)
            return self._commit(record)

    def reserve(self, key: str, ports: list[int]) -> tuple[int, ...]:
        """Keep ``ports`` for ``key``; a key already holding a reservation keeps its own (returned).

        Which ports are free is the caller's business (the allocator checks under its lock).
        """
        with self._lock:
            existing = self._reserved.get(key)
            if existing is not None:
                return existing
            with self._transaction() as conn:
                conn.execute("INSERT INTO reservations (key, ports, created_at) VALUES (?, ?, ?)",
                             (key, json.dumps(list(ports)), time.time()))
            with self._cache_lock:
                self._reserved[key] = tuple(ports)
            return tuple(ports)

    def release(self, key: str) -> bool:
        """Drop ``key``'s reservation; False when there was none."""
        with self._lock:
            if key not in self._reserved:
                return False
            with self._transaction() as conn:
                conn.execute("DELETE FROM reservations WHERE key = ?", (key,))
            with self._cache_lock:
                self._reserved.pop(key, None)
            return True

    def update(self, instance_id: str, **changes: Any) -> InstanceRecord:
        """Apply ``changes`` to an instance; raises KeyError when it is unknown."""
        with self._lock:
            record = _redacted(replace(self._cache[instance_id], **changes, updated_at=time.time()))
            with self._transaction() as conn:
                record = replace(record, revision=self._event(conn, "updated", record))
                sets = ", ".join(f"{name} = ?" for name in _COLUMNS[1:])
                conn.execute(f"UPDATE instances SET {sets} WHERE id = ?", (*record._row()[1:], instance_id))
            return self._commit(record)

    def update_if(self, instance_id: str, revision: int, **changes: Any) -> InstanceRecord | None:
        """Compare-and-set: apply ``changes`` only while the instance is still at ``revision``;
        None (nothing written) when it changed or is gone."""
        with self._lock:
            current = self._cache.get(instance_id)
            if current is None or current.revision != revision:
                return None
            return self.update(instance_id, **changes)

    def remove(self, instance_id: str) -> InstanceRecord | None:
        """Forget an instance (after its workload is gone); returns its last record."""
        with self._lock:
            record = self._cache.get(instance_id)
            if record is None:
                return None
            with self._transaction() as conn:
                record = replace(record, revision=self._event(conn, "deleted", record), updated_at=time.time())
                conn.execute("DELETE FROM instances WHERE id = ?", (instance_id,))
            with self._cache_lock:
                self._cache.pop(instance_id, None)
                self._revision = record.revision
            self._maybe_trim()
            return record

    def note(self, instance_id: str, kind: str, data: dict[str, Any]) -> int:
        """Append an event that changes no instance (a model parked, woken...); returns its revision."""
        with self._lock:
            with self._transaction() as conn:
                revision = self._revision + 1
                conn.execute(
                    "INSERT INTO events (revision, instance_id, type, data, at) VALUES (?, ?, ?, ?, ?)",
                    (revision, instance_id, kind, json.dumps(dict(data, revision=revision)), time.time()),
                )
            with self._cache_lock:
                self._revision = revision
            self._maybe_trim()
            return revision

    def _event(self, conn: sqlite3.Connection, kind: str, record: InstanceRecord) -> int:
        revision = self._revision + 1
        summary = dict(record.summary(), revision=revision)
        conn.execute(
            "INSERT INTO events (revision, instance_id, type, data, at) VALUES (?, ?, ?, ?, ?)",
            (revision, record.id, kind, json.dumps(summary), time.time()),
        )
        return revision

    def _commit(self, record: InstanceRecord) -> InstanceRecord:
        with self._cache_lock:
            self._cache[record.id] = record
            self._revision = record.revision
        self._maybe_trim()
        return record

    def _maybe_trim(self) -> None:
        """Every 100th write, drop events older than the retention. Takes ``_lock`` (its callers
        already hold it; re-entrant): its transaction is on the shared connection."""
        with self._lock:
            self._since_trim += 1
            if self._since_trim < 100:
                return
            self._since_trim = 0
            try:
                with self._transaction() as conn:
                    conn.execute("DELETE FROM events WHERE revision <= ?", (self._revision - self.retention,))
            except RegistryUnavailable as exc:
                logger.warning("could not trim old registry events: %s", exc)
