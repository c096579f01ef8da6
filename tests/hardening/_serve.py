"""A real ``berth serve`` for the hardening suites, and what they check after each fault: no
process, listening port or file descriptor left behind, read from ``/proc``.

The worker runs in a session of its own with the process deployer and the fast vLLM stand-in as
its entrypoint; :meth:`ServeProcess.kill9` kills the worker alone (its instances live on, as
they would on a node), :meth:`ServeProcess.start` brings it back over the same data dir.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from berth.deployers._stdlib.proc import mentioning
from berth.utils.ports import parse_port_range
from tests.support.ports import free_port, free_range
from tests.support.serve_process import ServeWorker


#: The stand-in with fault options (``--ignore-term``); what every ServeProcess runs as vLLM.
STAND_IN = [sys.executable, str(Path(__file__).with_name("_stand_in.py"))]

__all__ = [
    "STAND_IN", "ServeProcess", "fd_count", "free_block", "free_port", "kill_strays", "listening_ports",
    "listening_ports_of", "rss_kib", "stray_processes",
]


def _listening() -> list[tuple[int, str]]:
    """(port, socket inode) of every listening TCP socket (IPv4 and IPv6)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                found.append((int(fields[1].rsplit(":", 1)[1], 16), fields[9]))
    return found


def listening_ports(low: int, high: int) -> set[int]:
    """Ports in ``low..high`` that something on this machine listens on."""
    return {port for port, _ in _listening() if low <= port <= high}


def listening_ports_of(pids: set[int]) -> set[int]:
    """Ports the processes ``pids`` listen on (by the socket inodes among their fds)."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            names = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for name in names:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{name}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    return {port for port, inode in _listening() if inode in inodes}


def free_block(size: int = 50) -> tuple[int, int]:
    """(first, last) of ``size`` free ports in a row, below the ephemeral range (:func:`free_range`)."""
    return parse_port_range(free_range(size))


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def stray_processes(data_dir: Path, *, exclude: set[int] | None = None) -> set[int]:
    """Live processes started for this data dir (instances, their shims), the worker excluded."""
    return {pid for pid in mentioning(str(data_dir.resolve())) if pid not in (exclude or set())
            and not _is_zombie(pid)}


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


class ServeProcess(ServeWorker):
    """One ``berth serve`` over ``root/data`` (process deployer, the stand-in as vLLM, its own port
    block); its output goes to ``root/serve.log``; :meth:`kill9` kills the worker alone."""

    def __init__(self, root: Path, extra_env: dict[str, str] | None = None, token: str | None = None) -> None:
        self.ports = free_block()
        env = {"BERTH_DEPLOYER": "process", "BERTH_ENTRYPOINT": json.dumps(STAND_IN), "BERTH_POLL_INTERVAL": "0.1",
               "BERTH_STOP_TIMEOUT": "5", "BERTH_INSTANCE_PORT_RANGE": f"{self.ports[0]}-{self.ports[1]}",
               "BERTH_LOG_LEVEL": "debug", **(extra_env or {}), **({"BERTH_API_TOKEN": token} if token else {})}
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        super().__init__(root, env, headers=headers)
        self.leftovers: set[int] = set()
        self.leftover_ports: set[int] = set()

    def close(self) -> set[int]:  # type: ignore[override]
        """Delete every instance, stop the worker, SIGKILL anything left; returns what was left
        (tests assert it is empty, after the cleanup has happened either way)."""
        super().close()
        left = stray_processes(self.data_dir)
        self.leftover_ports = listening_ports_of(left)
        self.leftovers = kill_strays(self.data_dir)
        return self.leftovers

    def get(self, instance_id: str) -> dict[str, Any]:
        return self.http.get(f"/v2/vllm/instances/{instance_id}").json()


def kill_strays(data_dir: Path) -> set[int]:
    """Last resort after a failed test: SIGKILL what is left, return what was."""
    left = stray_processes(data_dir)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left
