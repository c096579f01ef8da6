"""What a long-running worker process sets for itself when it starts serving.

* **malloc arenas**: glibc gives threads that allocate at the same time arenas of their own, up
  to eight per core, and keeps what each arena once held; a worker whose request threads come
  and go for weeks grows by those pools. :func:`limit_malloc_arenas` caps them with
  ``mallopt(M_ARENA_MAX)``. Setting ``MALLOC_ARENA_MAX`` in ``os.environ`` would do nothing:
  glibc reads it once, when the process starts (and instances would inherit it). An operator's
  own ``MALLOC_ARENA_MAX`` wins.
* **freed C memory** stays with the allocator after a burst (many requests at once on a busy
  machine) and raises RSS to that high-water mark for good; :func:`trim_malloc`, which the
  API's lifespan calls every minute, hands it back (``malloc_trim``).
* **garbage collector**: a full collection walks every object the process holds, about 100,000
  after start-up (FastAPI, pydantic, the deployers), which takes tens of milliseconds on a busy
  machine and stops every request meanwhile. :func:`freeze_startup_objects` moves what start-up
  created out of the collector's reach (``gc.freeze``); later garbage is collected as before.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os

logger = logging.getLogger(__name__)

#: Arenas the worker's threads share (glibc's default is eight per core).
ARENAS = 2
_M_ARENA_MAX = -8  # glibc's malloc.h


def _glibc() -> bool:
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError, AttributeError):
        return False


def limit_malloc_arenas(count: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas at ``count`` for threads that allocate from now on.

    Returns whether the cap was set: not on another C library, nor when ``MALLOC_ARENA_MAX``
    was given (glibc applied it at start).
    """
    if os.environ.get("MALLOC_ARENA_MAX") or not _glibc():
        return False
    try:
        done = bool(ctypes.CDLL(None).mallopt(_M_ARENA_MAX, count))
    except (OSError, AttributeError):
        done = False
    if not done:
        logger.debug("could not cap malloc arenas at %d", count)
    return done


def trim_malloc() -> bool:
    """Return free C heap memory to the system; False off glibc (nothing to do there)."""
    if not _glibc():
        return False
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True


def freeze_startup_objects() -> None:
    """Collect once, then keep every object alive now out of later collections."""
    gc.collect()
    gc.freeze()
