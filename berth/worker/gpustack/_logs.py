"""An instance's log as GPUStack's server and UI read it from a worker (``serveLogs``): whole, the
last ``tail`` lines, followed as it grows, or one page of lines by ``offset`` and ``limit``.

Everything is read through the manager by byte range (secrets masked, one ``pread`` per read),
so a follow costs a size check per poll, whatever the log's size.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from berth.worker.errors import InstanceNotFound
from berth.worker.instances import ServeManager


CHUNK = 1 << 20
_BACK = 64 * 1024
FOLLOW_POLL_S = 0.5


def tail_start(manager: ServeManager, instance_id: str, lines: int, total: int) -> int:
    """Byte offset where the last ``lines`` lines of a ``total``-byte log begin (0 for all: ``lines`` < 0)."""
    if lines < 0:
        return 0
    if lines == 0 or total == 0:
        return total
    end, seen = total, 0
    while end > 0:
        start = max(0, end - _BACK)
        data = manager.logs(instance_id, start, end - 1).data
        # A newline that ends the log closes the last line; it does not begin another one.
        cursor = len(data) - 1 if end == total and data.endswith(b"\n") else len(data)
        while (cursor := data.rfind(b"\n", 0, cursor)) >= 0:
            seen += 1
            if seen == lines:
                return start + cursor + 1
        end = start
    return 0


async def _read(manager: ServeManager, instance_id: str, start: int, end: int) -> AsyncIterator[bytes]:
    while start < end:
        stop = min(end, start + CHUNK)
        chunk = await asyncio.to_thread(manager.logs, instance_id, start, stop - 1)
        if not chunk.data:
            return
        yield chunk.data
        start += len(chunk.data)


def _size(manager: ServeManager, instance_id: str) -> int | None:
    try:
        return manager.log_size(instance_id)
    except InstanceNotFound:
        return None


async def follow_log(manager: ServeManager, instance_id: str, tail: int, follow: bool) -> AsyncIterator[bytes]:
    """The log from ``tail`` lines before its end (all of it when ``tail`` < 0), then, with
    ``follow``, what is appended until the instance is deleted (or the client goes away)."""
    total = await asyncio.to_thread(manager.log_size, instance_id)
    start = await asyncio.to_thread(tail_start, manager, instance_id, tail, total)
    async for data in _read(manager, instance_id, start, total):
        yield data
    position = total
    while follow:
        await asyncio.sleep(FOLLOW_POLL_S)
        size = await asyncio.to_thread(_size, manager, instance_id)
        if size is None:
            return
        if size < position:  # the log was replaced (a restart): start over
            position = 0
        async for data in _read(manager, instance_id, position, size):
            position += len(data)
            yield data


@dataclass(frozen=True, slots=True)
class LineWindow:
    data: bytes
    offset: int
    line_count: int
    total_lines: int


def line_window(manager: ServeManager, instance_id: str, offset: int, limit: int, cap: int = 64 * CHUNK) -> LineWindow:
    """Lines ``offset .. offset+limit-1`` (0-based) of the log's first ``cap`` bytes."""
    total = manager.log_size(instance_id)
    data = manager.logs(instance_id, 0, min(total, cap) - 1).data if total else b""
    lines = data.splitlines(keepends=True)
    page = lines[offset:offset + limit]
    return LineWindow(b"".join(page), min(offset, len(lines)), len(page), len(lines))
