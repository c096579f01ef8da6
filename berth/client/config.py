"""``LLMConfig`` (which model and how vLLM loads it) and ``ServeConfig`` (how many servers,
where, and how the client talks to them).

Both are dataclasses shaped as gserve's: the same fields in the same order first (so
``LLMConfig("m")``, ``ServeConfig([0])`` and ``dataclasses.replace(config, port=9000)`` work),
then berth's own. They are validated (pydantic dataclasses): an unknown or mistyped field is an
error that names it, on construction and on assignment. Both also read a dict
(:meth:`model_validate`) or a YAML/JSON file (:meth:`from_file`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, Field, TypeAdapter, field_validator, model_validator
from pydantic.dataclasses import dataclass

from berth.client.log_utils import env_log_level
from berth.deployers import AUTO, deployer_names

__all__ = ["DeployerChoice", "LLMConfig", "Profile", "ServeConfig", "ServerKind"]

#: ``auto`` or a deployer that runs servers on this machine (:data:`berth.deployers.REGISTRY`).
DeployerChoice = Literal[(AUTO, *deployer_names(local=True))]  # type: ignore[valid-type]
ServerKind = Literal["openai", "batched"]
Profile = Literal["exact", "cluster"]
_LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
_STRICT = ConfigDict(extra="forbid", validate_assignment=True)


class _Config:
    """Dict and file helpers shared by both configs (the dataclass fields are the schema)."""

    @classmethod
    def model_validate(cls, data: Any) -> Any:
        """A config from a mapping of its fields (validated, unknown keys refused)."""
        return TypeAdapter(cls).validate_python(data)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Any:
        """Read a YAML (or JSON) mapping of this config's fields."""
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
        if not isinstance(data, dict):
            raise ValueError(f"{os.fspath(path)}: must hold a mapping of {cls.__name__} fields")
        return cls.model_validate(data)

    def model_dump(self) -> dict[str, Any]:
        """The fields as a dict (nested values copied)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]


@dataclass(config=_STRICT)
class LLMConfig(_Config):
    """The model a server loads: gserve's fields, then berth's."""

    model_name: str = Field(
        min_length=1,
        description="Hub id or local path of the model; './m' and '~/m' are local paths.",
    )
    tokenizer: str | None = Field(default=None, description="Tokenizer, if not the model's own.")
    tokenizer_mode: str = Field(default="auto", description="vLLM tokenizer mode: auto, slow...")
    trust_remote_code: bool = Field(default=False, description="Allow the model's own code.")
    dtype: str = Field(
        default="bfloat16",
        description="Weights/activations type: bfloat16 (gserve's default), float16, float32, auto.",
    )
    quantization: str | None = Field(default=None, description="Quantization method, e.g. awq.")
    revision: str | None = Field(default=None, description="Model revision (branch, tag, commit).")
    tokenizer_revision: str | None = Field(default=None, description="Tokenizer revision.")
    seed: int | None = Field(default=0, description="Engine random seed; None leaves vLLM's.")
    gpu_memory_utilization: float | None = Field(
        default=None, gt=0, le=1, description="Fraction of GPU memory vLLM may use (0, 1]."
    )
    enforce_eager: bool = Field(default=False, description="Disable CUDA graphs / compilation.")
    max_model_len: int | None = Field(default=None, ge=1, description="Context length cap.")
    download_dir: str | None = Field(default=None, description="Where to download weights.")
    lora_path: str | None = Field(
        default=None, description="LoRA adapter directory; every request then goes to the adapter."
    )
    llm_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="More engine options by name: {'max_num_seqs': 8, 'enable_prefix_caching': "
        "True}. The batched server passes them to vllm.LLM as they are; for `vllm serve` True is "
        "a bare flag, False '--no-<name>', a list repeats values.",
    )
    served_model_name: str | None = Field(
        default=None, description="Name requests use; default: model_name, as vLLM does."
    )
    lora_name: str = Field(
        default="lora", min_length=1, description="Name the LoRA adapter is served (and requested) as."
    )

    @property
    def request_model(self) -> str:
        """The model name requests carry: the LoRA adapter when there is one."""
        if self.lora_path:
            return self.lora_name
        return self.served_model_name or self.model_name


@dataclass(config=_STRICT)
class ServeConfig(_Config):
    """How many servers to start, where, and how the client talks to them: gserve's fields,
    then berth's."""

    gpu_ids: list[int | list[int]] = Field(
        default_factory=list,
        description="One server per entry: a GPU index, or a list of indexes for one server "
        "spanning them (tensor parallel). Empty: servers without GPUs (see num_servers).",
    )
    host: str = Field(default="127.0.0.1", min_length=1, description="Address servers bind to.")
    port: int | None = Field(
        default=None, ge=1, le=65535,
        description="First server's port, incremented per server; auto-assigned when absent.",
    )
    startup_timeout: float | None = Field(
        default=180.0, gt=0, description="Seconds a server may take to become ready; None: no limit."
    )
    client_timeout: float | None = Field(
        default=30.0, gt=0, description="Seconds one HTTP request may take; None: no limit."
    )
    verbose: bool = Field(default=False, description="Forward server logs to this stderr.")
    num_servers: int | None = Field(
        default=None, ge=1,
        description="Servers to start when gpu_ids is empty (CPU servers); default 1.",
    )
    max_concurrency: int = Field(default=64, ge=1, description="Requests in flight per server.")
    max_retries: int = Field(default=3, ge=0, description="Retries on connection errors.")
    log_level: str | None = Field(
        default=None,
        description="VLLM_LOGGING_LEVEL for the servers; default: GSERVE_LOG_LEVEL when set, else "
        "the 'berth' logger's level when set, else INFO.",
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment for the servers (not logged)."
    )
    deployer: DeployerChoice = Field(
        default="auto",
        description="How OpenAI servers run: 'launcher' (a process that preloaded vLLM forks "
        "them), 'process' (one `vllm serve` process each), 'auto' (launcher when vLLM imports "
        "here). Batched servers always run as processes.",
    )
    run_dir: str | None = Field(
        default=None, description="Where server state and logs go; default: a temporary dir."
    )
    server: ServerKind = Field(
        default="batched",
        description="Server kind: 'batched' (gserve's /generate and /chat over vllm.LLM, one "
        "engine call per batch: the fastest for batch jobs, measured in bench/batch_paths.py) or "
        "'openai' (`vllm serve`, vLLM's OpenAI-compatible API: extra_body, streaming clients).",
    )
    profile: Profile = Field(
        default="exact",
        description="'exact': servers run the LLMConfig options as given (plus host, port and "
        "served name); 'cluster': planned by GPUStack's scheduling rules, as the worker's spec "
        "API plans them (OpenAI servers only).",
    )

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.upper() not in _LOG_LEVELS:
            raise ValueError(f"log_level {value!r} is not one of {', '.join(_LOG_LEVELS)}")
        return value.upper()

    @model_validator(mode="after")
    def _servers_given_once(self) -> ServeConfig:
        if self.gpu_ids and self.num_servers not in (None, len(self.gpu_ids)):
            raise ValueError(
                f"num_servers={self.num_servers} contradicts gpu_ids (one server per entry, "
                f"{len(self.gpu_ids)} entries); leave num_servers unset when giving gpu_ids"
            )
        return self

    def gpu_groups(self) -> list[list[int]]:
        """The GPU indexes of each server to start (empty lists for CPU servers)."""
        if self.gpu_ids:
            return [[g] if isinstance(g, int) else list(g) for g in self.gpu_ids]
        return [[] for _ in range(self.num_servers or 1)]

    def deployer_choice(self) -> DeployerChoice:
        """The deployer servers run under: ``deployer`` for OpenAI servers; a batched server
        is a Python module, which only the process deployer runs."""
        return self.deployer if self.server == "openai" else "process"

    def server_log_level(self) -> str:
        """The level servers log at (see ``log_level``)."""
        if self.log_level:
            return self.log_level
        level = env_log_level() or logging.getLogger("berth").level
        return logging.getLevelName(level) if level else "INFO"
