"""``LLMConfig`` -> ``vllm serve`` options (argv tokens, never a shell string), or the
``vllm.LLM`` keyword arguments of a batched server.

``--host``, ``--port`` and ``--served-model-name`` are not here: berth's planner adds them.
"""

from __future__ import annotations

import json
from typing import Any

from berth.client.config import LLMConfig

__all__ = ["kwarg_options", "llm_kwargs", "serve_options"]

#: LLMConfig field -> vllm serve option, for options that take the field's value.
_VALUED = {
    "tokenizer": "--tokenizer",
    "quantization": "--quantization",
    "revision": "--revision",
    "tokenizer_revision": "--tokenizer-revision",
    "seed": "--seed",
    "gpu_memory_utilization": "--gpu-memory-utilization",
    "max_model_len": "--max-model-len",
    "download_dir": "--download-dir",
}


def serve_options(llm: LLMConfig) -> list[str]:
    """The options that load ``llm`` as configured (model path and address excluded)."""
    options: list[str] = []
    for field, option in _VALUED.items():
        value = getattr(llm, field)
        if value is not None:
            options += [option, str(value)]
    if llm.tokenizer_mode != "auto":
        options += ["--tokenizer-mode", llm.tokenizer_mode]
    if llm.dtype != "auto":
        options += ["--dtype", llm.dtype]
    if llm.trust_remote_code:
        options.append("--trust-remote-code")
    if llm.enforce_eager:
        options.append("--enforce-eager")
    if llm.lora_path:
        options += ["--enable-lora", "--lora-modules", f"{llm.lora_name}={llm.lora_path}"]
    return options + kwarg_options(llm.llm_kwargs)


#: LLMConfig fields that are ``vllm.LLM`` keyword arguments under the same name.
_LLM_FIELDS = (
    "tokenizer", "tokenizer_mode", "trust_remote_code", "dtype", "quantization", "revision",
    "tokenizer_revision", "seed", "gpu_memory_utilization", "enforce_eager", "max_model_len",
    "download_dir",
)


def llm_kwargs(llm: LLMConfig) -> dict[str, Any]:
    """``vllm.LLM`` keyword arguments for ``llm`` (a batched server's ``--llm_kwargs``), as
    gserve builds them: the set fields, then ``llm_kwargs`` (which wins)."""
    fields = {name: getattr(llm, name) for name in _LLM_FIELDS}
    fields.update(llm.llm_kwargs)
    return {key: value for key, value in fields.items() if value is not None}


def kwarg_options(kwargs: dict[str, Any]) -> list[str]:
    """``{'max_num_seqs': 8, 'enable_prefix_caching': True}`` -> ``--max-num-seqs 8 ...``.

    True is a bare flag, False ``--no-<name>``, None is skipped, a list gives its values after
    one flag, a dict is sent as JSON.
    """
    options: list[str] = []
    for key, value in kwargs.items():
        flag = "--" + key.strip().lstrip("-").replace("_", "-")
        if value is None:
            continue
        if value is True:
            options.append(flag)
        elif value is False:
            options.append("--no-" + flag[2:])
        elif isinstance(value, (list, tuple)):
            options += [flag, *(str(item) for item in value)]
        elif isinstance(value, dict):
            options += [flag, json.dumps(value)]
        else:
            options += [flag, str(value)]
    return options
