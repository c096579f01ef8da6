"""The reconcile loops' bugs, pinned deterministically: nothing observed is lost when the record
changes under the watcher, a "re-adoption pending" reason is cleared, the LoRA keeper forgets
deleted instances and holds no instance lock while it asks an engine."""

from __future__ import annotations

import threading

import pytest

from berth.deployers.base import DeployerUnavailable
from berth.deployers.memory import MemoryDeployer
from berth.schemas.workload import WorkloadState
from berth.testing.fakes import FakeProbe
from berth.worker import LauncherRequest, ServeManager, Settings
from berth.worker.store._states import InstanceState
from tests.support.ports import free_range


def settings(tmp_path, **extra):
    base = {"data_dir": tmp_path / "data", "poll_interval": 0.05, "stop_timeout": 1.0,
            "instance_port_range": free_range(100)}
    return Settings.load(**{**base, **extra})


class SwitchableDeployer(MemoryDeployer):
    """A memory deployer that can be down (adopt and get raise) and can run a hook inside ``get``."""

    def __init__(self) -> None:
        super().__init__(initial=WorkloadState.RUNNING)
        self.is_down = False
        self.during_get = None

    def adopt(self, name, identity):
        if self.is_down:
            raise DeployerUnavailable("the engine is down")
        return super().adopt(name, identity)

    def get(self, name):
        if self.is_down:
            raise DeployerUnavailable("the engine is down")
        status = super().get(name)
        if self.during_get is not None:
            hook, self.during_get = self.during_get, None
            hook()
        return status


@pytest.fixture
def deployer():
    return SwitchableDeployer()


@pytest.fixture
def probe():
    return FakeProbe()


def running(manager, probe, instance_id="a"):
    record = manager.create_from_launcher(LauncherRequest(options="--model /models/tiny"), instance_id)
    probe.ready.add(record.endpoints.base_url)
    manager._watch.run_once()
    assert manager.get(instance_id).state is InstanceState.RUNNING
    return manager.get(instance_id)


def test_an_observed_failure_survives_a_record_change_during_the_check(tmp_path, deployer, probe):
    manager = ServeManager(settings(tmp_path), deployer=deployer, probe=probe).start(watch=False)
    try:
        record = running(manager, probe)
        deployer.set_state(record.workload, WorkloadState.FAILED, exit_code=3, reason="exited with 3")
        # between the watcher's read and its write, something else records a change (a LoRA adapter)
        deployer.during_get = lambda: manager._context.registry.update(
            "a", endpoints=record.endpoints.with_lora("x", "/a/x"))
        manager._watch.run_once()
        after = manager.get("a")
        assert after.state is InstanceState.FAILED and after.exit_code == 3
        assert after.endpoints.lora_names() == ["x"]  # the other change is kept too
    finally:
        manager.close()


def test_readoption_pending_is_cleared_once_the_watcher_sees_the_instance(tmp_path, deployer, probe):
    first = ServeManager(settings(tmp_path), deployer=deployer, probe=probe).start(watch=False)
    running(first, probe)
    first.close()
    deployer.is_down = True
    second = ServeManager(settings(tmp_path), deployer=deployer, probe=probe).start(watch=False)
    try:
        assert "re-adoption pending" in second.get("a").reason
        second._watch.run_once()
        assert "re-adoption pending" in second.get("a").reason  # still cannot be asked: kept
        deployer.is_down = False
        second._watch.run_once()
        after = second.get("a")
        assert after.state is InstanceState.RUNNING and after.reason == ""
    finally:
        second.close()


def test_the_lora_keeper_forgets_deleted_instances(tmp_path, deployer, probe):
    manager = ServeManager(settings(tmp_path), deployer=deployer, probe=probe).start(watch=False)
    try:
        for index in range(5):
            running(manager, probe, f"i{index}")
            manager._watch.run_once()
            manager.delete(f"i{index}")
        manager._watch.run_once()
        assert len(manager._watch.loras._done) == 0
    finally:
        manager.close()


def test_the_lora_keeper_holds_no_instance_lock_while_the_engine_loads(tmp_path, deployer, probe):
    manager = ServeManager(settings(tmp_path), deployer=deployer, probe=probe).start(watch=False)
    try:
        record = running(manager, probe)
        manager._context.registry.update("a", endpoints=record.endpoints.with_lora("x", "/a/x"),
                                         started_at=record.started_at + 1)  # the engine restarted
        loading, release = threading.Event(), threading.Event()
        engine = _BlockingEngine(loading, release)
        manager._watch.loras.ctx.engine = engine
        keeper = threading.Thread(target=manager._watch.loras.ensure, args=(manager.get("a"),))
        keeper.start()
        assert loading.wait(10)
        taken = manager._context.locks.acquire("a", blocking=False)  # a delete or restart could go on
        if taken:
            manager._context.locks.release("a")
        release.set()
        keeper.join(10)
        assert taken and engine.loaded == ["x"]
    finally:
        manager.close()


class _BlockingEngine:
    """Lists no adapter; a load waits for ``release`` after saying it started."""

    def __init__(self, loading: threading.Event, release: threading.Event) -> None:
        self.loading, self.release, self.loaded = loading, release, []

    def loaded_loras(self, base_url):
        return set()

    def load_lora(self, base_url, name, path):
        self.loading.set()
        self.release.wait(10)
        self.loaded.append(name)

    def close(self):
        pass
