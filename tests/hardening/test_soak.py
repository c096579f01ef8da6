"""The soak (``bench/soak.py``) cut down: 30 create/delete cycles under 10 log followers and two
watch streams against one ``berth serve``. It asserts that nothing leaks (processes, listening
ports, file descriptors, gross memory growth) and that every follower read every byte with no
transport error; it asserts no timing (the bench prints those; the machine is shared)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.subprocess  # starts processes: not in make test-unit

BENCH = Path(__file__).resolve().parents[2] / "bench" / "soak.py"


def _soak() -> ModuleType:
    spec = importlib.util.spec_from_file_location("berth_bench_soak", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_quick_soak_leaks_nothing():
    result = _soak().run_soak(cycles=30, followers=10, concurrency=4, idle_cycles=5, samples=5)
    assert result.cycles == 30 and result.failed_cycles == 0, result.errors
    assert result.leaked_processes == [] and result.leaked_ports == []
    assert result.fds_end <= result.fds_warm + 2, (result.fds_warm, result.fds_end)
    assert result.rss_kib_end - result.rss_kib_warm < 32 * 1024, "worker memory grew by 32 MiB or more"
    assert result.followers_complete and result.follower_bytes > 0
    assert result.follower_errors == 0, result.errors
    assert result.watch_events > 0
    assert [cycles for cycles, _, _ in result.rss_samples] == [6, 12, 18, 24, 30]
    assert set(result.latency_ms) == set(result.idle_latency_ms) == {"create", "delete", "list", "status"}


def test_slope_reads_the_last_half():
    slope = _soak().slope_per_1000
    growing_then_flat = [(0, 100 * 1024, 0.0), (500, 120 * 1024, 0.0), (1000, 130 * 1024, 0.0),
                         (1500, 130 * 1024, 0.0), (2000, 130 * 1024, 0.0)]
    assert slope(growing_then_flat) == 0.0
    steady = [(c, 100 * 1024 + c, 0.0) for c in range(0, 2001, 250)]  # 1 KiB per cycle
    assert abs(slope(steady) - 1000 / 1024) < 1e-9
    assert slope([(10, 1024, 0.0)]) == 0.0
