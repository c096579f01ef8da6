"""Registering a model: the request body, and the definition made from it.

A registration carries either a launcher body (``options``, ``env_vars``...) or a deployment
spec, exactly what the instance APIs take. berth makes the model's name its served name (adding
``--served-model-name`` when the options do not set one) and, for ``sleep_level`` 1 or 2, adds
``--enable-sleep-mode`` and ``VLLM_SERVER_DEV_MODE=1`` (vLLM's sleep endpoints). The result is
admitted and planned once against an empty worker, so a definition that could never start is
refused now, naming the field, rather than at its first request.

:func:`predicted_gpus` runs the same admission later, for the memory budget: a prediction of
where a start would land, not a reservation (see its docstring).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from berth.schemas import DeploymentSpec
from berth.utils.args import find_parameter, has_parameter
from berth.worker.admission import (
    MAX_ID_LENGTH,
    Admitted,
    Holdings,
    LauncherRequest,
    admit_launcher,
    admit_spec,
    check_instance_id,
    parse_options,
)
from berth.worker.errors import InvalidRequest, WorkerError
from berth.worker.instances import ServeManager
from berth.worker.reconcile import plan_instance
from berth.worker.settings import Settings
from berth.worker.swap._definitions import ModelDefinition

SLEEP_FLAG = "--enable-sleep-mode"
DEV_MODE_ENV = "VLLM_SERVER_DEV_MODE"
_SERVED = ["served-model-name"]
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_VLLM_GPU_SHARE = 0.9  # vLLM's default --gpu-memory-utilization


class ModelRegistration(BaseModel):
    """Body of ``POST /v2/models``: one of ``launcher`` or ``spec``, and the policy's view of it."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(
        default=None, min_length=1, max_length=256,
        description="The name requests use (`model` in /v1/*). Default: the served model name of the "
        "options or spec. Becomes --served-model-name when those set none.",
    )
    instance_id: str | None = Field(
        default=None, description="Id of the instance the model runs as (default: derived from the name)."
    )
    launcher: LauncherRequest | None = Field(
        default=None, description="Start it like POST /v2/vllm/instances would: options, env_vars, gpu_uuids."
    )
    spec: DeploymentSpec | None = Field(
        default=None, description="Start it like POST /v2/instances would: a deployment spec."
    )
    pinned: bool = Field(default=False, description="Never parked or put to sleep by the idle or budget policy.")
    idle_timeout: float | None = Field(
        default=None, gt=0, description="Seconds unused before the policy sleeps or parks it (default: the "
        "worker's swap_idle_timeout)."
    )
    sleep_level: Literal[0, 1, 2] = Field(
        default=0, description="0: parked when evicted. 1 or 2: put to sleep at this vLLM sleep level instead "
        "(GPU engines only; berth adds --enable-sleep-mode and VLLM_SERVER_DEV_MODE=1).",
    )
    gpu_memory_gib: float | None = Field(
        default=None, gt=0, description="Accelerator memory (GiB) its engine holds on each of its GPUs while "
        "awake, for the worker's swap_gpu_memory_gib budget. Default: --gpu-memory-utilization (vLLM's 0.9 "
        "when unset) times the GPU's memory_total, when the worker knows it.",
    )
    allow_shared_gpus: bool = Field(
        default=False, description="May use GPUs other instances hold (needed to swap models on one GPU while "
        "a sleeping engine keeps its claim)."
    )
    start: bool = Field(default=False, description="Start it now (the call does not wait); else it stays parked.")

    @model_validator(mode="after")
    def _one_source(self) -> ModelRegistration:
        if (self.launcher is None) == (self.spec is None):
            raise ValueError("give exactly one of launcher (options, env_vars...) or spec (a deployment spec)")
        return self


def _instance_id(registration: ModelRegistration, name: str) -> str:
    if registration.instance_id is not None:
        return check_instance_id(registration.instance_id)
    if registration.spec is not None and "name" in registration.spec.instance.model_fields_set:
        return check_instance_id(registration.spec.instance.name, "spec.instance.name")
    derived = _UNSAFE.sub("-", name.rsplit("/", 1)[-1]).replace("..", ".").strip("-_.")[:MAX_ID_LENGTH].strip("-_.")
    if not derived:
        raise InvalidRequest(f"instance_id: cannot derive an id from name {name[:60]!r}; give instance_id")
    return check_instance_id(derived, "instance_id (derived from name; give one explicitly)")


def _served_name(explicit: str | None, default: str, wanted: str | None, field: str) -> tuple[str, bool]:
    """(the model's name, whether --served-model-name must be added)."""
    if wanted is None:
        return explicit or default, False
    if explicit is not None and explicit != wanted:
        raise InvalidRequest(f"name: {wanted!r} differs from the --served-model-name {explicit!r} in {field}; "
                             "drop one of them")
    return wanted, explicit is None


def _dev_mode(env: dict[str, Any] | None, field: str) -> dict[str, Any]:
    env = dict(env or {})
    value = env.setdefault(DEV_MODE_ENV, "1")
    if str(value) != "1":
        raise InvalidRequest(f"{field}.{DEV_MODE_ENV}: sleep_level needs it to be 1 (vLLM's sleep endpoints)")
    return env


def _launcher(registration: ModelRegistration) -> tuple[str, dict[str, Any]]:
    request = registration.launcher
    assert request is not None
    options = parse_options(request.options)
    explicit = find_parameter(options.parameters, _SERVED)
    name, add = _served_name(explicit, options.served_name, registration.name, "launcher.options")
    text = request.options + (f" --served-model-name {shlex.quote(name)}" if add else "")
    update: dict[str, Any] = {"allow_shared_gpus": request.allow_shared_gpus or registration.allow_shared_gpus}
    if registration.sleep_level:
        if not has_parameter(options.parameters, [SLEEP_FLAG.lstrip("-")]):
            text += f" {SLEEP_FLAG}"
        update["env_vars"] = _dev_mode(request.env_vars, "launcher.env_vars")
    final = request.model_copy(update={"options": text, **update})
    return name, final.model_dump(mode="json", exclude_none=True)


def _spec(registration: ModelRegistration, instance_id: str) -> tuple[str, dict[str, Any]]:
    spec = registration.spec
    assert spec is not None
    params = list(spec.model.backend_parameters or [])
    explicit = find_parameter(params, _SERVED)
    name, _ = _served_name(explicit, spec.instance.model_name, registration.name, "spec.model.backend_parameters")
    instance = spec.instance.model_copy(update={"name": instance_id, "model_name": name})
    model_update: dict[str, Any] = {}
    if registration.sleep_level:
        if not has_parameter(params, [SLEEP_FLAG.lstrip("-")]):
            model_update["backend_parameters"] = [*params, SLEEP_FLAG]
        model_update["env"] = _dev_mode(spec.model.env, "spec.model.env")
    final = spec.model_copy(update={"instance": instance, "model": spec.model.model_copy(update=model_update)})
    return name, final.model_dump(mode="json", exclude_unset=True)


def _admit(definition: ModelDefinition, settings: Settings, held: Holdings, *, shared: bool) -> Admitted:
    if definition.source == "launcher":
        request = LauncherRequest.model_validate(definition.request)
        return admit_launcher(definition.instance_id, request, settings, held)
    spec = DeploymentSpec.model_validate(definition.request)
    return admit_spec(spec, settings, held, shared_gpus=shared)


def check_startable(definition: ModelDefinition, settings: Settings, owner: str) -> Admitted:
    """Admit and plan the definition against an empty worker: :class:`InvalidRequest` names what is wrong."""
    admitted = _admit(definition, settings, Holdings(), shared=True)
    plan_instance(admitted.spec, owner)
    return admitted


def predicted_gpus(definition: ModelDefinition, manager: ServeManager) -> list[int]:
    """The GPUs a start of the definition would get now ([] when it would be refused: the start
    itself then says why).

    A prediction, for the memory budget: admission is run again here, against
    ``manager.holdings()`` (every instance's ports and GPUs, GPUStack's reservations included),
    but outside the manager's allocation lock, so an instance created meanwhile may make the real
    start land elsewhere or be refused. The start admits for real under that lock; nothing here
    holds anything.
    """
    try:
        return _admit(definition, manager.settings, manager.holdings(), shared=definition.shared_gpus).gpus
    except WorkerError:
        return []


def build_definition(registration: ModelRegistration, settings: Settings, owner: str) -> ModelDefinition:
    """The definition a registration stands for, checked to be startable on this worker."""
    if registration.launcher is not None:
        name, request = _launcher(registration)
        instance_id = _instance_id(registration, name)
        source = "launcher"
    else:
        name0 = registration.name or registration.spec.instance.model_name  # type: ignore[union-attr]
        instance_id = _instance_id(registration, name0)
        name, request = _spec(registration, instance_id)
        source = "spec"
    definition = ModelDefinition(
        name=name, instance_id=instance_id, source=source, request=request, pinned=registration.pinned,
        idle_timeout=registration.idle_timeout, sleep_level=registration.sleep_level,
        shared_gpus=registration.allow_shared_gpus, gpu_memory_gib=registration.gpu_memory_gib,
    )
    admitted = check_startable(definition, settings, owner)
    if definition.gpu_memory_gib is None and admitted.gpus:
        definition = replace(definition, gpu_memory_gib=_default_gpu_memory(admitted, settings))
    return definition


def _default_gpu_memory(admitted: Admitted, settings: Settings) -> float | None:
    """vLLM's share of the smallest of the model's GPUs (``--gpu-memory-utilization``, 0.9 default)."""
    totals = [d.memory_total for d in settings.gpu_devices if d.index in admitted.gpus and d.memory_total]
    if not totals:
        return None
    text = find_parameter(admitted.spec.model.backend_parameters, ["gpu-memory-utilization"])
    try:
        share = float(text) if text is not None else _VLLM_GPU_SHARE
    except ValueError:
        share = _VLLM_GPU_SHARE
    return round(share * min(totals) / (1 << 30), 2)
