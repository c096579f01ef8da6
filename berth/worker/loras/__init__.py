"""Runtime LoRA adapters: the rules for names and paths, every name an instance answers to, what its
record says is loaded, and the worker-wide claims that keep adapter names unique."""

from __future__ import annotations

from berth.worker.loras._claims import NameClaims
from berth.worker.loras._names import adapter_names, lora_names, served_model_names
from berth.worker.loras._rules import (
    RUNTIME_ENV,
    EngineRefused,
    LoraLoad,
    check_lora_name,
    check_lora_path,
    runtime_lora_names,
    runtime_loras,
    runtime_refusal,
    serving,
    with_lora,
    without_lora,
)

__all__ = [
    "RUNTIME_ENV",
    "EngineRefused",
    "LoraLoad",
    "NameClaims",
    "adapter_names",
    "check_lora_name",
    "check_lora_path",
    "lora_names",
    "runtime_lora_names",
    "runtime_loras",
    "runtime_refusal",
    "served_model_names",
    "serving",
    "with_lora",
    "without_lora",
]
