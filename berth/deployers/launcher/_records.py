"""What the launcher daemon knows about one instance, and its state file on disk.

The daemon keeps an :class:`InstanceRecord` per instance in memory and mirrors it to
``<state_dir>/instances/<name>.json`` (written atomically) when the instance starts and when
it ends, so a later berth process can learn how an instance ended even after the daemon is
gone. Neither the environment nor the options are kept (either may hold secrets, such as
``--api-key``). Standard library only: the daemon imports it (see :mod:`berth.deployers._stdlib`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from berth.deployers._stdlib.files import JsonRecord, read_json, unlink, write_json
from berth.deployers._stdlib.names import NAME_PATTERN, check_name

INSTANCES_DIR = "instances"


@dataclass
class InstanceRecord(JsonRecord):
    """One instance as the daemon sees it; ``exit_code``/``signal`` are set once it ended."""

    name: str
    pid: int
    log: str
    created_at: float
    labels: dict[str, str] = field(default_factory=dict)
    exit_code: int | None = None
    signal: int | None = None
    finished_at: float | None = None
    stop_requested: bool = False
    #: Set once no process of the instance's group is left (engine core and workers included).
    drained: bool = False

    @property
    def alive(self) -> bool:
        return self.finished_at is None

    def ended(self, status: int, when: float) -> None:
        """Record a ``waitpid`` status."""
        self.finished_at = when
        if os.WIFSIGNALED(status):
            self.signal = os.WTERMSIG(status)
        else:
            self.exit_code = os.waitstatus_to_exitcode(status)


def state_path(state_dir: str, name: str) -> str:
    return os.path.join(state_dir, INSTANCES_DIR, f"{check_name('instance', name)}.json")


def write_record(state_dir: str, record: InstanceRecord) -> None:
    """Write the record's state file atomically."""
    path = state_path(state_dir, record.name)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    write_json(path, record.to_dict())


def read_record(state_dir: str, name: str) -> InstanceRecord | None:
    """The record in the instance's state file, or ``None`` when there is none (or it is torn)."""
    data = read_json(state_path(state_dir, name))
    try:
        return None if data is None else InstanceRecord.from_dict(data)
    except TypeError:
        return None


def list_records(state_dir: str) -> list[InstanceRecord]:
    """Every readable state file in ``state_dir``, by name."""
    try:
        entries = os.listdir(os.path.join(state_dir, INSTANCES_DIR))
    except FileNotFoundError:
        return []
    names = sorted(e[: -len(".json")] for e in entries if e.endswith(".json"))
    records = (read_record(state_dir, n) for n in names if NAME_PATTERN.match(n))
    return [r for r in records if r is not None]


def remove_record(state_dir: str, name: str) -> None:
    unlink(state_path(state_dir, name))
