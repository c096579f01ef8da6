"""Small JSON state files written atomically (and the records kept in them), where run
directories live by default, and a program's standard streams sent to its log file."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, fields
from typing import Any, Self


def write_json(path: str, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same directory, then
    rename), mode 0600: a reader sees the old file or the new one, never half of one."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        unlink(tmp)
        raise


def read_json(path: str) -> dict[str, Any] | None:
    """The JSON object in ``path``, or ``None`` when it is missing, torn or not an object."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def unlink(path: str) -> None:
    """Remove ``path``; one already gone is fine."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class JsonRecord:
    """A dataclass kept in a JSON state file: :meth:`to_dict` for :func:`write_json`, and
    :meth:`from_dict`, which drops the keys the class does not know (a file written by another
    version of berth reads back). Missing keys take the fields' defaults; a missing required
    one raises ``TypeError``."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def default_run_dir(kind: str) -> str:
    """``$BERTH_DATA_DIR/<kind>``, else ``$XDG_DATA_HOME/berth/<kind>`` (``~/.local/share``)."""
    data_dir = os.environ.get("BERTH_DATA_DIR")
    if not data_dir:
        xdg = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
        data_dir = os.path.join(xdg, "berth")
    return os.path.join(data_dir, kind)


def redirect_stdio(log_path: str) -> None:
    """Point this process's stdin at ``/dev/null`` and stdout/stderr at ``log_path`` (appended,
    created mode 0600), as a supervised program does before it runs its workload."""
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)
