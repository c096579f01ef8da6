"""RFC 9110 byte ranges for instance logs, as the launcher API specifies them (plus suffixes).

* no ``Range``: 200 with the first 1 MiB;
* ``bytes=S-E`` / ``bytes=S-``: 206 with ``Content-Range: bytes S-E'/TOTAL``, at most 1 MiB
  from ``S`` (``E`` past the end is clipped);
* ``bytes=-N``: 206 with the last ``N`` bytes (at most 1 MiB, from the start of that tail);
* a start at or past the end (or an empty log, or ``-0``): 416 with ``Content-Range: bytes */TOTAL``
  and an empty body;
* anything else (other units, several ranges, ``E < S``, junk): 400.

Reads go through the deployer by offset, so a read costs the same whatever the log's size.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_READ = 1 << 20
#: Numbers longer than 18 digits are read as this (beyond any log), never parsed in full.
HUGE = 10**18
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)
_MAX_HEADER = 200


class RangeError(ValueError):
    """A malformed or unsupported ``Range`` header (400)."""


@dataclass(frozen=True, slots=True)
class ByteRange:
    """``first``-``last`` inclusive; ``first`` None means a suffix of ``last`` bytes."""

    first: int | None
    last: int | None


@dataclass(frozen=True, slots=True)
class Window:
    """What to read: ``start``..``end`` inclusive, or unsatisfiable (416)."""

    start: int
    end: int
    satisfiable: bool = True


def _number(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return HUGE if len(digits) > 18 else int(digits)


def parse_range(header: str) -> ByteRange:
    """Parse one ``bytes=`` range; :class:`RangeError` names what is wrong."""
    if len(header) > _MAX_HEADER:
        raise RangeError("Range header is too long; send one range such as 'bytes=0-1048575'")
    match = _RANGE.match(header)
    if match is None:
        raise RangeError(
            f"Range {header[:60]!r} is not supported; use 'bytes=START-END', 'bytes=START-' or 'bytes=-N'"
        )
    first_text, last_text = match.groups()
    if not first_text and not last_text:
        raise RangeError("Range 'bytes=-' names no bytes; use 'bytes=START-END', 'bytes=START-' or 'bytes=-N'")
    if not first_text:
        return ByteRange(first=None, last=_number(last_text))
    first = _number(first_text)
    last = _number(last_text) if last_text else None
    if last is not None and last < first:
        raise RangeError(f"Range end {last} is before its start {first}")
    return ByteRange(first=first, last=last)


def window(byte_range: ByteRange, total: int, cap: int = MAX_READ) -> Window:
    """The bytes to return for ``byte_range`` of a log of ``total`` bytes, at most ``cap``."""
    if byte_range.first is None:
        length = byte_range.last or 0
        if length == 0 or total == 0:
            return Window(0, -1, satisfiable=False)
        start = max(0, total - length)
        return Window(start, min(total - 1, start + cap - 1))
    start = byte_range.first
    if start >= total:
        return Window(start, start - 1, satisfiable=False)
    end = total - 1 if byte_range.last is None else min(byte_range.last, total - 1)
    return Window(start, min(end, start + cap - 1))
