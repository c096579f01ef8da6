"""Helpers for berth's own tests and benchmarks: a tiny local model vLLM can serve."""

from berth.testing.tiny_model import build_tiny_model, tiny_model_path

__all__ = ["build_tiny_model", "tiny_model_path"]
