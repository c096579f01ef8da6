"""The model to serve, in GPUStack's field names."""

from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import Field, field_validator, model_validator

from berth.schemas._base import GPUStackModel

__all__ = [
    "ExtendedKVCacheConfig",
    "GPUTypeSelector",
    "Model",
    "SpeculativeAlgorithm",
    "SpeculativeConfig",
    "is_audio_model",
    "is_omni_model",
]


class SpeculativeAlgorithm(str, Enum):
    EAGLE3 = "eagle3"
    MTP = "mtp"
    NGRAM = "ngram"


class SpeculativeConfig(GPUStackModel):
    """Speculative decoding, rendered as vLLM's ``--speculative-config`` JSON."""

    enabled: bool = Field(default=False, description="Turn speculative decoding on.")
    algorithm: SpeculativeAlgorithm | None = Field(
        default=None, description="eagle3, mtp or ngram."
    )
    num_draft_tokens: int | None = Field(
        default=None, ge=1, description="Tokens proposed per step (num_speculative_tokens)."
    )
    ngram_min_match_length: int | None = Field(
        default=None, ge=1, description="n-gram: shortest prompt match (prompt_lookup_min)."
    )
    ngram_max_match_length: int | None = Field(
        default=None, ge=1, description="n-gram: longest prompt match (prompt_lookup_max)."
    )
    draft_model: str | None = Field(
        default=None, description="Draft model name; its local path comes with the spec."
    )


class ExtendedKVCacheConfig(GPUStackModel):
    """KV cache offloaded to host RAM (``local``: LMCache, or vllm-ascend's CPU offload
    connector on Ascend) or attached to a shared cache service (``shared``)."""

    enabled: bool = Field(default=False, description="Turn the extended KV cache on.")
    mode: Literal["local", "shared"] | None = Field(
        default="local",
        description="local: a per-instance cache in host RAM; shared: attach to the cache "
        "service the scheduler resolved into instance.cache_config. Absent means local.",
    )
    cache_service_id: int | None = Field(
        default=None, description="Shared mode: the cache service to attach to (the scheduler's id)."
    )
    chunk_size: int | None = Field(default=None, description="LMCache chunk size in tokens.")
    ram_size: int | None = Field(default=None, description="Host RAM for the cache, in GiB.")
    ram_ratio: float | None = Field(
        default=1.2,
        description="Host RAM as a ratio of this worker's VRAM claim, when ram_size is unset.",
    )

    def is_shared(self) -> bool:
        """Enabled and attached to a shared cache service."""
        return self.enabled and self.mode == "shared"

    def local_ram_bytes(self, vram_claim: int) -> int | None:
        """Host RAM the local cache may take on this worker: ram_size (GiB) when set, else
        ram_ratio times the worker's VRAM claim; None when neither is set."""
        if self.ram_size and self.ram_size > 0:
            return self.ram_size * 1024**3
        if self.ram_ratio and self.ram_ratio > 0:
            return int(vram_claim * self.ram_ratio)
        return None


class GPUTypeSelector(GPUStackModel):
    """A GPU from a gpustack-operator InstanceType pool: a slice, a MIG partition or whole cards.

    Percentages left unset or both 0 mean whole cards; a memory percentage alone defaults the
    cores percentage to 100, as the operator's webhook does.
    """

    type: str = Field(min_length=1, description="The operator InstanceType (pool) to run on.")
    accelerator_sliced_memory_percentage: int | None = Field(
        default=None, ge=0, le=100, description="Per-card VRAM budget of a slice, in percent."
    )
    accelerator_sliced_cores_percentage: int | None = Field(
        default=None, ge=0, le=100, description="Per-card compute budget of a slice, in percent."
    )
    accelerator_partitioned_profile: str | None = Field(
        default=None, description="Hardware partition (MIG) profile, e.g. '1g.5gb'."
    )

    @model_validator(mode="after")
    def _normalise_slice(self) -> GPUTypeSelector:
        if self.accelerator_partitioned_profile:
            return self
        memory = self.accelerator_sliced_memory_percentage or 0
        cores = self.accelerator_sliced_cores_percentage
        if memory == 0 and not cores:
            self.accelerator_sliced_memory_percentage = self.accelerator_sliced_cores_percentage = 0
        elif memory == 0:
            raise ValueError(
                "accelerator_sliced_memory_percentage must be 1-100 for a slice "
                "(0 only together with a 0 cores percentage: whole cards)"
            )
        elif cores == 0:
            raise ValueError("accelerator_sliced_cores_percentage must be 1-100 for a slice (or unset: 100)")
        elif cores is None:
            self.accelerator_sliced_cores_percentage = 100
        return self


class Model(GPUStackModel):
    """A model deployment as GPUStack describes it (only what planning needs is typed)."""

    id: int | None = Field(default=None, description="Scheduler's model id.")
    name: str = Field(min_length=1, description="Model name.")
    backend: str = Field(default="vLLM", description="Inference backend; berth plans vLLM.")
    backend_version: str | None = Field(
        default=None, description="vLLM version, e.g. '0.11.0'; gates version-specific flags."
    )
    backend_parameters: list[str] | None = Field(
        default=None, description="Extra `vllm serve` options, in any shape users write them."
    )
    env: dict[str, str] | None = Field(default=None, description="Environment for the engine.")
    categories: list[str] = Field(
        default_factory=list,
        description="llm, embedding, reranker, image, speech_to_text, text_to_speech...",
    )
    image_name: str | None = Field(
        default=None,
        description="Container image to run. Set, it also makes vLLM's mp the default "
        "multi-node executor (a custom image may not bundle Ray).",
    )
    run_command: str | None = Field(
        default=None,
        description="Replaces the model path as the head of vLLM's arguments (after the "
        "entrypoint); placeholders such as {{model_path}} and {{port}} are rendered.",
    )
    gpu_type_selector: GPUTypeSelector | None = Field(
        default=None, description="Run on an operator GPU pool (vGPU slice, MIG partition, whole cards)."
    )
    speculative_config: SpeculativeConfig | None = Field(default=None)
    extended_kv_cache: ExtendedKVCacheConfig | None = Field(default=None)
    restart_on_error: bool = Field(default=True, description="Restart the instance if it fails.")

    @field_validator("backend_parameters", mode="before")
    @classmethod
    def _parameters_are_strings(cls, value: object) -> object:
        if isinstance(value, str):
            raise ValueError("must be a list of strings, e.g. ['--max-model-len', '8192']")
        return value

    @field_validator("backend_parameters")
    @classmethod
    def _parameters_split(cls, value: list[str] | None) -> list[str] | None:
        from berth.utils.args import flatten_to_argv

        flatten_to_argv(value)  # raises ValueError naming the entry (an unclosed quote...)
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _env_values_are_strings(cls, value: object) -> object:
        if isinstance(value, dict):
            return {str(k): v if isinstance(v, str) else _scalar(k, v) for k, v in value.items()}
        return value


def _scalar(key: object, value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return str(value)
    raise ValueError(f"env[{key!r}] must be a string, number or boolean")


def is_audio_model(model: Model) -> bool:
    """Speech-to-text or text-to-speech models."""
    return bool({"speech_to_text", "text_to_speech"} & set(model.categories))


def is_omni_model(model: Model) -> bool:
    """Models vLLM serves with ``--omni``: image or text-to-speech, or already flagged."""
    from berth.utils.args import find_bool_parameter

    if {"image", "text_to_speech"} & set(model.categories):
        return True
    return find_bool_parameter(model.backend_parameters, ["omni"])
