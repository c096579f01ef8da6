"""Reading byte ranges of a log file that may still be growing: one ``pread``, so the cost
does not depend on the file's size."""

from __future__ import annotations

import os

from berth.schemas.workload import LogChunk


def read_range(path: str, start: int, end: int | None, *, missing_ok: bool = True) -> LogChunk:
    """Bytes ``start..end`` (inclusive; ``None``: to the end) of the file at ``path``.

    A missing file reads as empty when ``missing_ok``; otherwise ``FileNotFoundError`` propagates.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        if not missing_ok:
            raise
        return LogChunk(data=b"", start=start, total=0)
    try:
        total = os.fstat(fd).st_size
        stop = total if end is None else min(total, end + 1)
        data = os.pread(fd, stop - start, start) if start < stop else b""
    finally:
        os.close(fd)
    return LogChunk(data=data, start=start, total=total)


def read_tail(path: str, size: int) -> str:
    """The last ``size`` bytes of the file at ``path``, decoded leniently ("" if absent)."""
    try:
        total = os.stat(path).st_size
    except OSError:
        return ""
    return read_range(path, max(0, total - size), None).data.decode("utf-8", "replace")
