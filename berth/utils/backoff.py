"""One back-off rule for all of berth.

The delay before try number ``attempt + 1`` (``attempt`` failures so far, counting from 0) is

    ``min(maximum, initial * factor ** attempt)``

and, when ``jitter=(low, high)`` is given, that delay times a random factor drawn uniformly from
``[low, high]``. :func:`backoff_delay` is the pure formula; :class:`Backoff` counts the failures
and applies the jitter.

The callers and the parameters that keep the delays they had before this module:

* the client's retries (``transport.Transport``): ``initial=backoff`` (0.1 s), ``maximum=5``,
  ``jitter=(0.5, 1.0)``;
* the client's log forwarder (``_logs.LogForwarder``): ``initial=0.25``, ``maximum=5``;
* ``berth --worker URL logs -f`` (``cli._remote_follow``): while the worker does not answer
  ``initial=0.5``, ``maximum=5``; while the log does not grow ``initial=0.25``, ``maximum=2``,
  ``factor=1.5``;
* the worker's restarts (``lifecycle.backoff_delay(restarts, initial, maximum)``):
  ``backoff_delay(restarts, initial, maximum)``;
* the GPUStack agent (``gpustack.client.Backoff(initial=, maximum=)``):
  ``Backoff(initial, maximum, jitter=(0.8, 1.2))``.
"""

from __future__ import annotations

import random

__all__ = ["Backoff", "backoff_delay"]


def backoff_delay(attempt: int, initial: float, maximum: float, factor: float = 2.0) -> float:
    """Seconds to wait after ``attempt`` failures (0: after the first): ``min(maximum,
    initial * factor ** attempt)``. A ``maximum`` below ``initial`` caps every delay at
    ``maximum``; a delay too large for a float is ``maximum``."""
    if attempt < 0:
        raise ValueError(f"attempt must be 0 or more, got {attempt}")
    if initial < 0 or maximum < 0:
        raise ValueError(f"initial and maximum must be 0 or more, got {initial} and {maximum}")
    if factor < 1:
        raise ValueError(f"factor must be 1 or more, got {factor}")
    if initial == 0:
        return 0.0
    try:
        grown = initial * float(factor) ** attempt
    except OverflowError:
        return float(maximum)
    return float(min(maximum, grown))


class Backoff:
    """Delays by :func:`backoff_delay` for the failures counted so far: :meth:`next` after each
    failure, :meth:`reset` after a success.

    ``jitter=(low, high)`` multiplies each delay by a random factor in ``[low, high]`` (off by
    default, so delays are exact); ``rng`` is the random source (a ``random.Random``, for tests).
    """

    def __init__(self, initial: float = 1.0, maximum: float = 30.0, factor: float = 2.0, *,
                 jitter: tuple[float, float] | None = None, rng: random.Random | None = None) -> None:
        backoff_delay(0, initial, maximum, factor)  # the same checks, at construction
        if jitter is not None and not 0 <= jitter[0] <= jitter[1]:
            raise ValueError(f"jitter must be (low, high) with 0 <= low <= high, got {jitter}")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self._random = rng or random
        self._failures = 0

    def __repr__(self) -> str:
        return (f"Backoff(initial={self.initial}, maximum={self.maximum}, factor={self.factor}, "
                f"jitter={self.jitter}, failures={self._failures})")

    @property
    def failures(self) -> int:
        """Failures counted since the start or the last :meth:`reset`."""
        return self._failures

    def delay(self, attempt: int) -> float:
        """The delay after ``attempt`` failures, jitter applied; counts nothing."""
        delay = backoff_delay(attempt, self.initial, self.maximum, self.factor)
        if self.jitter is None:
            return delay
        return delay * self._random.uniform(*self.jitter)

    def next(self) -> float:
        """Count one more failure; the delay to wait before trying again."""
        delay = self.delay(self._failures)
        self._failures += 1
        return delay

    def reset(self) -> None:
        """A success: the next delay is ``initial`` again."""
        self._failures = 0
