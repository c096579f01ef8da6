"""Re-applying an instance's runtime LoRA adapters once per engine start (run by the watcher)."""

from __future__ import annotations

import logging
import threading

import httpx

from berth.worker.reconcile._context import WorkerContext
from berth.worker.engine import EngineLoras
from berth.worker.loras import EngineRefused, runtime_loras
from berth.worker.store import InstanceRecord
from berth.worker.store import InstanceState


logger = logging.getLogger(__name__)


class LoraKeeper:
    """Loads a running instance's recorded adapters into its engine once per engine start.

    The watcher calls :meth:`ensure` for every running instance on each tick; an engine is
    checked once per ``(instance, started_at)``, so both a restarted engine and one re-adopted by a
    new worker process (which knows no engine yet) get their adapters back. An engine that
    cannot be asked, or refuses, is retried on the next tick.
    """

    def __init__(self, ctx: WorkerContext, engine: EngineLoras | None = None) -> None:
        self.ctx = ctx
        self.engine = engine or EngineLoras()
        self._done: dict[str, float | None] = {}
        self._guard = threading.Lock()

    def close(self) -> None:
        self.engine.close()

    def confirmed(self, record: InstanceRecord) -> bool:
        with self._guard:
            return record.id in self._done and self._done[record.id] == record.started_at

    def confirm(self, record: InstanceRecord) -> None:
        with self._guard:
            self._done[record.id] = record.started_at

    def ensure(self, record: InstanceRecord) -> None:
        """Load what the record lists and the engine lacks (nothing when none is recorded)."""
        if record.state is not InstanceState.RUNNING:
            with self._guard:
                self._done.pop(record.id, None)
            return
        if self.confirmed(record) or not self.ctx.locks.acquire(record.id, blocking=False):
            return
        try:
            current = self.ctx.registry.get(record.id)
            if current is None or current.state is not InstanceState.RUNNING:
                return
            if self._reapply(current):
                self.confirm(current)
        finally:
            self.ctx.locks.release(record.id)

    def _reapply(self, record: InstanceRecord) -> bool:
        wanted = runtime_loras(record)
        if not wanted:
            return True
        base_url = str(record.endpoints.base_url)
        try:
            present = self.engine.loaded(base_url)
            for entry in wanted:
                if entry["name"] not in present:
                    self.engine.load(base_url, entry["name"], entry["path"])
                    logger.info("instance %s: LoRA adapter %s loaded again", record.id, entry["name"])
        except (httpx.HTTPError, ValueError, EngineRefused) as exc:
            logger.warning("instance %s: cannot load its LoRA adapters again yet (%s); will retry", record.id, exc)
            return False
        return True
