"""berth.utils.backoff: the one back-off formula, and the delays each former rule had."""

from __future__ import annotations

import random

import pytest

from berth.utils.backoff import Backoff, backoff_delay


def test_delay_doubles_from_initial_up_to_the_cap():
    assert [backoff_delay(n, 0.25, 5.0) for n in range(7)] == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


def test_factor_and_a_cap_below_initial():
    assert [backoff_delay(n, 0.25, 2.0, factor=1.5) for n in range(3)] == [0.25, 0.375, 0.5625]
    assert backoff_delay(0, 10.0, 5.0) == 5.0
    assert backoff_delay(3, 0.0, 5.0) == 0.0


def test_huge_attempts_stay_at_the_cap():
    assert backoff_delay(10_000, 0.1, 7.0) == 7.0
    assert backoff_delay(10_000, 1e-300, 7.0, factor=1.0) == 1e-300


@pytest.mark.parametrize("args", [(-1, 1.0, 2.0), (0, -1.0, 2.0), (0, 1.0, -2.0)])
def test_nonsense_is_refused(args):
    with pytest.raises(ValueError):
        backoff_delay(*args)
    with pytest.raises(ValueError, match="factor"):
        backoff_delay(0, 1.0, 2.0, factor=0.5)


def test_backoff_counts_failures_and_resets():
    backoff = Backoff(0.5, 5.0)
    assert [backoff.next() for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 5.0]
    assert backoff.failures == 5
    backoff.reset()
    assert backoff.failures == 0 and backoff.next() == 0.5


def test_backoff_defaults_are_the_gpustack_agents():
    backoff = Backoff()
    assert [backoff.next() for _ in range(7)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_jitter_stays_in_its_range_and_is_off_by_default():
    rng = random.Random(7)
    backoff = Backoff(0.1, 5.0, jitter=(0.5, 1.0), rng=rng)
    for attempt in range(8):
        base = backoff_delay(attempt, 0.1, 5.0)
        assert 0.5 * base <= backoff.next() <= base
    exact = Backoff(0.1, 5.0)
    assert exact.delay(3) == exact.delay(3) == 0.8
    with pytest.raises(ValueError, match="jitter"):
        Backoff(jitter=(1.2, 0.8))


def test_the_former_rules_map_one_to_one():
    """lifecycle.backoff_delay, gpustack's Backoff (without its jitter), the log forwarder and
    the remote follow computed these; the shared rule gives the same."""
    def lifecycle(restarts, initial, maximum):
        return min(maximum, initial * (2 ** min(restarts, 32)))

    def follow_idle(n):
        idle = 0.25
        for _ in range(n):
            idle = min(idle * 1.5, 2.0)
        return idle

    for restarts in range(40):
        assert backoff_delay(restarts, 2.0, 300.0) == lifecycle(restarts, 2.0, 300.0)
    idle = Backoff(0.25, 2.0, factor=1.5)
    assert [idle.next() for _ in range(10)] == [follow_idle(n) for n in range(10)]
