"""A LoRA adapter for the tiny test model (:mod:`berth.testing.tiny_model`), made here with
random weights: no hub, no ``peft``.

The directory is what PEFT saves: ``adapter_config.json`` and ``adapter_model.safetensors``
with ``base_model.model.<module>.lora_A/lora_B.weight`` tensors for the attention's query and
value projections of every layer. vLLM loads it with ``--enable-lora`` (rank 8 fits its default
``--max-lora-rank`` of 16).
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["build_tiny_lora"]

_TARGETS = ("q_proj", "v_proj")


def build_tiny_lora(dest: Path, base_model: Path, *, rank: int = 8, seed: int = 0) -> Path:
    """Write an adapter for ``base_model`` into the new directory ``dest``; return it."""
    import torch
    from safetensors.torch import save_file

    config = json.loads((Path(base_model) / "config.json").read_text())
    hidden = int(config["hidden_size"])
    heads, kv_heads = int(config["num_attention_heads"]), int(config.get("num_key_value_heads") or config["num_attention_heads"])
    out_size = {"q_proj": hidden, "v_proj": hidden // heads * kv_heads}
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(int(config["num_hidden_layers"])):
        for target in _TARGETS:
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{target}"
            tensors[f"{prefix}.lora_A.weight"] = torch.randn(rank, hidden, generator=generator) * 0.02
            tensors[f"{prefix}.lora_B.weight"] = torch.randn(out_size[target], rank, generator=generator) * 0.02
    dest = Path(dest)
    dest.mkdir()
    save_file(tensors, str(dest / "adapter_model.safetensors"))
    (dest / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": str(base_model),
        "r": rank, "lora_alpha": 2 * rank, "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False,
        "target_modules": list(_TARGETS), "modules_to_save": None, "use_rslora": False, "use_dora": False,
        "inference_mode": True,
    }, indent=2))
    return dest
