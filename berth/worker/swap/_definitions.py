"""Model definitions: what a model is started from while its engine runs, sleeps or is parked.

A definition names the model as requests do (the ``model`` of ``/v1/*``), the instance id it
runs under, and the request it is created from: a launcher body (``options``, ``env_vars``...)
or a deployment spec. It outlives its engine: parking stops the instance and keeps the
definition, so the next request starts it again.

Kept in their own SQLite file (``swap.db`` beside the instance registry), created ``0600`` in
the ``0700`` data dir, because the stored request holds the env values the engine needs.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from berth.worker.errors import InstanceConflict, RegistryUnavailable

SWAP_FILE = "swap.db"
Source = Literal["launcher", "spec"]
_SCHEMA = """
CREATE TABLE IF NOT EXISTS model_definitions (
    name TEXT PRIMARY KEY, instance_id TEXT NOT NULL UNIQUE, data TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class ModelDefinition:
    """One registered model. Immutable: changes go through :meth:`DefinitionStore.update`."""

    name: str
    instance_id: str
    source: Source
    request: dict[str, Any]
    pinned: bool = False
    idle_timeout: float | None = None
    sleep_level: int = 0
    #: accelerator memory (GiB) its engine holds on each of its GPUs while awake (memory budget)
    gpu_memory_gib: float | None = None
    #: may use GPUs other instances hold (a spec's start; a launcher body carries its own flag)
    shared_gpus: bool = False
    #: when its engine was put to sleep (None: awake or parked); compared with the instance's
    #: ``started_at`` so a sleep recorded before a restart is not believed afterwards
    asleep_since: float | None = None
    #: the level it was put to sleep at (a wake from level 2 reloads the weights)
    asleep_level: int = 0
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    @property
    def can_sleep(self) -> bool:
        return self.sleep_level > 0


class DefinitionStore:
    """The definitions, in SQLite with an in-memory copy; thread-safe. :meth:`open` does the I/O.

    Two locks, so that a read never waits on the file: writers take ``_write_lock`` (one at a
    time, with the connection), write the row, then swap the changed definition into the copy
    under ``_cache_lock``, which is held only for that swap and for reads. The inference router
    reads (:meth:`by_instance`) on the event loop; a commit in progress never stalls it.
    """

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.path = Path(data_dir) / SWAP_FILE
        self._write_lock = threading.Lock()  # writers, and the connection
        self._cache_lock = threading.Lock()  # the in-memory copy: held for reads and swaps only
        self._conn: sqlite3.Connection | None = None
        self._cache: dict[str, ModelDefinition] = {}
        self._by_instance: dict[str, ModelDefinition] = {}
        self.opened = False

    def open(self) -> DefinitionStore:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not self.path.exists():
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        conn = sqlite3.connect(self.path, timeout=5.0, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.executescript(_SCHEMA)
        rows = conn.execute("SELECT data FROM model_definitions").fetchall()
        with self._write_lock:
            self._swap({d.name: d for d in (ModelDefinition(**json.loads(row[0])) for row in rows)})
            self._conn = conn
        self.opened = True
        return self

    def close(self) -> None:
        with self._write_lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- reads (the copy only) ---------------------------------------------------------------

    def get(self, name: str) -> ModelDefinition | None:
        with self._cache_lock:
            return self._cache.get(name)

    def all(self) -> list[ModelDefinition]:
        with self._cache_lock:
            values = list(self._cache.values())
        return sorted(values, key=lambda d: d.created_at)

    def by_instance(self, instance_id: str) -> ModelDefinition | None:
        with self._cache_lock:
            return self._by_instance.get(instance_id)

    # -- writes (the file first, then the copy) ----------------------------------------------

    def add(self, definition: ModelDefinition) -> ModelDefinition:
        """Store a new definition; :class:`InstanceConflict` when its name or instance id is taken."""
        with self._write_lock:
            if self.get(definition.name) is not None:
                raise InstanceConflict(f"name: model {definition.name!r} is already registered")
            if self.by_instance(definition.instance_id) is not None:
                raise InstanceConflict(f"instance_id: {definition.instance_id!r} is another model's instance")
            self._write("INSERT INTO model_definitions (name, instance_id, data) VALUES (?, ?, ?)",
                        (definition.name, definition.instance_id, json.dumps(asdict(definition))))
            self._swap({**self._cache, definition.name: definition})
            return definition

    def update(self, name: str, **changes: Any) -> ModelDefinition:
        """Apply ``changes``; KeyError when the model is not registered."""
        with self._write_lock:
            definition = replace(self._cache[name], **changes, updated_at=time.time())
            self._write("UPDATE model_definitions SET data = ? WHERE name = ?",
                        (json.dumps(asdict(definition)), name))
            self._swap({**self._cache, name: definition})
            return definition

    def remove(self, name: str) -> ModelDefinition | None:
        with self._write_lock:
            definition = self._cache.get(name)
            if definition is not None:
                self._write("DELETE FROM model_definitions WHERE name = ?", (name,))
                self._swap({k: v for k, v in self._cache.items() if k != name})
            return definition

    def _swap(self, definitions: dict[str, ModelDefinition]) -> None:
        """Make ``definitions`` the copy readers see (caller holds ``_write_lock``)."""
        by_instance = {d.instance_id: d for d in definitions.values()}
        with self._cache_lock:
            self._cache, self._by_instance = definitions, by_instance

    def _write(self, sql: str, values: tuple[Any, ...]) -> None:
        if self._conn is None:
            raise RegistryUnavailable("the model definitions are not open")
        try:
            self._conn.execute(sql, values)
        except sqlite3.OperationalError as exc:
            raise RegistryUnavailable(f"model definitions {self.path} cannot be written: {exc}") from exc
