"""What the launcher daemon knows about one instance, and its state file on disk.

The daemon keeps an :class:`InstanceRecord` per instance in memory and mirrors it to
``<state_dir>/instances/<name>.json`` (written atomically) when the instance starts and when
it ends, so a later berth process can learn how an instance ended even after the daemon is
gone. Neither the environment nor the options are kept (either may hold secrets, such as
``--api-key``). Standard library only.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field, fields
from typing import Any

#: Instance names are file names: letters, digits, ``.``, ``_``, ``-``; at most 200 chars.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
INSTANCES_DIR = "instances"


@dataclass
class InstanceRecord:
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InstanceRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def ended(self, status: int, when: float) -> None:
        """Record a ``waitpid`` status."""
        self.finished_at = when
        if os.WIFSIGNALED(status):
            self.signal = os.WTERMSIG(status)
        else:
            self.exit_code = os.waitstatus_to_exitcode(status)


def check_name(name: object) -> str:
    """``name`` if it is a valid instance name, else ``ValueError`` saying what is allowed."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ValueError(
            f"instance name {name!r} is not allowed; use 1-200 letters, digits, '.', '_' or '-', "
            f"starting with a letter or digit"
        )
    return name


def state_path(state_dir: str, name: str) -> str:
    return os.path.join(state_dir, INSTANCES_DIR, f"{check_name(name)}.json")


def write_record(state_dir: str, record: InstanceRecord) -> None:
    """Write the record's state file atomically (temporary file, then rename)."""
    path = state_path(state_dir, record.name)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{record.name}.", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(record.to_dict(), fh)
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


def read_record(state_dir: str, name: str) -> InstanceRecord | None:
    """The record in the instance's state file, or ``None`` when there is none (or it is torn)."""
    try:
        with open(state_path(state_dir, name)) as fh:
            return InstanceRecord.from_dict(json.load(fh))
    except (OSError, ValueError, TypeError):
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
    _unlink(state_path(state_dir, name))


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


__all__ = [
    "INSTANCES_DIR",
    "NAME_PATTERN",
    "InstanceRecord",
    "check_name",
    "list_records",
    "read_record",
    "remove_record",
    "state_path",
    "write_record",
]
