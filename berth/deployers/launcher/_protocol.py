"""The launcher daemon's wire protocol: one JSON object per line over a Unix socket.

A client connects, writes one request line and reads one reply line; every connection carries
exactly one exchange. Requests name an ``op``:

* ``ping`` -> ``{"pid": daemon pid, "instances": n}``
* ``create`` (``name``, ``args``, ``env``, ``log``, ``cwd``, ``labels``) -> the instance record
* ``status`` (``name``) -> the record; ``list`` -> ``{"instances": [records]}``
* ``stop`` (``name``, ``timeout``) -> the record (SIGTERM sent; SIGKILL follows after timeout)
* ``remove`` (``name``) -> the last record, forgotten (state file and log deleted)
* ``shutdown`` (``timeout``) -> ``{"stopping": n}``; the daemon stops everything and exits

A reply is ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": KIND, "message": ...}``
with ``KIND`` one of :data:`ERROR_KINDS`. Standard library only: the daemon, which runs as a
plain script, imports this module as a sibling.
"""

from __future__ import annotations

import json
import socket
from typing import Any

#: File name of the daemon's socket inside its state directory.
SOCKET_NAME = "launcher.sock"
#: Error kinds a reply may carry.
ERROR_KINDS = ("invalid", "exists", "not_found", "unsupported", "internal")
#: Largest reply a client accepts (a list of many instances stays far below this).
MAX_LINE = 16 << 20


class ProtocolError(Exception):
    """The daemon answered with an error; ``kind`` is one of :data:`ERROR_KINDS`."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def encode(message: dict[str, Any]) -> bytes:
    """One message as a JSON line."""
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """One JSON line as a message (a dict); anything else raises ``ValueError``."""
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError(f"expected a JSON object, got {type(message).__name__}")
    return message


def ok(result: Any) -> dict[str, Any]:
    return {"ok": True, "result": result}


def error(kind: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": kind if kind in ERROR_KINDS else "internal", "message": message}


def unwrap(reply: dict[str, Any]) -> Any:
    """The result of a reply, or :class:`ProtocolError` for an error reply."""
    if reply.get("ok"):
        return reply.get("result")
    raise ProtocolError(str(reply.get("error", "internal")), str(reply.get("message", "")))


def read_line(sock: socket.socket, limit: int = MAX_LINE) -> bytes:
    """Bytes up to the first newline (excluded); ``ConnectionError`` if the peer hangs up first."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the launcher daemon closed the connection without replying")
        head, newline, _ = chunk.partition(b"\n")
        chunks.append(head)
        size += len(head)
        if newline:
            return b"".join(chunks)
        if size > limit:
            raise ConnectionError(f"reply longer than {limit} bytes")


def call(socket_path: str, request: dict[str, Any], *, timeout: float = 30.0) -> Any:
    """Send one request to the daemon at ``socket_path``; return its result.

    Raises ``OSError`` when the daemon cannot be reached and :class:`ProtocolError` when it
    answers with an error.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(socket_path)
        sock.sendall(encode(request))
        return unwrap(decode(read_line(sock)))
