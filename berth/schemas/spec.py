"""A deployment spec: everything ``plan()`` needs, as one YAML or JSON document."""

from __future__ import annotations

import json
import posixpath
import re
from typing import Any, Literal

import yaml
from pydantic import Field, field_validator

from berth.schemas._base import StrictModel
from berth.schemas.config import BerthConfig
from berth.schemas.instances import ModelInstance
from berth.schemas.models import Model
from berth.schemas.workers import Worker

__all__ = ["DeploymentSpec", "check_model_path"]

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
#: Values a spec document may hold once YAML aliases are expanded (a real spec has a few hundred).
MAX_SPEC_VALUES = 100_000


def check_model_path(value: str) -> str:
    """An absolute, normalised path (no ``..``, no NUL) or a hub id like ``org/name``."""
    if "\x00" in value:
        raise ValueError("must not contain NUL bytes")
    if value.startswith("/"):
        if ".." in value.split("/"):
            raise ValueError(f"{value!r} must not contain '..'; give the resolved path")
        return posixpath.normpath(value)
    if _REPO_ID.match(value) and ".." not in value:
        return value
    raise ValueError(f"{value!r} must be an absolute path or a hub id such as 'org/name'")


def _too_many_values(data: Any, limit: int) -> bool:
    """True when ``data`` counts more than ``limit`` values, each alias use counted again."""
    pending, seen = [data], 0
    while pending:
        seen += 1
        if seen > limit:
            return True
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


class DeploymentSpec(StrictModel):
    """Model, instance, worker and config, plus where the weights are on this node."""

    model: Model = Field(description="The model deployment (GPUStack's Model fields).")
    instance: ModelInstance = Field(description="The instance assigned to this worker.")
    worker: Worker = Field(description="This worker.")
    config: BerthConfig = Field(default_factory=BerthConfig, description="Worker settings.")
    model_path: str = Field(description="Weights directory on this node (absolute) or hub id.")
    draft_model_path: str | None = Field(
        default=None, description="Draft model directory, for speculative decoding with one."
    )
    profile: Literal["cluster", "exact"] = Field(default="cluster", description="Planning profile: 'cluster' applies GPUStack's scheduling rules (context cap, parallelism, env defaults); 'exact' runs the given options as they are, adding only --host, --port and --served-model-name where absent.")

    @field_validator("model_path", "draft_model_path")
    @classmethod
    def _checked_path(cls, value: str | None) -> str | None:
        return None if value is None else check_model_path(value)

    @classmethod
    def from_text(cls, text: str, *, source: str = "spec") -> DeploymentSpec:
        """Parse YAML or JSON text (JSON is YAML). Raises ValueError naming the problem."""
        try:
            data: Any = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"{source}: not valid YAML or JSON: {exc}") from None
        except RecursionError:
            raise ValueError(f"{source}: nested too deeply to be a deployment spec") from None
        if not isinstance(data, dict):
            raise ValueError(f"{source}: must be a mapping with model, instance, worker, model_path")
        if _too_many_values(data, MAX_SPEC_VALUES):
            raise ValueError(f"{source}: holds more than {MAX_SPEC_VALUES} values once YAML aliases are expanded")
        return cls.model_validate(data)

    def unknown_fields(self) -> list[str]:
        """GPUStack fields berth accepted but does not use (worth a warning: maybe a typo)."""
        return (
            self.model.unknown_fields("model")
            + self.instance.unknown_fields("instance")
            + self.worker.unknown_fields("worker")
        )

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", exclude_none=True), indent=2)
