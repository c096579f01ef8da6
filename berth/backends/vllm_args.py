"""vLLM's argument rules, each a small function of the model and instance.

The planner (:mod:`berth.backends.vllm`) applies them in this order: omni flag, derived max
model length, automatic parallelism, speculative config, version-gated flags, distributed
executor and data parallelism, LMCache, Ascend 310P, the user's parameters, then host, port
and served name where absent.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from berth.backends.plan import PlanError
from berth.backends.vllm_topology import MultinodeTopology, UserParallelism
from berth.schemas import Model, ModelInstance, MountedLoRA, SpeculativeAlgorithm
from berth.utils.args import (
    extend_args_no_exist,
    find_bool_parameter,
    find_int_parameter,
    find_parameter,
    has_parameter,
)
from berth.utils.versions import compare_versions

__all__ = [
    "KV_TRANSFER_CONFIG",
    "LORA_RANKS",
    "MAX_MODEL_LEN_CAP",
    "PARALLELISM",
    "access_log_arguments",
    "auto_parallelism_arguments",
    "lora_arguments",
    "max_lora_rank",
    "mp_parallelism_arguments",
    "cache_report_arguments",
    "derive_max_model_len",
    "injected_arguments",
    "max_model_len_arguments",
    "read_model_config",
    "speculative_arguments",
]

logger = logging.getLogger(__name__)

MAX_MODEL_LEN_CAP = 8192
KV_TRANSFER_CONFIG = '{"kv_connector":"LMCacheConnectorV1","kv_role":"kv_both"}'
PARALLELISM = ["tensor-parallel-size", "tp", "pipeline-parallel-size", "pp", "data-parallel-size", "dp"]
_LENGTH_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "max_seq_len",
    "seq_length",
    "model_max_length",
    "max_target_positions",
    "max_sequence_length",
    "max_seq_length",
    "seq_len",
)
_UNSCALED_ROPE = {"su", "longrope", "llama3"}
#: The values vLLM accepts for --max-lora-rank.
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
_SPECULATIVE_METHOD = {
    SpeculativeAlgorithm.EAGLE3: "eagle3",
    SpeculativeAlgorithm.MTP: "mtp",
    SpeculativeAlgorithm.NGRAM: "ngram",
}


def read_json_object(path: str) -> tuple[dict[str, Any] | None, str | None]:
    """(the JSON object in ``path``, None), else (None, why it could not be read)."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        return None, str(exc)
    return (data, None) if isinstance(data, dict) else (None, "not a JSON object")


def read_model_config(model_path: str) -> dict[str, Any] | None:
    """The model's ``config.json``, or None when there is none to read (hub ids, GGUF files)."""
    path = os.path.join(model_path, "config.json")
    data, problem = read_json_object(path)
    if problem:
        logger.debug("no usable %s: %s", path, problem)
    return data


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    """The language model's part of a multimodal config: ``text_config`` when it is one (it has
    ``num_attention_heads``), else ``llm_config`` or ``language_config``, else the config."""
    text = config.get("text_config")
    if isinstance(text, dict) and "num_attention_heads" in text:
        return text
    for key in ("llm_config", "language_config"):
        nested = config.get(key)
        if isinstance(nested, dict):
            return nested
    return config


def _rope_factor(text: dict[str, Any], length: int) -> int | float:
    """``length`` scaled by the config's rope scaling, read as transformers normalises it: no
    type means ``default`` and no factor means 1 (so a per-attention-type ``rope_parameters``,
    as Gemma's, scales nothing); su, longrope and llama3 never scale; yarn scales its original
    length (the config's ``max_position_embeddings`` when it names none)."""
    rope = text.get("rope_scaling")
    if rope is None:
        rope = text.get("rope_parameters")
    if not isinstance(rope, dict):
        return length
    rope_type = rope.get("type") or rope.get("rope_type") or "default"
    factor = rope.get("factor", 1)
    if rope_type in _UNSCALED_ROPE or isinstance(factor, bool) or not isinstance(factor, int | float):
        return length
    if rope_type == "yarn":
        original = rope.get("original_max_position_embeddings", text.get("max_position_embeddings", length))
        if isinstance(original, int | float):
            length = original
    return length * factor


def derive_max_model_len(config: dict[str, Any] | None) -> int | None:
    """Context length vLLM would derive: smallest length key of the text config, rope-scaled.

    2048 when the config names no length; None when there is no config at all.
    """
    if config is None:
        return None
    text = _text_config(config)
    lengths = [v for k in _LENGTH_KEYS if isinstance(v := text.get(k), int | float) and not isinstance(v, bool)]
    if not lengths:
        return 2048
    return int(_rope_factor(text, min(lengths)))


def max_model_len_arguments(model: Model, derived: int | None) -> list[str]:
    """Cap the context at 8192 when the model's is longer and the user set none."""
    if find_parameter(model.backend_parameters, ["max-model-len"]) is not None:
        return []
    if derived and derived > MAX_MODEL_LEN_CAP:
        return ["--max-model-len", str(MAX_MODEL_LEN_CAP)]
    return []


def auto_parallelism_arguments(
    parameters: list[str] | None, instance: ModelInstance, distributed: bool, tp_pp: tuple[int, int]
) -> list[str]:
    """tp (and pp across Ray workers) from the GPUs assigned, unless the user chose any of tp/pp/dp."""
    if find_parameter(parameters, PARALLELISM) is not None:
        return []
    if distributed:
        tp, pp = tp_pp
        return ["--tensor-parallel-size", str(tp), "--pipeline-parallel-size", str(pp)]
    if instance.gpu_indexes is not None and len(instance.gpu_indexes) > 1:
        return ["--tensor-parallel-size", str(len(instance.gpu_indexes))]
    return []


def mp_parallelism_arguments(user: UserParallelism, topology: MultinodeTopology) -> list[str]:
    """vLLM's mp multi-node: whatever of tp, pp, dp and dp-local the user left open, from the
    topology (dp and dp-local only in the shapes that use them). Every node gets the same
    parameters, so the user's values are cluster-wide constraints."""
    out: list[str] = []
    if user.tp is None:
        out += ["--tensor-parallel-size", str(topology.tp)]
    if user.pp is None and topology.pp > 1:
        out += ["--pipeline-parallel-size", str(topology.pp)]
    if topology.shape != "mp_only":
        if user.dp is None:
            out += ["--data-parallel-size", str(topology.dp)]
        if user.dpl is None:
            out += ["--data-parallel-size-local", str(topology.dpl)]
    return out


def speculative_arguments(model: Model, draft_model_path: str | None) -> list[str]:
    """``--speculative-config`` JSON for eagle3, mtp or ngram (with a draft model path if any)."""
    config = model.speculative_config
    if not config or not config.enabled or config.algorithm is None:
        return []
    method = _SPECULATIVE_METHOD.get(config.algorithm)
    if method is None:
        return []
    spec: dict[str, Any] = {"method": method}
    if config.num_draft_tokens:
        spec["num_speculative_tokens"] = config.num_draft_tokens
    if config.ngram_max_match_length:
        spec["prompt_lookup_max"] = config.ngram_max_match_length
    if config.ngram_min_match_length:
        spec["prompt_lookup_min"] = config.ngram_min_match_length
    if config.draft_model and draft_model_path:
        spec["model"] = draft_model_path
    return ["--speculative-config", json.dumps(spec)]


def _at_least(version: str | None, minimum: str) -> bool:
    return bool(version) and compare_versions(version, minimum) >= 0  # type: ignore[arg-type]


def access_log_arguments(parameters: list[str] | None, version: str | None) -> list[str]:
    """Silence /metrics access logs (vLLM >= 0.16.0) unless the user configured the filter."""
    if not _at_least(version, "0.16.0"):
        return []
    if has_parameter(parameters, ["disable-access-log-for-endpoints"]):
        return []
    return ["--disable-access-log-for-endpoints", "/metrics"]


def cache_report_arguments(parameters: list[str] | None, version: str | None) -> list[str]:
    """Report cached prompt tokens in usage (vLLM >= 0.9.0.1) unless the user chose either way."""
    if not _at_least(version, "0.9.0.1"):
        return []
    if has_parameter(parameters, ["enable-prompt-tokens-details", "no-enable-prompt-tokens-details"]):
        return []
    return ["--enable-prompt-tokens-details"]


def omni_arguments(model: Model, is_omni: bool) -> list[str]:
    if is_omni and not find_bool_parameter(model.backend_parameters, ["omni"]):
        return ["--omni"]
    return []


def data_parallel_arguments(parameters: list[str] | None, dp_rpc_port: int | None) -> list[str]:
    """For dp > 1 in a distributed instance: Ray as DP backend (unless chosen) and its RPC port."""
    size = find_int_parameter(parameters, ["data-parallel-size", "dp"])
    if not size or size <= 1:
        return []
    out: list[str] = []
    if find_parameter(parameters, ["data-parallel-backend", "dpb"]) is None:
        out += ["--data-parallel-backend", "ray"]
    if dp_rpc_port is None:
        raise PlanError("instance.ports needs a second port (data-parallel RPC) when dp > 1")
    return out + ["--data-parallel-rpc-port", str(dp_rpc_port)]


def max_lora_rank(paths: list[str]) -> tuple[int | None, list[str]]:
    """(the largest rank of the adapters' ``adapter_config.json`` — ``r`` and any
    ``rank_pattern`` value — or None, the warnings for configs that could not be read)."""
    best: int | None = None
    warnings: list[str] = []
    for path in paths:
        config_path = os.path.join(path, "adapter_config.json")
        data, problem = read_json_object(config_path)
        if data is None:
            warnings.append(f"LoRA rank not read from {config_path}: {problem}")
            continue
        pattern = data.get("rank_pattern")
        ranks = [data["r"]] if isinstance(data.get("r"), int) else []
        if isinstance(pattern, dict):
            ranks += [v for v in pattern.values() if isinstance(v, int)]
        if ranks:
            best = max([*ranks, *([best] if best is not None else [])])
    return best, warnings


def _allowed_lora_rank(rank: int) -> int:
    """The smallest rank vLLM accepts that holds ``rank`` (beyond them: as is, vLLM decides)."""
    return next((allowed for allowed in LORA_RANKS if rank <= allowed), rank)


def lora_arguments(
    arguments: list[str], loras: list[MountedLoRA] | None, base_model: str, parameters: list[str] | None
) -> list[str]:
    """Serve the mounted adapters from the start: ``--enable-lora``, ``--max-loras N``,
    ``--lora-modules`` with one JSON object per adapter and ``--max-lora-rank`` from their
    configs, each only where absent from ``arguments``; nothing when the user passes their own
    ``--lora-modules``, and no rank when they pass ``--max-lora-rank``. Edits ``arguments`` in
    place; returns the rank warnings."""
    if not loras or find_parameter(parameters, ["lora-modules", "lora_modules"]):
        return []
    modules = [
        {"name": lora.lora_name, "path": lora.path, "base_model_name": base_model} for lora in loras if lora.path
    ]
    if not modules:
        return []
    extend_args_no_exist(arguments, "--enable-lora", ("--max-loras", str(len(modules))))
    if not any(a == "--lora-modules" or a.startswith("--lora-modules=") for a in arguments):
        arguments += ["--lora-modules", *(json.dumps(m) for m in modules)]
    if find_parameter(parameters, ["max-lora-rank", "max_lora_rank"]):
        return []
    rank, warnings = max_lora_rank([str(m["path"]) for m in modules])
    if rank:
        extend_args_no_exist(arguments, ("--max-lora-rank", str(_allowed_lora_rank(rank))))
    return warnings


def injected_arguments(options: list[str], user: list[str]) -> list[str]:
    """Options berth added: everything but the user's own (their last contiguous occurrence)."""
    if not user:
        return list(options)
    width = len(user)
    for start in range(len(options) - width, -1, -1):
        if options[start : start + width] == user:
            return options[:start] + options[start + width :]
    return list(options)
