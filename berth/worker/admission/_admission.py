"""Admitting a request: turn a launcher body or a deployment spec into the final spec of an
instance on this worker, with its ports and GPUs allocated and checked against what other
instances hold and reservations promise. Pure functions of a snapshot of those holdings (they
probe ports by binding them, so they run with no lock held); the allocator
(:mod:`berth.worker.admission._allocator`) checks the result again under its lock before it is
recorded. No workload is touched here.

An instance holds its ports as a whole: every port of the scheduler's list (named or not) and
its Ray band, as one :class:`~berth.schemas.InstancePorts` stored with its record, so no port of
it can be handed to another instance until it is deleted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from berth.backends import PlanError, get_backend
from berth.schemas import BerthConfig, DeploymentSpec, InstancePorts
from berth.utils.ports import parse_port_range
from berth.worker.admission._allocation import GPUAllocator, PortAllocator, expand_ports
from berth.worker.admission._env_policy import check_env
from berth.worker.admission._launcher_spec import (
    LauncherRequest,
    build_launcher_spec,
    parse_options,
)
from berth.worker.errors import InvalidRequest
from berth.worker.settings import Settings
from berth.worker.store import InstanceRecord

_VISIBLE = "CUDA_VISIBLE_DEVICES"


@dataclass(frozen=True, slots=True)
class Holdings:
    """Ports and GPU indexes held by existing instances, each mapped to its holder's id, and
    ports reserved for instances not created yet, mapped to the reservation's key (the id the
    instance will have)."""

    ports: dict[int, str] = field(default_factory=dict)
    gpus: dict[int, str] = field(default_factory=dict)

    @classmethod
    def of(cls, records: Iterable[InstanceRecord],
           reservations: Mapping[str, Iterable[int]] | None = None) -> Holdings:
        ports: dict[int, str] = {}
        gpus: dict[int, str] = {}
        for key, reserved in (reservations or {}).items():
            ports.update(dict.fromkeys(reserved, key))
        for record in records:
            ports.update(dict.fromkeys(expand_ports(record.ports), record.id))
            gpus.update(dict.fromkeys(record.gpus, record.id))
        return cls(ports, gpus)


@dataclass(frozen=True, slots=True)
class Admitted:
    """A request made concrete: the spec to plan, and the GPUs and ports (Ray band included) it
    holds; ``shared`` when its GPUs were asked for by name with sharing allowed."""

    spec: DeploymentSpec
    gpus: list[int]
    ports: InstancePorts
    shared: bool = False

    @property
    def ray_range(self) -> str | None:
        return self.ports.ray_range


def _allocators(settings: Settings) -> tuple[PortAllocator, GPUAllocator]:
    ports = PortAllocator(settings.instance_port_range, settings.ray_port_range, settings.ray_band_size)
    return ports, GPUAllocator(settings.gpu_devices)


def free_ports(count: int, settings: Settings, held: Holdings) -> list[int]:
    """The ``count`` lowest ports of ``instance_port_range`` neither held nor bound on this host."""
    ports, _ = _allocators(settings)
    return ports.allocate(count, set(held.ports))


def _launcher_gpus(request: LauncherRequest, env: dict[str, str], count: int, settings: Settings,
                   held: Holdings) -> tuple[list[int], bool]:
    """The instance's GPU indexes, and whether they may be shared (named, with sharing allowed)."""
    gpus = GPUAllocator(settings.gpu_devices)
    wanted = request.gpu_uuids
    field_name = "gpu_uuids"
    if wanted is None and settings.gpu_devices and _VISIBLE in env:
        wanted = [part for part in env.pop(_VISIBLE).split(",") if part.strip()]
        field_name = f"env_vars.{_VISIBLE}"
    if wanted is None:
        return gpus.pick(count if settings.gpu_devices else 0, held.gpus), False
    indexes = gpus.resolve(wanted, field_name)
    gpus.check_free(indexes, held.gpus, field_name, shared=request.allow_shared_gpus)
    return indexes, request.allow_shared_gpus


def admit_launcher(instance_id: str, request: LauncherRequest, settings: Settings, held: Holdings) -> Admitted:
    """The spec of a launcher-style instance: options read, env checked, port and GPUs given."""
    options = parse_options(request.options)
    env = check_env(request.env_vars, allowed=settings.allowed_env, field="env_vars")
    gpu_indexes, shared = _launcher_gpus(request, env, options.gpu_count, settings, held)
    ports, _ = _allocators(settings)
    if options.port is not None:
        ports.check([options.port], held.ports, "options: --port")
        port = options.port
    else:
        port = ports.allocate(1, set(held.ports))[0]
    spec = build_launcher_spec(instance_id, options, env=env, port=port, gpu_indexes=gpu_indexes, settings=settings,
                               profile=request.profile)
    return Admitted(spec=spec, gpus=gpu_indexes, ports=InstancePorts.from_list([port]), shared=shared)


def _merged_config(spec: DeploymentSpec, settings: Settings) -> BerthConfig:
    """The worker's config, overridden by the fields the spec sets explicitly and may change."""
    base = settings.to_berth_config()
    given = {name: getattr(spec.config, name) for name in spec.config.model_fields_set}
    for name, value in given.items():
        if name not in settings.spec_overrides and value != getattr(base, name):
            raise InvalidRequest(
                f"config.{name}: this worker sets it and a request may not change it (it decides what "
                f"runs and as whom); leave it out, or allow it on the worker with BERTH_SPEC_OVERRIDES={name}"
            )
    return base.model_copy(update=given)


def _spec_ports(spec: DeploymentSpec, distributed: bool, ports: PortAllocator, held: Holdings) -> list[int]:
    if spec.instance.ports:
        ports.check(spec.instance.ports, held.ports, "instance.ports")
        return list(spec.instance.ports)
    return ports.allocate(3 if distributed else 1, set(held.ports))


def _ray_range(spec: DeploymentSpec, config: BerthConfig, ports: PortAllocator, held: Holdings) -> str:
    if "ray_port_range" not in spec.config.model_fields_set:
        return ports.allocate_band(set(held.ports))
    start, end = parse_port_range(config.ray_port_range)
    owner = next((held.ports[p] for p in range(start, end + 1) if p in held.ports), None)
    if owner is not None:
        raise InvalidRequest(f"config.ray_port_range {config.ray_port_range} overlaps instance {owner!r}'s ports")
    return config.ray_port_range


def admit_spec(spec: DeploymentSpec, settings: Settings, held: Holdings, *, shared_gpus: bool) -> Admitted:
    """A deployment spec made concrete here: worker config merged, ports, Ray band and GPUs checked."""
    ports, gpus = _allocators(settings)
    config = _merged_config(spec, settings)
    distributed = bool(spec.instance.subordinate_workers)
    instance_ports = _spec_ports(spec, distributed, ports, held)
    ray_range = _ray_range(spec, config, ports, held) if distributed else None
    if ray_range is not None:
        config = config.model_copy(update={"ray_port_range": ray_range})
    env = check_env(spec.model.env, allowed=settings.allowed_env, field="model.env")
    model = spec.model.model_copy(update={"env": env or spec.model.env})
    instance = spec.instance.model_copy(update={"ports": instance_ports})
    final = spec.model_copy(update={"config": config, "instance": instance, "model": model})
    indexes = _spec_gpus(final)
    gpus.check_free(indexes, held.gpus, "instance.gpu_indexes", shared=shared_gpus)
    return Admitted(spec=final, gpus=indexes, ports=InstancePorts.from_list(instance_ports, ray_range=ray_range),
                    shared=shared_gpus)


def _spec_gpus(spec: DeploymentSpec) -> list[int]:
    """This worker's GPU indexes for the spec (a follower's come from its subordinate entry)."""
    try:
        return get_backend(spec.model.backend).from_spec(spec).gpu_indexes()
    except PlanError as exc:
        raise InvalidRequest(str(exc)) from None
