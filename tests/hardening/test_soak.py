"""The soak (``bench/soak.py``) cut down: 30 create/delete cycles under 10 log followers and two
watch streams against one ``berth serve``. It asserts that nothing leaks (processes, listening
ports, file descriptors, gross memory growth) and that every follower read every byte; it asserts
no timing (the bench prints those)."""

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
    result = _soak().run_soak(cycles=30, followers=10, concurrency=4)
    assert result.cycles == 30 and result.failed_cycles == 0, result.errors
    assert result.leaked_processes == [] and result.leaked_ports == []
    assert result.fds_end <= result.fds_warm + 2, (result.fds_warm, result.fds_end)
    assert result.rss_kib_end - result.rss_kib_warm < 32 * 1024, "worker memory grew by 32 MiB or more"
    assert result.followers_complete and result.follower_bytes > 0
    assert result.watch_events > 0
