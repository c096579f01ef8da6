"""Re-applying an instance's runtime LoRA adapters once per engine start (run by the watcher).

No lock is held while the engine is asked: each adapter's name is claimed in the worker's
:class:`~berth.worker.loras.NameClaims` for the time of its load (a name a user is loading or
unloading right now is left for a later tick), and an engine start counts as confirmed only if
the record still shows that same start afterwards.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from berth.worker.loras import EngineRefused, runtime_loras
from berth.worker.reconcile._context import WorkerContext
from berth.worker.store import InstanceRecord, InstanceState

logger = logging.getLogger(__name__)


class LoraKeeper:
    """Loads a running instance's recorded adapters into its engine once per engine start.

    The watcher calls :meth:`ensure` for every running instance on each tick; an engine is
    checked once per ``(instance, started_at)``, so both a restarted engine and one re-adopted by a
    new worker process (which knows no engine yet) get their adapters back. An engine that
    cannot be asked, or refuses, is retried on the next tick. :meth:`keep_only` drops what it
    remembers of instances that are gone (the watcher calls it every tick).
    """

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self._done: dict[str, float | None] = {}
        self._guard = threading.Lock()

    def confirmed(self, record: InstanceRecord) -> bool:
        with self._guard:
            return record.id in self._done and self._done[record.id] == record.started_at

    def confirm(self, record: InstanceRecord) -> None:
        with self._guard:
            self._done[record.id] = record.started_at

    def forget(self, instance_id: str) -> None:
        with self._guard:
            self._done.pop(instance_id, None)

    def keep_only(self, instance_ids: Iterable[str]) -> None:
        """Forget every instance not in ``instance_ids`` (deleted ones)."""
        live = set(instance_ids)
        with self._guard:
            for gone in [key for key in self._done if key not in live]:
                del self._done[gone]

    def __len__(self) -> int:
        with self._guard:
            return len(self._done)

    def ensure(self, record: InstanceRecord) -> None:
        """Load what the record lists and the engine lacks (nothing when none is recorded)."""
        if record.state is not InstanceState.RUNNING:
            self.forget(record.id)
            return
        if self.confirmed(record) or not self._reapply(record):
            return
        current = self.ctx.registry.get(record.id)
        if current is not None and current.state is InstanceState.RUNNING and current.started_at == record.started_at:
            self.confirm(current)

    def _reapply(self, record: InstanceRecord) -> bool:
        """Whether every recorded adapter is in the engine now."""
        wanted = runtime_loras(record)
        if not wanted:
            return True
        base_url = str(record.endpoints.base_url)
        try:
            present = self.ctx.engine.loaded_loras(base_url)
            loads = [self._load(record, base_url, e["name"], e["path"]) for e in wanted if e["name"] not in present]
            return all(loads)  # every missing one tried, not only up to the first left for later
        except EngineRefused as exc:
            logger.warning("instance %s: cannot load its LoRA adapters again yet (%s); will retry", record.id, exc)
            return False

    def _load(self, record: InstanceRecord, base_url: str, name: str, path: str) -> bool:
        if not self.ctx.lora_claims.try_take(name, record.id):
            return False  # a user's load or unload of it is in flight: the next tick looks again
        try:
            if not self._still_wanted(record, name, path):
                return True  # unloaded or replaced since the record was read: nothing to do
            self.ctx.engine.load_lora(base_url, name, path)
        finally:
            self.ctx.lora_claims.release(name)
        logger.info("instance %s: LoRA adapter %s loaded again", record.id, name)
        return True

    def _still_wanted(self, record: InstanceRecord, name: str, path: str) -> bool:
        current = self.ctx.registry.get(record.id)
        return (current is not None and current.started_at == record.started_at
                and {"name": name, "path": path} in runtime_loras(current))
