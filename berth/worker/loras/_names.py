"""Every name a request may use for an instance: its served names, the LoRA adapters its spec
loads (``--lora-modules``, GPUStack's ``lora_list``) and those loaded at run time."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from berth.utils.args import flatten_to_argv, is_parameter_key
from berth.worker.loras._rules import runtime_lora_names
from berth.worker.store import InstanceRecord


def _lora_module_names(values: Iterable[str]) -> list[str]:
    """Adapter names in ``--lora-modules`` values: ``name=path`` or ``{"name": ..., "path": ...}``."""
    names: list[str] = []
    for value in values:
        text = value.strip()
        if text.startswith("{"):
            try:
                name = json.loads(text).get("name")
            except (ValueError, AttributeError):
                continue
            if isinstance(name, str) and name:
                names.append(name)
        elif "=" in text:
            names.append(text.partition("=")[0].strip())
    return [name for name in names if name]


def _option_values(argv: list[str], option: str) -> list[str]:
    values: list[str] = []
    for index, token in enumerate(argv):
        if token.startswith(option + "="):
            values.append(token.partition("=")[2])
        elif token == option:
            for value in argv[index + 1:]:
                if is_parameter_key(value):
                    break
                values.append(value)
    return values


def lora_names(spec: Mapping[str, Any]) -> list[str]:
    """The LoRA adapters an instance's spec loads: ``--lora-modules`` and GPUStack's ``lora_list``."""
    model = spec.get("model") or {}
    try:
        argv = flatten_to_argv(model.get("backend_parameters") or [])
    except ValueError:
        argv = []
    names = _lora_module_names(_option_values(argv, "--lora-modules"))
    for entry in model.get("lora_list") or []:
        if isinstance(entry, Mapping) and isinstance(entry.get("lora_name"), str):
            names.append(entry["lora_name"])
    return names


def adapter_names(record: InstanceRecord) -> list[str]:
    """The instance's LoRA adapters: those its spec loads, then those loaded at run time."""
    return lora_names(record.spec) + runtime_lora_names(record)


def served_model_names(record: InstanceRecord) -> list[str]:
    """Every name a request may use for this instance: served names first, then LoRA adapters."""
    served = list(record.endpoints.served_names)
    return served + [name for name in dict.fromkeys(adapter_names(record)) if name not in served]
