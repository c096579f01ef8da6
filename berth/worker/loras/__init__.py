"""Runtime LoRA adapters: the rules for names and paths, and what an instance's record says is loaded."""

from __future__ import annotations

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
    taken_by,
    with_lora,
    without_lora,
)

__all__ = [
    "EngineRefused",
    "LoraLoad",
    "RUNTIME_ENV",
    "check_lora_name",
    "check_lora_path",
    "runtime_lora_names",
    "runtime_loras",
    "runtime_refusal",
    "serving",
    "taken_by",
    "with_lora",
    "without_lora",
]
