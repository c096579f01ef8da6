"""GPUStack's model files on this worker: the step between ``initializing`` and ``starting``.

For each instance it places here, GPUStack creates a model file in state ``downloading`` for this
worker and waits for the worker to report it ``ready`` with its ``resolved_paths``; then it moves
the instance to ``starting`` with ``resolved_path`` set. berth runs models from local paths only
(it never reaches a model hub): a ``local_path`` present here is reported ready with its weight
size; a missing path, or a hub source, is reported ``error`` saying so.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from berth.worker.gpustack._client import GPUStackClient, ServerRefused

logger = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def weight_size(path: Path) -> int:
    """Bytes of weight files directly in ``path`` (a directory) or of ``path`` itself (a file)."""
    if path.is_file():
        return path.stat().st_size
    return sum(entry.stat().st_size for entry in path.iterdir() if entry.is_file() and entry.name.endswith(WEIGHT_SUFFIXES))


def check_local_model(file: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """(state, message, fields) for a model file: ``ready`` with its paths and size, or ``error``."""
    source = file.get("source")
    if source != "local_path":
        return "error", (f"berth does not download models (source {source!r}); deploy the model from a "
                         "local_path present on this worker"), {}
    local = file.get("local_path") or ""
    path = Path(local)
    if not path.is_absolute() or not path.exists():
        return "error", f"local_path {local!r} does not exist on this worker", {}
    try:
        size = weight_size(path)
    except OSError as exc:
        return "error", f"local_path {local!r} cannot be read on this worker: {exc.strerror}", {}
    return "ready", "", {"resolved_paths": [os.path.normpath(local)], "size": size, "download_progress": 100}


class FileSync:
    """Answers GPUStack's model files assigned to this worker."""

    def __init__(self, client: GPUStackClient, worker_id: int, limiter: anyio.CapacityLimiter | None = None) -> None:
        self.client = client
        self.worker_id = worker_id
        self._limiter = limiter

    async def on_event(self, event: dict[str, Any]) -> None:
        if event.get("type") in (1, 2):
            await self.handle(event.get("data") or {})

    async def resync(self, files: list[dict[str, Any]]) -> None:
        for file in files:
            await self.handle(file)

    async def handle(self, file: dict[str, Any]) -> None:
        if file.get("worker_id") != self.worker_id or file.get("state") != "downloading":
            return
        state, message, fields = await anyio.to_thread.run_sync(check_local_model, file, limiter=self._limiter,
                                                                abandon_on_cancel=True)

        def change(current: dict[str, Any]) -> dict[str, Any] | None:
            if current.get("state") != "downloading":
                return None
            return current | fields | {"state": state, "state_message": message}

        try:
            await self.client.update("model-files", file["id"], change)
        except ServerRefused as exc:
            if exc.status != 404:
                raise
            return
        logger.info("GPUStack model file %s: reported %s%s", file["id"], state, f" ({message})" if message else "")
