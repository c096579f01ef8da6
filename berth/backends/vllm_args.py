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
from berth.schemas import Model, ModelInstance, SpeculativeAlgorithm
from berth.utils.args import find_bool_parameter, find_int_parameter, find_parameter, has_parameter
from berth.utils.versions import compare_versions

__all__ = [
    "KV_TRANSFER_CONFIG",
    "MAX_MODEL_LEN_CAP",
    "access_log_arguments",
    "auto_parallelism_arguments",
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
_PARALLELISM = ["tensor-parallel-size", "tp", "pipeline-parallel-size", "pp", "data-parallel-size", "dp"]
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
_UNSCALED_ROPE = {"su", "longrope", "llama3", "default", "mrope"}
_SPECULATIVE_METHOD = {
    SpeculativeAlgorithm.EAGLE3: "eagle3",
    SpeculativeAlgorithm.MTP: "mtp",
    SpeculativeAlgorithm.NGRAM: "ngram",
}


def read_model_config(model_path: str) -> dict[str, Any] | None:
    """The model's ``config.json``, or None when there is none to read (hub ids, GGUF files)."""
    path = os.path.join(model_path, "config.json")
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        logger.debug("no usable %s: %s", path, exc)
        return None
    return data if isinstance(data, dict) else None


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    for key in ("text_config", "llm_config", "language_config"):
        nested = config.get(key)
        if isinstance(nested, dict):
            return nested
    return config


def _rope_factor(text: dict[str, Any], length: int) -> int | float:
    rope = text.get("rope_scaling") or text.get("rope_parameters")
    if not isinstance(rope, dict):
        return length
    rope_type = rope.get("rope_type", rope.get("type"))
    factor = rope.get("factor")
    if rope_type in _UNSCALED_ROPE or not isinstance(factor, int | float):
        return length
    if rope_type == "yarn" and isinstance(rope.get("original_max_position_embeddings"), int):
        length = rope["original_max_position_embeddings"]
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
    """tp (and pp across workers) from the GPUs assigned, unless the user chose any of tp/pp/dp."""
    if find_parameter(parameters, _PARALLELISM) is not None:
        return []
    if distributed:
        tp, pp = tp_pp
        return ["--tensor-parallel-size", str(tp), "--pipeline-parallel-size", str(pp)]
    if instance.gpu_indexes is not None and len(instance.gpu_indexes) > 1:
        return ["--tensor-parallel-size", str(len(instance.gpu_indexes))]
    return []


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


def injected_arguments(options: list[str], user: list[str]) -> list[str]:
    """Options berth added: everything but the user's own (their last contiguous occurrence)."""
    if not user:
        return list(options)
    width = len(user)
    for start in range(len(options) - width, -1, -1):
        if options[start : start + width] == user:
            return options[:start] + options[start + width :]
    return list(options)
