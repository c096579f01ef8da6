"""RFC 9110 byte ranges, pure."""

import pytest

from berth.worker.api._log_ranges import (
    HUGE,
    MAX_READ,
    ByteRange,
    RangeError,
    parse_range,
    window,
)


@pytest.mark.parametrize("header,expected", [
    ("bytes=0-14", ByteRange(0, 14)),
    ("bytes=15-", ByteRange(15, None)),
    ("bytes=-5", ByteRange(None, 5)),
    ("Bytes = 3 - 4", ByteRange(3, 4)),
    ("bytes=0007-0009", ByteRange(7, 9)),
    ("bytes=" + "9" * 40 + "-", ByteRange(HUGE, None)),
    ("bytes=0-" + "9" * 100, ByteRange(0, HUGE)),
])
def test_parse(header, expected):
    assert parse_range(header) == expected


@pytest.mark.parametrize("header", [
    "", "bytes", "bytes=", "bytes=-", "items=0-1", "bytes=a-b", "bytes=0-1,2-3", "bytes=5-2", "bytes=-1-2",
    "bytes=0-" + "9" * 500,
])
def test_malformed(header):
    with pytest.raises(RangeError):
        parse_range(header)


def test_windows():
    first = window(ByteRange(0, 14), 30)
    assert (first.start, first.end, first.satisfiable) == (0, 14, True)
    start_end = window(ByteRange(15, None), 30)
    assert (start_end.start, start_end.end, start_end.satisfiable) == (15, 29, True)
    clipped = window(ByteRange(10, 10**9), 30)
    assert (clipped.start, clipped.end) == (10, 29)
    capped = window(ByteRange(0, None), 10 * MAX_READ)
    assert capped.end - capped.start + 1 == MAX_READ
    tail = window(ByteRange(None, 5), 30)
    assert (tail.start, tail.end) == (25, 29)
    whole = window(ByteRange(None, 100), 30)
    assert (whole.start, whole.end) == (0, 29)
    assert not window(ByteRange(30, None), 30).satisfiable
    assert not window(ByteRange(None, 0), 30).satisfiable
    assert not window(ByteRange(None, 5), 0).satisfiable
