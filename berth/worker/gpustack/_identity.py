"""This worker's identity in a GPUStack cluster, kept durably so a restart re-joins as the same
worker: the id and UUID GPUStack assigned and the per-worker token it returned.

One JSON file, ``<data_dir>/gpustack/identity.json``, written atomically, mode ``0600`` in a
``0700`` directory (it holds a credential). It belongs to one server URL; pointed at another
server, berth registers afresh.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

IDENTITY_FILE = "identity.json"


@dataclass(frozen=True, slots=True)
class Identity:
    server_url: str
    worker_id: int
    worker_uuid: str
    worker_name: str
    token: str

    def __repr__(self) -> str:  # the token stays out of logs and tracebacks
        return f"Identity(server_url={self.server_url!r}, worker_id={self.worker_id}, worker_name={self.worker_name!r})"


def _path(data_dir: Path) -> Path:
    return Path(data_dir) / "gpustack" / IDENTITY_FILE


def load_identity(data_dir: Path, server_url: str) -> Identity | None:
    """The identity saved for ``server_url``, or None (none saved, another server, unreadable)."""
    try:
        data = json.loads(_path(data_dir).read_text(encoding="utf-8"))
        identity = Identity(**data)
    except (OSError, ValueError, TypeError):
        return None
    return identity if identity.server_url == server_url else None


def save_identity(data_dir: Path, identity: Identity) -> None:
    path = _path(data_dir)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, scratch = tempfile.mkstemp(prefix=".identity-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(asdict(identity), out)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(scratch, 0o600)
        os.replace(scratch, path)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise
