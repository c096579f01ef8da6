"""Loading and unloading runtime LoRA adapters of an instance (``ServeManager.load_lora`` and
``unload_lora``).

Concurrency: no lock is held while the engine is asked. The adapter's name is claimed first in
the worker's :class:`~berth.worker.loras.NameClaims` (one short lock over memory): the claim
fails when another live instance answers to the name or a load or unload of it is in flight, so
names stay unique on the worker even under concurrent loads. Then the engine call, then the
record's endpoints are written as a compare-and-set on its revision: retried on a newer record
of the same engine run, 409 when the instance stopped running or restarted meanwhile (a load is
then undone in the engine, as far as it still answers). The claim is released last.
"""

from __future__ import annotations

from collections.abc import Callable

from berth.worker.errors import InstanceConflict, InstanceNotFound
from berth.worker.loras import (
    EngineRefused,
    check_lora_name,
    check_lora_path,
    runtime_lora_names,
    runtime_refusal,
    served_model_names,
    serving,
)
from berth.worker.reconcile import WorkerContext
from berth.worker.store import Endpoints, InstanceRecord

_WRITE_TRIES = 5
Edit = Callable[[InstanceRecord], Endpoints]


def load_lora(ctx: WorkerContext, instance_id: str, name: str, path: str) -> InstanceRecord:
    """Load adapter ``name`` from ``path`` into the instance's engine and record it (a name the
    instance already loaded is unloaded first: vLLM refuses a second load of a name)."""
    name, path = check_lora_name(name, "name"), check_lora_path(path, "path")
    with ctx.lora_claims.held(name, instance_id, ctx.registry.all):
        record = _get(ctx, instance_id)
        base_url = _loadable(record, name)
        if name in runtime_lora_names(record):
            ctx.engine.unload_lora(base_url, name)
        ctx.engine.load_lora(base_url, name, path)
        try:
            return _write(ctx, record, lambda current: current.endpoints.with_lora(name, path))
        except InstanceConflict:
            _undo_load(ctx, base_url, name)
            raise


def unload_lora(ctx: WorkerContext, instance_id: str, name: str) -> InstanceRecord:
    """Unload an adapter from the engine and forget it (it is not loaded again on restart)."""
    name = check_lora_name(name, "name")
    with ctx.lora_claims.held(name, instance_id):
        record = _get(ctx, instance_id)
        if name not in runtime_lora_names(record):
            raise InstanceNotFound(f"instance {instance_id!r} has no runtime LoRA adapter {name!r}")
        if record.state.active and record.endpoints.base_url:
            _unload_if_loaded(ctx, serving(record), name)
        return _write(ctx, record, lambda current: current.endpoints.without_lora(name))


def _get(ctx: WorkerContext, instance_id: str) -> InstanceRecord:
    record = ctx.registry.get(instance_id)
    if record is None:
        raise InstanceNotFound(f"instance {instance_id!r} not found")
    return record


def _loadable(record: InstanceRecord, name: str) -> str:
    """The engine's base URL; 409 naming why adapters cannot be loaded into it under ``name``."""
    refusal = runtime_refusal(record.spec)
    if refusal:
        raise InstanceConflict(f"instance {record.id!r}: {refusal}")
    base_url = serving(record)
    if name in served_model_names(record) and name not in runtime_lora_names(record):
        raise InstanceConflict(f"name: {name!r} is already a served name or --lora-modules adapter of {record.id!r}")
    return base_url


def _unload_if_loaded(ctx: WorkerContext, base_url: str, name: str) -> None:
    try:
        ctx.engine.unload_lora(base_url, name)
    except EngineRefused as exc:
        if exc.status_code != 404:  # 404: the engine has it no more (restarted): forget it
            raise


def _undo_load(ctx: WorkerContext, base_url: str, name: str) -> None:
    try:
        ctx.engine.unload_lora(base_url, name)
    except EngineRefused:
        pass  # the engine is going away with the instance's state change


def _write(ctx: WorkerContext, record: InstanceRecord, edit: Edit) -> InstanceRecord:
    """Compare-and-set the record's endpoints to ``edit(record)``; see the module docstring."""
    for _ in range(_WRITE_TRIES):
        updated = ctx.registry.update_if(record.id, record.revision, endpoints=edit(record))
        if updated is not None:
            return updated
        current = ctx.registry.get(record.id)
        if current is None or (current.state, current.started_at) != (record.state, record.started_at):
            state = "gone" if current is None else current.state.value
            raise InstanceConflict(f"instance {record.id!r} changed while its adapter was loaded or unloaded "
                                   f"(now {state}); list its adapters and retry")
        record = current
    raise InstanceConflict(f"instance {record.id!r} changes too often to record its adapters; retry")
