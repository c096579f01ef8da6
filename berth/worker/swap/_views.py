"""The API's shapes for registered models, and the view built from a definition and its instance."""

from __future__ import annotations

import shlex
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from berth.utils.args import split_command_line
from berth.utils.env import mask_env, mask_secrets_in_args
from berth.worker.redact import masked_spec
from berth.worker.store import InstanceRecord
from berth.worker.swap._definitions import ModelDefinition
from berth.worker.swap._policy import model_state


class ModelView(BaseModel):
    """A registered model."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(description="The name requests use (`model` in /v1/*).")
    instance_id: str = Field(description="The instance it runs as, while it runs.")
    state: str = Field(description="parked, starting, running, asleep, stopping or failed.")
    transition: str | None = Field(default=None, description="starting, waking, sleeping or parking while under way.")
    reason: str = Field(description="Why it is in this state.")
    pinned: bool = Field(description="Never slept or parked by the policy.")
    sleep_level: int = Field(description="0: parked when evicted; 1 or 2: put to sleep at this level instead.")
    idle_timeout: float | None = Field(description="Its own idle timeout (s), else the worker's.")
    source: str = Field(description="launcher or spec: what it is started from.")
    base_url: str | None = Field(default=None, description="Where its engine answers while it runs.")
    last_used_at: float | None = Field(default=None, description="Last request routed to it (epoch s).")
    last_path: str | None = Field(default=None, description="How its last activation made it ready: woken, forked, cold.")
    last_seconds: float | None = Field(default=None, description="How long its last activation took (s).")


class ModelList(BaseModel):
    models: list[ModelView]


class ActivationView(ModelView):
    path: str = Field(description="What this call did: running (nothing), woken, forked or cold.")
    seconds: float = Field(description="Seconds this call waited for the model.")


def masked_request(definition: ModelDefinition) -> dict[str, Any]:
    """The stored launcher body or spec with secret env values and option values masked."""
    if definition.source == "spec":
        return masked_spec(definition.request)
    shown = dict(definition.request)
    if shown.get("env_vars"):
        shown["env_vars"] = mask_env({k: str(v) for k, v in shown["env_vars"].items()})
    if shown.get("options"):
        shown["options"] = shlex.join(mask_secrets_in_args(split_command_line(shown["options"])))
    return shown


def model_view(
    definition: ModelDefinition,
    record: InstanceRecord | None,
    *,
    transition: str | None,
    last_used: float | None,
    last_path: str | None,
    last_seconds: float | None,
) -> dict[str, Any]:
    """The API's view of a model: its definition, its instance (None: parked), its transition under
    way, its last request and how its last activation went (path, seconds)."""
    state, reason = model_state(definition, record)
    return {
        "name": definition.name,
        "instance_id": definition.instance_id,
        "state": state,
        "transition": transition,
        "reason": reason,
        "pinned": definition.pinned,
        "sleep_level": definition.sleep_level,
        "idle_timeout": definition.idle_timeout,
        "source": definition.source,
        "base_url": record.endpoints.base_url if record is not None else None,
        "last_used_at": last_used,
        "idle_seconds": round(time.time() - last_used, 1) if last_used else None,
        "last_path": last_path,
        "last_seconds": round(last_seconds, 3) if last_seconds is not None else None,
        "request": masked_request(definition),
    }
