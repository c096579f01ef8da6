"""A random LoRA adapter for the tiny test model, built locally (no hub)."""

from __future__ import annotations

import json
from pathlib import Path


def write_lora_adapter(dest: Path, base: Path, rank: int = 8) -> Path:
    """A random rank-``rank`` LoRA adapter (q_proj, v_proj) for the tiny model, PEFT layout."""
    import torch
    from safetensors.torch import save_file

    config = json.loads((base / "config.json").read_text())
    hidden, layers = config["hidden_size"], config["num_hidden_layers"]
    dest.mkdir()
    (dest / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": 2 * rank,
        "lora_dropout": 0.0, "bias": "none", "target_modules": ["q_proj", "v_proj"],
        "base_model_name_or_path": str(base)}))
    generator = torch.Generator().manual_seed(0)
    tensors = {}
    for layer in range(layers):
        for module in ("q_proj", "v_proj"):
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            tensors[f"{prefix}.lora_A.weight"] = torch.randn(rank, hidden, generator=generator) / 10
            tensors[f"{prefix}.lora_B.weight"] = torch.randn(hidden, rank, generator=generator) / 10
    save_file(tensors, str(dest / "adapter_model.safetensors"))
    return dest
