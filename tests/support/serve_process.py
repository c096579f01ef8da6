"""A real ``berth serve`` subprocess in tests: berth's own helpers (:mod:`berth.testing.serve_process`),
and the fast vLLM stand-in such a worker runs as its engine."""

from __future__ import annotations

from pathlib import Path

from berth.testing.serve_process import ServeWorker, spawn_serve, stop_group, wait_healthy

__all__ = ["FAKE_VLLM", "ServeWorker", "spawn_serve", "stop_group", "wait_healthy"]

#: ``python FAKE_VLLM MODEL --host H --port P ...``: a stand-in for ``vllm serve`` that starts in
#: milliseconds (``tests/support/fake_vllm.py``).
FAKE_VLLM = str(Path(__file__).with_name("fake_vllm.py"))
