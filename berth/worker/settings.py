"""The worker's settings: one model, read from flags, ``BERTH_*`` variables and a file.

Precedence, highest first: values given to :meth:`Settings.load` (command-line flags), then
environment variables (``BERTH_<FIELD>``), then the YAML or JSON file named by ``--config`` or
``BERTH_CONFIG_FILE``, then the defaults below. Every field carries its description, and
:func:`settings_table` renders them as the one markdown table the README and
``berth serve --help-settings`` show.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from berth.deployers import AUTO, deployer_names
from berth.schemas import BerthConfig, GPUDevice, Worker
from berth.schemas.config import DEFAULT_IMAGES, DEFAULT_RAY_PORT_RANGE
from berth.utils.ports import parse_port_range
from berth.utils.versions import installed_vllm_version

__all__ = ["CPU_IMAGE", "ENV_PREFIX", "DeployerChoice", "RestartPolicy", "Settings", "default_data_dir", "settings_table"]

ENV_PREFIX = "BERTH_"
#: vLLM's published CPU image (x86_64), used for instances without GPUs.
CPU_IMAGE = "public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:{tag}"
#: ``auto`` or a registered deployer (:data:`berth.deployers.REGISTRY`).
DeployerChoice = Literal[(AUTO, *deployer_names())]  # type: ignore[valid-type]
RestartPolicy = Literal["never", "on-failure"]


def default_data_dir() -> Path:
    """``/var/lib/berth`` as root, else ``$XDG_DATA_HOME/berth`` (``~/.local/share/berth``)."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/berth")
    xdg = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(xdg) / "berth"


class _FileSource(PydanticBaseSettingsSource):
    """Settings from the YAML/JSON file named by the ``config_file`` flag or ``BERTH_CONFIG_FILE``."""

    def __init__(self, settings_cls: type[BaseSettings], init: InitSettingsSource) -> None:
        super().__init__(settings_cls)
        self._path = init.init_kwargs.get("config_file") or os.environ.get(f"{ENV_PREFIX}CONFIG_FILE")

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        if not self._path:
            return {}
        path = Path(self._path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ValueError(f"config_file {str(path)!r} cannot be read: {exc}") from None
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ValueError(f"config_file {str(path)!r} must hold a mapping of setting: value")
        return {str(key): value for key, value in data.items()}


def _planned(model: type[BaseModel], name: str, *, note: str = "", **changes: Any) -> Any:
    """A setting that is the planning ``model``'s field ``name`` (under its own name and type):
    that field's default, bounds and description, then ``changes`` (another default) and
    ``note`` (what only the setting says) on top."""
    field = model.model_fields[name]
    start: dict[str, Any] = (
        {"default_factory": field.default_factory} if field.default_factory else {"default": field.default}
    )
    bounds = {key: value for item in field.metadata for key, value in dataclasses.asdict(item).items()}
    description = " ".join(text for text in (field.description, note) if text)
    return Field(**{**start, **bounds, "description": description, **changes})


def _split_names(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Everything ``berth serve`` can be told. Build with :meth:`load` to read a file too."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    config_file: Path | None = Field(
        default=None, description="YAML or JSON file holding any of these settings (flags and env win)."
    )
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Worker state: the instance registry (SQLite), deployer run dirs and logs. "
        "Default /var/lib/berth as root, else ~/.local/share/berth.",
    )
    cache_dir: Path | None = _planned(BerthConfig, "cache_dir", note="Default: <data_dir>/cache.")
    deployer: DeployerChoice = Field(
        default="auto",
        description="Where instances run: launcher (preloaded vLLM, fast starts), process, container "
        "(Docker/Podman/Kubernetes via gpustack-runtime) or memory (runs nothing; tests). "
        "auto = per instance: the launcher for what it can run (vLLM importable), else process.",
    )
    host: str = Field(default="127.0.0.1", description="Address the API binds to.")
    port: int = Field(default=8001, ge=1, le=65535, description="Port the API listens on.")
    api_token: SecretStr | None = Field(
        default=None, description="Bearer token every endpoint but /health requires. Never logged."
    )
    api_token_file: Path | None = Field(
        default=None, description="File holding the API token (first line), instead of api_token."
    )
    worker_ip: str = _planned(Worker, "ip", default="127.0.0.1")
    worker_ifname: str = _planned(Worker, "ifname", default="lo")
    worker_id: int | None = _planned(Worker, "id")
    worker_name: str | None = _planned(Worker, "name", note="Default: the host name.")
    gpu_devices: list[GPUDevice] = _planned(
        Worker, "gpu_devices", note='As JSON: [{"index": 0, "uuid": "GPU-...", "vendor": "nvidia"}].'
    )
    instance_port_range: str = Field(
        default="40000-40999", description="Ports given to instances that name none (HTTP, DP RPC, distributed)."
    )
    ray_port_range: str = Field(
        default=DEFAULT_RAY_PORT_RANGE, description="Pool carved into one Ray band per distributed instance."
    )
    ray_band_size: int = Field(default=100, ge=12, description="Ports in one instance's Ray band (>= 12).")
    images: dict[str, str] = _planned(
        BerthConfig, "images", default_factory=lambda: {**DEFAULT_IMAGES, "cpu": CPU_IMAGE}
    )
    entrypoint: list[str] = _planned(BerthConfig, "entrypoint", note="A JSON list.")
    backend_version: str | None = Field(
        default=None, description="vLLM version for version-gated flags (default: the one installed here)."
    )
    runtime_uid: int | None = _planned(BerthConfig, "runtime_uid")
    runtime_gid: int | None = _planned(BerthConfig, "runtime_gid")
    shm_size_gib: float = _planned(BerthConfig, "shm_size_gib")
    restart_policy: RestartPolicy = Field(
        default="never", description="Default for instances: never, or on-failure (with back-off)."
    )
    max_restarts: int = Field(default=3, ge=0, description="Restarts of one instance before it stays failed.")
    restart_backoff: float = Field(default=2.0, gt=0, description="First restart delay (s); doubles each time.")
    restart_backoff_max: float = Field(default=60.0, gt=0, description="Longest restart delay (s).")
    allowed_env: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Env var names instances may set although they can inject code "
        "(LD_PRELOAD, LD_LIBRARY_PATH, PYTHONPATH...); comma-separated.",
    )
    spec_overrides: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["ray_port_range", "ray_head_port", "shm_size_gib"],
        description="Fields of a spec's config that a request to /v2/instances may set to other values "
        "than this worker's; the others (entrypoint, images, cache_dir, data_dir, runtime_uid, "
        "runtime_gid) decide what runs and as whom. Comma-separated.",
    )
    stop_timeout: float = Field(default=10.0, ge=0, description="Grace period (s) before a stop kills.")
    poll_interval: float = Field(default=1.0, gt=0, description="Seconds between status and readiness checks.")
    distributed_join_timeout: float = Field(
        default=600.0, gt=0,
        description="Seconds a distributed (Ray) leader waits for its followers to join its head before "
        "it is failed, naming the missing nodes.",
    )
    probe_timeout: float = Field(default=2.0, gt=0, description="Timeout (s) of one readiness request.")
    max_body_bytes: int = Field(
        default=1 << 20, ge=1024,
        description="Largest request body of the control API (every path but /v1/*) accepted (413 beyond).",
    )
    max_inference_body_bytes: int = Field(
        default=100 << 20, ge=1024,
        description="Largest request body of the /v1/* inference router (413 beyond): long prompts, base64 "
        "images and audio. A body routed by a scheduler's header streams to the engine as it arrives; one "
        "routed by model is read first to find it, the worker holding about three times its size meanwhile.",
    )
    event_retention: int = Field(default=10000, ge=100, description="Instance events kept for the watch stream.")
    stop_instances_on_exit: bool = Field(
        default=False, description="Stop every instance when the worker exits (default: keep them for re-adoption)."
    )
    swap_enabled: bool = Field(
        default=True, description="Serve registered models on demand: /v2/models, and starting, waking, "
        "sleeping and parking them for the /v1/* router (see docs/swapping.md).",
    )
    swap_max_engines: int | None = Field(
        default=None, ge=1, description="Awake engines (instances not asleep, registered or not) this worker "
        "runs at once; starting or waking one more first puts the least recently used unpinned model to "
        "sleep or parks it. Unset: no limit.",
    )
    swap_gpu_memory_gib: float | None = Field(
        default=None, gt=0, description="Accelerator memory (GiB) per GPU that awake engines may hold together; "
        "starting or waking a model first evicts the least recently used unpinned models on its GPUs until "
        "it fits. An engine counts as its model's gpu_memory_gib, else its spec's computed_resource_claim "
        "vram, else 0; sleeping engines count 0. Unset: no limit.",
    )
    swap_max_asleep: int | None = Field(
        default=None, ge=0, description="Sleeping engines kept at once (they hold host memory); beyond it the "
        "longest unused is parked. Unset: no limit.",
    )
    swap_idle_timeout: float | None = Field(
        default=None, gt=0, description="Seconds a registered model may go unused before it is put to sleep "
        "(models with a sleep_level) or parked; a model's own idle_timeout wins. Unset: never for idleness.",
    )
    swap_asleep_timeout: float | None = Field(
        default=None, gt=0, description="Seconds a model may sleep before it is parked. Unset: it sleeps until "
        "used or evicted.",
    )
    swap_ready_timeout: float = Field(
        default=900.0, gt=0, description="Longest a start or wake of a registered model may take; past it the "
        "model is parked and requesters get 503.",
    )
    swap_drain_timeout: float = Field(
        default=30.0, ge=0, description="How long putting a model to sleep or parking it waits for its requests "
        "in flight to finish (an engine whose metrics cannot be read counts as busy). An eviction for the budget "
        "then tries another model (or answers 503 with Retry-After); an explicit park or sleep goes ahead.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="Worker log level.")
    router_activation_timeout: float = Field(
        default=120.0, gt=0,
        description="Seconds a /v1 request for a model that is not running waits for the model activator "
        "(when one is configured) to bring it up before it is answered 503 with Retry-After.",
    )
    gpustack_url: str | None = Field(
        default=None,
        description="GPUStack server URL (http://host:port). Set it, with gpustack_token, to join that "
        "cluster as one of its workers; unset, berth runs on its own.",
    )
    gpustack_token: SecretStr | None = Field(
        default=None,
        description="GPUStack registration token (the server's --token or a cluster's token). Used to "
        "register; the per-worker token GPUStack returns is kept in <data_dir>/gpustack, so a restart "
        "re-joins as the same worker even without it. Never logged.",
    )
    gpustack_heartbeat_interval: float = Field(
        default=10.0, gt=0, le=60, description="Seconds between heartbeats to the GPUStack server."
    )
    gpustack_status_interval: float = Field(
        default=15.0, gt=0, description="Seconds between status reports (CPU, memory, accelerators) to GPUStack."
    )
    gpustack_resync_interval: float = Field(
        default=30.0, gt=0,
        description="Seconds between full comparisons of GPUStack's model instances with this worker's "
        "(catches deletions missed while a watch stream was down).",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        assert isinstance(init_settings, InitSettingsSource)
        return init_settings, env_settings, _FileSource(settings_cls, init_settings)

    @classmethod
    def load(cls, **flags: Any) -> Settings:
        """Settings from ``flags`` (``None`` values are treated as not given), env and file."""
        return cls(**{key: value for key, value in flags.items() if value is not None})

    @field_validator("instance_port_range", "ray_port_range")
    @classmethod
    def _valid_range(cls, value: str) -> str:
        parse_port_range(value)
        return value

    @field_validator("allowed_env", "spec_overrides", mode="before")
    @classmethod
    def _names(cls, value: object) -> object:
        return _split_names(value)

    @field_validator("spec_overrides")
    @classmethod
    def _config_fields(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(BerthConfig.model_fields))
        if unknown:
            raise ValueError(f"{unknown} are not config fields; choose from {sorted(BerthConfig.model_fields)}")
        return value

    @model_validator(mode="after")
    def _token_from_file(self) -> Settings:
        if self.api_token_file is None:
            return self
        if self.api_token is not None:
            raise ValueError("set api_token or api_token_file, not both")
        try:
            lines = self.api_token_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"api_token_file {str(self.api_token_file)!r} cannot be read: {exc}") from None
        if not lines or not lines[0].strip():
            raise ValueError(f"api_token_file {str(self.api_token_file)!r} is empty; put the token on its first line")
        self.api_token = SecretStr(lines[0].strip())
        return self

    @field_validator("gpustack_url")
    @classmethod
    def _gpustack_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value[:80]!r} must start with http:// or https://, e.g. http://gpustack:80")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _ray_band_fits(self) -> Settings:
        start, end = parse_port_range(self.ray_port_range)
        if end - start + 1 < self.ray_band_size:
            raise ValueError(
                f"ray_port_range {self.ray_port_range!r} is smaller than one band of ray_band_size "
                f"{self.ray_band_size}; widen the range or lower the band size"
            )
        return self

    # -- derived values --------------------------------------------------------------------

    @property
    def resolved_cache_dir(self) -> Path:
        return self.cache_dir if self.cache_dir is not None else self.data_dir / "cache"

    def resolved_backend_version(self) -> str | None:
        """The configured vLLM version, else the installed distribution's (no import of vLLM)."""
        return self.backend_version or installed_vllm_version()

    def to_berth_config(self) -> BerthConfig:
        """The planning config every instance of this worker starts from."""
        return BerthConfig(
            cache_dir=str(self.resolved_cache_dir),
            data_dir=str(self.data_dir),
            ray_port_range=self.ray_port_range,
            images=dict(self.images),
            entrypoint=list(self.entrypoint),
            runtime_uid=self.runtime_uid,
            runtime_gid=self.runtime_gid,
            shm_size_gib=self.shm_size_gib,
        )

    def to_worker(self) -> Worker:
        """This worker as plans see it."""
        return Worker(
            id=self.worker_id,
            name=self.worker_name or os.uname().nodename,
            ip=self.worker_ip,
            ifname=self.worker_ifname,
            gpu_devices=[device.model_copy() for device in self.gpu_devices],
        )


def _default_text(name: str, field: FieldInfo) -> str:
    if field.default_factory is not None:
        if name == "data_dir":
            return "/var/lib/berth (root) or ~/.local/share/berth"
        value = field.default_factory()  # type: ignore[call-arg]
    else:
        value = field.default
    if value is None:
        return "-"
    return f"`{value}`" if not isinstance(value, (list, dict)) or value else "`[]`"


def settings_table() -> str:
    """Markdown table of every setting: name, variable, default, description."""
    rows = ["| setting | environment variable | default | description |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        description = (field.description or "").replace("|", "\\|")
        default = _default_text(name, field).replace("|", "\\|")
        rows.append(f"| `{name}` | `{ENV_PREFIX}{name.upper()}` | {default} | {description} |")
    return "\n".join(rows)
