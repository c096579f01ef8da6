"""Pure rules of model swapping: a model's state from its definition and instance, which
engines count against the budget, what an idle model gets, and who is evicted first.

Nothing here does I/O; the controller and its evictor apply what these return.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass
from typing import Literal

from berth.worker.store import InstanceRecord, InstanceState
from berth.worker.swap._definitions import ModelDefinition

_GIB = float(1 << 30)

Eviction = Literal["sleep", "park"]


def is_asleep(definition: ModelDefinition, record: InstanceRecord | None) -> bool:
    """Asleep: put to sleep after its running engine started (a restart wakes it for good)."""
    if record is None or record.state is not InstanceState.RUNNING or definition.asleep_since is None:
        return False
    return record.started_at is None or definition.asleep_since >= record.started_at


def model_state(definition: ModelDefinition, record: InstanceRecord | None) -> tuple[str, str]:
    """(state, reason): parked, starting, running, asleep, stopping or failed."""
    if record is None:
        return "parked", "no engine runs; the next request starts one"
    if record.state is InstanceState.RUNNING:
        if is_asleep(definition, record):
            return "asleep", f"sleeping at level {definition.sleep_level}; the next request wakes it"
        return "running", ""
    if record.state in (InstanceState.PENDING, InstanceState.STARTING):
        return "starting", record.reason
    if record.state is InstanceState.STOPPING:
        return "stopping", record.reason
    return "failed", record.reason or f"the engine {record.state.value}"


def awake_ids(
    records: Iterable[InstanceRecord], definitions: Mapping[str, ModelDefinition], also: Set[str] = frozenset()
) -> set[str]:
    """Instances whose engines hold the accelerator: active ones (registered or not) not asleep,
    and those in ``also`` (engines being evicted: they hold it until they are gone)."""
    found = set()
    for record in records:
        definition = definitions.get(record.id)
        if record.id in also or (record.state.active and (definition is None or not is_asleep(definition, record))):
            found.add(record.id)
    return found


def awake_engines(records: Iterable[InstanceRecord], definitions: Mapping[str, ModelDefinition]) -> int:
    """Engines holding the accelerator: active instances (any, registered or not) not asleep."""
    return len(awake_ids(records, definitions))


def eviction_for(definition: ModelDefinition, asleep: bool) -> Eviction:
    """Sleep where the engine supports it (and is awake); else park."""
    return "sleep" if definition.can_sleep and not asleep else "park"


def idle_action(
    definition: ModelDefinition,
    state: str,
    *,
    now: float,
    last_used: float,
    idle_timeout: float | None,
    asleep_timeout: float | None,
) -> Eviction | None:
    """What the idle policy does to a model now (None: leave it): an engine unused for its idle
    timeout sleeps (or is parked), one asleep for ``asleep_timeout`` is parked. Pinned: never."""
    if definition.pinned:
        return None
    timeout = definition.idle_timeout if definition.idle_timeout is not None else idle_timeout
    if state == "running" and timeout is not None and now - last_used >= timeout:
        return eviction_for(definition, asleep=False)
    if state == "asleep" and asleep_timeout is not None and definition.asleep_since is not None:
        return "park" if now - definition.asleep_since >= asleep_timeout else None
    return None


@dataclass(frozen=True, slots=True)
class Candidate:
    definition: ModelDefinition
    asleep: bool
    last_used: float


def lru(candidates: Iterable[Candidate]) -> list[Candidate]:
    """Least recently used first; pinned ones are never candidates."""
    return sorted((c for c in candidates if not c.definition.pinned), key=lambda c: c.last_used)


def claimed_gib(record: InstanceRecord, gpu: int, definition: ModelDefinition | None) -> float:
    """Accelerator memory (GiB) an awake engine holds on ``gpu``: its model's ``gpu_memory_gib``,
    else the vram of its spec's ``computed_resource_claim`` (what GPUStack scheduled), else 0."""
    if definition is not None and definition.gpu_memory_gib is not None:
        return definition.gpu_memory_gib
    claim = ((record.spec.get("instance") or {}).get("computed_resource_claim") or {}).get("vram") or {}
    value = claim.get(str(gpu), claim.get(gpu))  # type: ignore[call-overload]
    return float(value) / _GIB if isinstance(value, (int, float)) else 0.0


def gpu_usage(
    records: Iterable[InstanceRecord], definitions: Mapping[str, ModelDefinition], also: Set[str] = frozenset()
) -> dict[int, float]:
    """GiB held per GPU by awake engines (sleeping ones have given their memory back), and by
    those in ``also`` (being evicted)."""
    records = list(records)
    awake = awake_ids(records, definitions, also)
    usage: dict[int, float] = {}
    for record in records:
        if record.id not in awake:
            continue
        for gpu in record.gpus:
            usage[gpu] = usage.get(gpu, 0.0) + claimed_gib(record, gpu, definitions.get(record.id))
    return usage
