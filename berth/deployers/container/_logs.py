"""Byte ranges and following over container logs, which engines hand out whole or as a stream.

Docker and Podman keep no byte offsets in their logs API (only line counts and timestamps), so a
byte range is cut from the whole log: each read costs one transfer of the full log, O(size), and
the deployer keeps the log of a container that has exited (it no longer grows) in a small cache.
Following uses the engine's own stream, skipping the first ``start`` bytes once.
"""

from __future__ import annotations

import queue
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator

from berth.schemas.workload import LogChunk

#: How many exited containers' logs the cache keeps.
CACHE_ENTRIES = 8
_END = object()


def to_bytes(output: object) -> bytes:
    """Whatever an engine returned for a log (bytes, str, chunks) as bytes."""
    if output is None:
        return b""
    if isinstance(output, bytes | bytearray):
        return bytes(output)
    if isinstance(output, str):
        return output.encode("utf-8", errors="replace")
    return b"".join(to_bytes(part) for part in output)  # type: ignore[attr-defined]


def slice_log(data: bytes, start: int = 0, end: int | None = None) -> LogChunk:
    """Bytes ``start..end`` (inclusive) of ``data``; past the end gives an empty chunk."""
    if start < 0:
        raise ValueError(f"log start must be >= 0, got {start}")
    if end is not None and end < start:
        return LogChunk(data=b"", start=start, total=len(data))
    stop = len(data) if end is None else min(len(data), end + 1)
    return LogChunk(data=data[start:stop], start=start, total=len(data))


def last_lines(data: bytes, count: int = 10, width: int = 2000) -> str:
    """The last ``count`` lines of a log as text, at most ``width`` characters."""
    lines = data.decode("utf-8", errors="replace").rstrip("\n").splitlines()[-count:]
    return "\n".join(lines)[-width:]


class LogCache:
    """Logs of exited containers by token (an engine id never comes back with other content)."""

    def __init__(self, entries: int = CACHE_ENTRIES) -> None:
        self._entries = entries
        self._data: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, token: str) -> bytes | None:
        with self._lock:
            data = self._data.get(token)
            if data is not None:
                self._data.move_to_end(token)
            return data

    def put(self, token: str, data: bytes) -> None:
        with self._lock:
            self._data[token] = data
            self._data.move_to_end(token)
            while len(self._data) > self._entries:
                self._data.popitem(last=False)


def skip_bytes(chunks: Iterable[bytes], start: int) -> Iterator[bytes]:
    """``chunks`` without their first ``start`` bytes."""
    left = start
    for chunk in chunks:
        if left >= len(chunk):
            left -= len(chunk)
            continue
        yield chunk[left:]
        left = 0


def _pump(stream: Iterable[object], out: queue.Queue[object]) -> None:
    try:
        for chunk in stream:
            out.put(to_bytes(chunk))
    except Exception as exc:  # noqa: BLE001 - handed to the reader, which re-raises it
        out.put(exc)
    finally:
        out.put(_END)


def _close(stream: object) -> None:
    close = getattr(stream, "close", None)
    if callable(close):
        try:
            close()
        except Exception:  # noqa: BLE001 - closing a dead stream may fail; nothing to do
            pass


def follow_stream(
    open_stream: Callable[[], Iterable[object]],
    *,
    start: int = 0,
    poll: float = 0.25,
    stop: threading.Event | None = None,
) -> Iterator[bytes]:
    """Yield an engine's follow stream from byte ``start`` until it ends or ``stop`` is set.

    The stream is read on a daemon thread so that ``stop`` is honoured within ``poll`` seconds
    even while the container is silent; stopping closes the stream, which ends that thread.
    """
    stream = open_stream()
    chunks: queue.Queue[object] = queue.Queue()
    reader = threading.Thread(target=_pump, args=(stream, chunks), daemon=True, name="berth-log-follow")
    reader.start()
    try:
        yield from skip_bytes(_drain(chunks, poll, stop), start)
    finally:
        _close(stream)
        reader.join(timeout=poll * 4)


def _drain(chunks: queue.Queue[object], poll: float, stop: threading.Event | None) -> Iterator[bytes]:
    while stop is None or not stop.is_set():
        try:
            item = chunks.get(timeout=poll)
        except queue.Empty:
            continue
        if item is _END:
            return
        if isinstance(item, BaseException):
            raise item
        yield item  # type: ignore[misc]
