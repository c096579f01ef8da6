"""The GPUStack agent keeps going and keeps its books small: loops survive unexpected errors,
an instance stopped here starts again when GPUStack assigns it here again, and what is kept per
instance is dropped once GPUStack forgets the instance."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from berth.utils.backoff import Backoff
from berth.worker import ServeManager, Settings
from berth.worker.gpustack import _agent
from berth.worker.gpustack._client import ServerUnavailable
from berth.worker.gpustack._identity import Identity, save_identity
from tests.unit.test_gpustack_agent import WORKER_ID, _instance, base, world  # noqa: F401 - fixtures

# -- bug 10 and bug 6: stops per assignment, books that shrink ---------------------------------------


def _running_here(world) -> dict[str, Any]:  # noqa: F811 - the fixture's value
    _, server, sync, _ = world
    server.objects["model-instances"][11] = _instance("scheduled")
    asyncio.run(sync.reconcile(_instance("scheduled")))
    starting = server.objects["model-instances"][11] | {"state": "starting", "resolved_path": "/models/tiny"}
    server.objects["model-instances"][11] = starting
    asyncio.run(sync.reconcile(starting))
    asyncio.run(sync.report())
    return server.objects["model-instances"][11]


def test_an_instance_moved_away_and_scheduled_here_again_starts_again(world):  # noqa: F811
    manager, server, sync, _ = world
    running = _running_here(world)
    moved = running | {"worker_id": 1, "state": "running"}
    server.objects["model-instances"][11] = moved
    asyncio.run(sync.resync([moved]))
    assert not manager.list()  # moved to worker 1: stopped here
    asyncio.run(sync.reconcile(running))  # a stale snapshot of the old assignment never revives it
    assert not manager.list()

    again = moved | {"worker_id": WORKER_ID, "state": "scheduled", "port": None, "ports": []}
    server.objects["model-instances"][11] = again
    asyncio.run(sync.reconcile(again))
    assert server.objects["model-instances"][11]["state"] == "initializing"  # a new assignment: started again


def test_locks_and_stops_are_dropped_once_gpustack_forgets_the_instance(world):  # noqa: F811
    manager, server, sync, _ = world
    _running_here(world)
    assert sync._locks == {}  # a lock lives only while someone holds or waits for it
    asyncio.run(sync.on_event({"type": 3, "id": 11, "data": {"id": 11}}))
    del server.objects["model-instances"][11]
    assert 11 in sync._stopped and not manager.list()
    asyncio.run(sync.resync([]))  # GPUStack lists it no more
    assert sync._stopped == {} and sync._locks == {}


# -- bug 4: loops that survive --------------------------------------------------------------------


class QuietGPUStack:
    """Answers registration and heartbeats; lists nothing; its watch streams close at once."""

    def __init__(self) -> None:
        self.token: str | None = None
        self.heartbeats = 0
        self.watches: list[str] = []

    async def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        if path == "/workers":
            return {"id": WORKER_ID, "worker_uuid": "uuid", "name": "w", "token": "worker-secret"}
        if path == "/worker-heartbeat":
            self.heartbeats += 1
        return {}

    async def list_all(self, kind: str) -> list[dict[str, Any]]:
        return []

    async def watch(self, kind: str):  # type: ignore[no-untyped-def]
        self.watches.append(kind)
        await asyncio.sleep(0.01)
        raise ServerUnavailable(f"watch {kind}: the server closed the stream")
        yield {}  # an async generator, like the real one

    async def close(self) -> None:
        return None


def test_loops_survive_a_failed_resync_and_a_failed_identity_save(tmp_path, monkeypatch, caplog):
    settings = Settings.load(data_dir=tmp_path, gpustack_url="http://gpustack.invalid", gpustack_token="reg",
                             gpustack_heartbeat_interval=0.01, gpustack_status_interval=60,
                             gpustack_resync_interval=60, poll_interval=60)
    agent = _agent.GPUStackAgent(ServeManager(settings))
    server = QuietGPUStack()
    agent.client = server  # type: ignore[assignment]
    monkeypatch.setattr(Backoff, "next", lambda self: 0.01)
    saves: list[Identity] = []

    def save(data_dir, identity: Identity) -> None:  # type: ignore[no-untyped-def]
        saves.append(identity)
        if len(saves) == 1:
            raise OSError(28, "No space left on device")
        save_identity(data_dir, identity)

    resyncs: list[int] = []

    async def resync(instances: list[dict[str, Any]]) -> None:
        resyncs.append(len(instances))
        if len(resyncs) == 1:
            raise KeyError("model_id")

    async def no_periodic_resync() -> None:  # only the watch resyncs: it meets the KeyError
        return None

    monkeypatch.setattr(_agent, "save_identity", save)
    agent.instances.resync = resync  # type: ignore[method-assign]
    agent._resync = no_periodic_resync  # type: ignore[method-assign]
    caplog.set_level("DEBUG", logger="berth.worker.gpustack._agent")

    async def run() -> None:
        await agent.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (server.heartbeats < 3 or server.watches.count("model-instances") < 2):
            await asyncio.sleep(0.01)
        await agent.stop()

    asyncio.run(run())
    assert len(saves) >= 2 and server.heartbeats >= 3  # joined after the failed save, heartbeating
    assert len(resyncs) >= 2 and server.watches.count("model-instances") >= 2  # the watch went on
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("OSError" in w and "No space left" in w for w in warnings), warnings
    assert any("KeyError" in w and "model_id" in w for w in warnings), warnings
    assert not any("worker-secret" in r.getMessage() for r in caplog.records)
