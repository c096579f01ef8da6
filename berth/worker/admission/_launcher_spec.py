"""The launcher API's body (``options``, ``env_vars``, ``gpu_uuids``) read into berth's terms.

``options`` is split with shlex (JSON values with spaces stay whole). ``--model`` (or a leading
positional model) and ``--port`` are understood; every other option is kept as a backend
parameter. The spec carries profile ``exact`` unless the request asks for ``cluster``: a
launcher user's options run as given, plus only the worker's host, the allocated port and the
served name where absent. Nothing here runs or allocates anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from berth.schemas import DeploymentSpec, Model, ModelInstance
from berth.schemas.spec import check_model_path
from berth.utils.args import (
    find_int_parameter,
    find_parameter,
    is_parameter_key,
    split_command_line,
)
from berth.worker.errors import InvalidRequest
from berth.worker.settings import RestartPolicy, Settings

MAX_OPTIONS = 65536
MAX_TOKENS = 2048
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class LauncherRequest(BaseModel):
    """Body of ``POST /v2/vllm/instances`` and ``PUT /v2/vllm/instances/{id}``."""

    model_config = ConfigDict(extra="forbid")

    options: str = Field(
        max_length=MAX_OPTIONS,
        description="`vllm serve` options, e.g. '--model /models/opt-125m --port 8000'. --model is "
        "required; --port is allocated when absent.",
    )
    env_vars: dict[str, Any] | None = Field(
        default=None, description="Environment variables for the instance (strings, numbers or booleans)."
    )
    gpu_uuids: list[str] | None = Field(
        default=None, max_length=256, description="GPUs for the instance, by UUID or index (default: free ones)."
    )
    restart_policy: RestartPolicy | None = Field(
        default=None, description="berth extension: never or on-failure (default: the worker's setting)."
    )
    allow_shared_gpus: bool = Field(
        default=False, description="berth extension: allow GPUs another instance already uses."
    )
    profile: Literal["cluster", "exact"] = Field(
        default="exact",
        description="berth extension: 'exact' (the default) runs the options as given, adding only "
        "--host, --port and --served-model-name where absent; 'cluster' plans the instance by "
        "GPUStack's scheduling rules (context cap, parallelism, env defaults), as the spec API does.",
    )


@dataclass(frozen=True, slots=True)
class LauncherOptions:
    """What berth reads from ``options``; ``parameters`` are the rest, as given."""

    model_path: str
    port: int | None
    parameters: list[str]
    served_name: str

    @property
    def gpu_count(self) -> int:
        """GPUs the options ask for: tensor x pipeline parallel size (1 when unset)."""
        tp = find_int_parameter(self.parameters, ["tensor-parallel-size", "tp"]) or 1
        pp = find_int_parameter(self.parameters, ["pipeline-parallel-size", "pp"]) or 1
        return max(1, tp) * max(1, pp)


def _tokens(text: str) -> list[str]:
    if _CONTROL.search(text):
        raise InvalidRequest("options: must not contain control characters or NUL bytes")
    try:
        tokens = split_command_line(text)
    except ValueError as exc:
        raise InvalidRequest(f"options: {exc}") from None
    if len(tokens) > MAX_TOKENS:
        raise InvalidRequest(f"options: more than {MAX_TOKENS} tokens")
    return tokens


def _take(tokens: list[str], index: int, key: str) -> tuple[str, int]:
    """The value of option ``key`` at ``tokens[index]`` (``--key=v`` or ``--key v``), next index."""
    token = tokens[index]
    if "=" in token:
        return token.partition("=")[2], index + 1
    if index + 1 >= len(tokens) or is_parameter_key(tokens[index + 1]):
        raise InvalidRequest(f"options: {key} needs a value")
    return tokens[index + 1], index + 2


def _split(tokens: list[str]) -> tuple[dict[str, str], list[str]]:
    """(``{"--model": v, "--port": v}`` as found, the other tokens)."""
    found: dict[str, str] = {}
    rest: list[str] = []
    index = 0
    if tokens and not is_parameter_key(tokens[0]):
        found["--model"], index = tokens[0], 1
    while index < len(tokens):
        key = tokens[index].partition("=")[0]
        if key not in ("--model", "--port"):
            rest.append(tokens[index])
            index += 1
            continue
        if key in found:
            raise InvalidRequest(f"options: {key} is given twice")
        found[key], index = _take(tokens, index, key)
    return found, rest


def _port(text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise InvalidRequest(f"options: --port {text!r} must be an integer from 1 to 65535")
    return int(text)


def parse_options(text: str) -> LauncherOptions:
    """Read ``options``; :class:`InvalidRequest` names what is wrong."""
    found, rest = _split(_tokens(text))
    model = found.get("--model")
    if not model:
        raise InvalidRequest("options: --model is required, e.g. '--model /models/opt-125m'")
    try:
        model_path = check_model_path(model)
    except ValueError as exc:
        raise InvalidRequest(f"options: --model {exc}") from None
    served = find_parameter(rest, ["served-model-name"]) or model
    return LauncherOptions(model_path=model_path, port=_port(found.get("--port")), parameters=rest, served_name=served)


def build_launcher_spec(
    instance_id: str,
    options: LauncherOptions,
    *,
    env: dict[str, str],
    port: int,
    gpu_indexes: list[int],
    settings: Settings,
    profile: Literal["cluster", "exact"] = "exact",
) -> DeploymentSpec:
    """The deployment spec of a launcher-style instance on this worker (``profile``: see
    :attr:`LauncherRequest.profile`; a launcher user gets exactly the options given)."""
    model = Model(
        name=options.served_name,
        backend="vLLM",
        backend_version=settings.resolved_backend_version(),
        backend_parameters=list(options.parameters),
        env=env,
    )
    instance = ModelInstance(
        name=instance_id,
        model_name=options.served_name,
        worker_id=settings.worker_id,
        worker_ip=settings.worker_ip,
        gpu_indexes=gpu_indexes or None,
        ports=[port],
    )
    return DeploymentSpec(
        model=model,
        instance=instance,
        worker=settings.to_worker(),
        config=settings.to_berth_config(),
        model_path=options.model_path,
        profile=profile,
    )
