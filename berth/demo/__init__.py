"""What ``berth demo`` does beyond rendering: a real small model prepared offline, a local
worker run as a child process, and the steps that drive it through its API."""

from __future__ import annotations

from berth.demo.model import DEMO_MODEL_NAME, DemoModelError, default_cache_dir, prepare_demo_model
from berth.demo.run import DemoError, DemoOptions, DemoResult, run_demo, stop_kept_worker

__all__ = [
    "DEMO_MODEL_NAME",
    "DemoError",
    "DemoModelError",
    "DemoOptions",
    "DemoResult",
    "default_cache_dir",
    "prepare_demo_model",
    "run_demo",
    "stop_kept_worker",
]
