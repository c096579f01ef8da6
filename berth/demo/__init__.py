"""What ``berth demo`` needs beyond the CLI: a real small model, prepared offline."""

from __future__ import annotations

from berth.demo.model import DEMO_MODEL_NAME, DemoModelError, default_cache_dir, prepare_demo_model

__all__ = ["DEMO_MODEL_NAME", "DemoModelError", "default_cache_dir", "prepare_demo_model"]
