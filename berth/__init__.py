"""berth: plan, run and serve vLLM instances on a GPU node."""

__version__ = "0.1.0"

__all__ = ["__version__"]
