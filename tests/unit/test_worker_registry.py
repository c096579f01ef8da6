"""The SQLite registry: durable across reopen, revisions, events, conflicts, secrets."""

import os
import sqlite3
import stat
import threading

import pytest

from berth.worker.errors import InstanceConflict, RegistryUnavailable
from berth.worker.store._registry import REGISTRY_FILE, InstanceRecord, Registry
from berth.worker.store._states import InstanceState

SPEC = {"model": {"name": "m", "env": {"HF_TOKEN": "hf_abcdefgh", "A": "1"}}, "instance": {"name": "a"}}


def record(instance_id="a", **extra):
    return InstanceRecord(id=instance_id, source="launcher", spec=SPEC, deployer="memory", workload=instance_id,
                          ports={"http": 40000, "ray_range": None}, gpus=[0], **extra)


def test_insert_update_remove_survive_reopen(tmp_path):
    registry = Registry(tmp_path).open()
    first = registry.insert(record())
    assert first.revision == 1 and first.created_at > 0
    second = registry.update("a", state=InstanceState.RUNNING, identity={"pgid": "12"})
    assert second.revision == 2 and second.state is InstanceState.RUNNING
    registry.insert(record("b"))
    registry.close()

    again = Registry(tmp_path).open()
    assert {r.id for r in again.all()} == {"a", "b"}
    loaded = again.get("a")
    assert loaded.state is InstanceState.RUNNING and loaded.identity == {"pgid": "12"} and loaded.gpus == [0]
    assert loaded.spec == SPEC and again.revision == 3
    assert again.remove("a").id == "a" and again.get("a") is None
    assert again.revision == 4
    again.close()


def test_file_is_private(tmp_path):
    Registry(tmp_path / "data").open().close()
    mode = stat.S_IMODE(os.stat(tmp_path / "data" / REGISTRY_FILE).st_mode)
    assert mode & 0o077 == 0
    assert stat.S_IMODE(os.stat(tmp_path / "data").st_mode) & 0o077 == 0


def test_duplicate_id_conflicts(tmp_path):
    registry = Registry(tmp_path).open()
    registry.insert(record())
    with pytest.raises(InstanceConflict):
        registry.insert(record())


def test_concurrent_inserts_one_wins(tmp_path):
    registry = Registry(tmp_path).open()
    wins, losses = [], []

    def insert():
        try:
            wins.append(registry.insert(record("same")))
        except InstanceConflict:
            losses.append(1)

    threads = [threading.Thread(target=insert) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1 and len(losses) == 19


def test_events_resume_from_revision(tmp_path):
    registry = Registry(tmp_path).open()
    registry.insert(record())
    registry.update("a", state=InstanceState.STARTING)
    registry.remove("a")
    events = registry.events_since(0)
    assert [(e.revision, e.type) for e in events] == [(1, "created"), (2, "updated"), (3, "deleted")]
    assert [e.type for e in registry.events_since(2)] == ["deleted"]
    assert events[1].instance["state"] == "starting" and events[1].instance["revision"] == 2
    assert all("spec" not in e.instance for e in events)


def test_reason_never_holds_a_secret(tmp_path):
    registry = Registry(tmp_path).open()
    registry.insert(record())
    updated = registry.update("a", reason="crashed: token hf_abcdefgh rejected")
    assert "hf_abcdefgh" not in updated.reason and "******" in updated.reason
    assert all("hf_abcdefgh" not in str(e.instance) for e in registry.events_since(0))


def test_old_events_are_trimmed(tmp_path):
    registry = Registry(tmp_path, retention=100).open()
    registry.insert(record())
    for index in range(300):
        registry.update("a", reason=f"r{index}")
    assert registry.oldest_revision() > 1
    assert registry.events_since(registry.revision - 1)[0].revision == registry.revision


def test_locked_database_is_a_clear_503(tmp_path):
    registry = Registry(tmp_path).open()
    registry.insert(record())
    other = sqlite3.connect(tmp_path / REGISTRY_FILE, timeout=0.1)
    other.execute("BEGIN EXCLUSIVE")
    registry._connection().execute("PRAGMA busy_timeout=100")
    try:
        with pytest.raises(RegistryUnavailable, match="cannot be written"):
            registry.update("a", reason="x")
    finally:
        other.rollback()
        other.close()
    assert registry.get("a").reason == ""  # the cache did not move on without the file
    assert registry.update("a", reason="y").reason == "y"


class PausingConnection:
    """The registry's connection, pausing inside the event trim's transaction until ``go`` is set."""

    def __init__(self, conn):
        self._conn = conn
        self.trimming = threading.Event()
        self.go = threading.Event()

    def execute(self, sql, *args):
        result = self._conn.execute(sql, *args)
        if sql.startswith("DELETE FROM events"):
            self.trimming.set()
            assert self.go.wait(10), "the test never let the trim go on"
        return result

    def __getattr__(self, name):
        return getattr(self._conn, name)


def test_event_trim_after_a_note_never_overlaps_another_write(tmp_path):
    registry = Registry(tmp_path, retention=1).open()
    registry.insert(record())
    conn = registry._conn = PausingConnection(registry._conn)
    registry._since_trim = 99  # the next write trims
    noting = threading.Thread(target=registry.note, args=("a", "parked", {}))
    noting.start()
    assert conn.trimming.wait(10)  # the note's trim is inside its transaction now
    try:
        free = registry._lock.acquire(blocking=False)  # could another writer begin a transaction now?
        if free:
            registry._lock.release()
            registry.update("a", reason="x")  # it could: its BEGIN meets the trim's open transaction
    finally:
        conn.go.set()
        noting.join(10)
    assert not free and registry._since_trim == 0
    assert registry.update("a", reason="x").reason == "x"
    assert [e.type for e in registry.events_since(0)] == ["parked", "updated"]  # trimmed, then one more
