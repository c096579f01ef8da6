"""An instance's log as GPUStack's server and UI read it from a worker (``serveLogs``): whole, the
last ``tail`` lines, followed as it grows, or one page of lines by ``offset`` and ``limit``.

Everything is read through the manager by byte range (secrets masked, one ``pread`` per read),
so a follow costs a size check per poll, whatever the log's size. Every read runs in a thread
under the app's log-read limiter (``limiter``: the one the API's log endpoints use, see
:mod:`berth.worker.api`), so GPUStack's readers and berth's own share one bound. A page is read
:data:`CHUNK` by :data:`CHUNK` and keeps only its own lines (at most :data:`PAGE_BYTES`): a
request holds about a chunk and its page in memory, never the whole log.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread

from berth.worker.errors import InstanceNotFound
from berth.worker.instances import ServeManager

CHUNK = 1 << 20
_BACK = 64 * 1024
FOLLOW_POLL_S = 0.5
#: Bytes of the log a page scans (its lines are counted within them).
PAGE_SCAN = 64 * CHUNK
#: Bytes one page answers at most (lines past them wait for the next page).
PAGE_BYTES = 8 * CHUNK


async def _in_thread(limiter: anyio.CapacityLimiter | None, call: Callable[..., Any], *args: Any) -> Any:
    return await anyio.to_thread.run_sync(call, *args, limiter=limiter, abandon_on_cancel=True)


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


async def _read(manager: ServeManager, instance_id: str, start: int, end: int,
                limiter: anyio.CapacityLimiter | None) -> AsyncIterator[bytes]:
    while start < end:
        stop = min(end, start + CHUNK)
        chunk = await _in_thread(limiter, manager.logs, instance_id, start, stop - 1)
        if not chunk.data:
            return
        yield chunk.data
        start += len(chunk.data)


def _size(manager: ServeManager, instance_id: str) -> int | None:
    try:
        return manager.log_size(instance_id)
    except InstanceNotFound:
        return None


async def follow_log(manager: ServeManager, instance_id: str, tail: int, follow: bool,
                     limiter: anyio.CapacityLimiter | None = None) -> AsyncIterator[bytes]:
    """The log from ``tail`` lines before its end (all of it when ``tail`` < 0), then, with
    ``follow``, what is appended until the instance is deleted (or the client goes away)."""
    total = await _in_thread(limiter, manager.log_size, instance_id)
    start = await _in_thread(limiter, tail_start, manager, instance_id, tail, total)
    async for data in _read(manager, instance_id, start, total, limiter):
        yield data
    position = total
    while follow:
        await asyncio.sleep(FOLLOW_POLL_S)
        size = await _in_thread(limiter, _size, manager, instance_id)
        if size is None:
            return
        if size < position:  # the log was replaced (a restart): start over
            position = 0
        async for data in _read(manager, instance_id, position, size, limiter):
            position += len(data)
            yield data


@dataclass(frozen=True, slots=True)
class LineWindow:
    data: bytes
    offset: int
    line_count: int
    total_lines: int


@dataclass(slots=True)
class _Page:
    """Lines ``offset .. offset+limit-1`` gathered as the log is scanned; every line counted."""

    offset: int
    limit: int
    lines: list[bytes] = field(default_factory=list)
    size: int = 0
    seen: int = 0
    full: bool = False

    def add(self, line: bytes) -> None:
        if self.offset <= self.seen < self.offset + self.limit and not self.full:
            if self.lines and self.size + len(line) > PAGE_BYTES:
                self.full = True  # the rest waits for the next page
            else:
                self.lines.append(line)
                self.size += len(line)
        self.seen += 1

    def window(self) -> LineWindow:
        return LineWindow(b"".join(self.lines), min(self.offset, self.seen), len(self.lines), self.seen)


def _scan(page: _Page, carry: bytes, data: bytes) -> bytes:
    """Add the complete lines of ``carry + data`` to ``page``; the unfinished last one is returned
    (a line ending in ``\r`` too: its ``\n`` may begin the next chunk)."""
    lines = (carry + data).splitlines(keepends=True)
    rest = lines.pop() if lines and not lines[-1].endswith(b"\n") else b""
    for line in lines:
        page.add(line)
    return rest


def line_window(manager: ServeManager, instance_id: str, offset: int, limit: int, cap: int = PAGE_SCAN) -> LineWindow:
    """Lines ``offset .. offset+limit-1`` (0-based) of the log's first ``cap`` bytes, read a chunk
    at a time; at most :data:`PAGE_BYTES` of them (always at least one line)."""
    total = min(manager.log_size(instance_id), cap)
    page, carry, position = _Page(offset, limit), b"", 0
    while position < total:
        data = manager.logs(instance_id, position, min(total, position + CHUNK) - 1).data
        if not data:
            break
        position += len(data)
        carry = _scan(page, carry, data)
    if carry:
        page.add(carry)
    return page.window()


async def read_page(manager: ServeManager, instance_id: str, offset: int, limit: int,
                    limiter: anyio.CapacityLimiter | None = None) -> LineWindow:
    """:func:`line_window` in a thread under ``limiter`` (the app's log-read limiter)."""
    return await _in_thread(limiter, line_window, manager, instance_id, offset, limit)
