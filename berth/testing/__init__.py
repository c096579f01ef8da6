"""Helpers for berth's own tests and benchmarks: a tiny local model vLLM can serve, and
plans and probes for the servers started with it."""

from berth.testing.serving import CPU_ENV, free_port, serve_argv, serve_plan, wait_http_ok
from berth.testing.tiny_model import build_tiny_model, tiny_model_path

__all__ = [
    "CPU_ENV",
    "build_tiny_model",
    "free_port",
    "serve_argv",
    "serve_plan",
    "tiny_model_path",
    "wait_http_ok",
]
