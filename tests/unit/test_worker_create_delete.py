"""Creating and deleting instances: admission and planning run with no lock held, the record is
written by a compare-and-set, and a failed delete leaves the instance as it was."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from berth.deployers.base import DeployerUnavailable
from berth.deployers.memory import MemoryDeployer
from berth.schemas.workload import WorkloadState
from berth.testing.fakes import FakeProbe
from berth.utils.ports import parse_port_range
from berth.worker import LauncherRequest, ServeManager, Settings
from berth.worker.admission import _admission as admission
from berth.worker.admission._allocation import GPUAllocator, PortAllocator
from berth.worker.errors import DeployerDown, InstanceConflict
from berth.worker.instances import _manager as manager_module
from berth.worker.store._states import InstanceState
from tests.support.ports import free_range

DEVICES = [{"index": i, "uuid": f"GPU-{i}", "vendor": "nvidia", "type": "cuda"} for i in range(2)]


@pytest.fixture(autouse=True)
def nothing_bound(monkeypatch):
    """Whether a port is bound on this busy host does not matter here: every port counts as free."""
    def allocators(settings):
        return (PortAllocator(settings.instance_port_range, settings.ray_port_range, settings.ray_band_size,
                              is_free=lambda port: True), GPUAllocator(settings.gpu_devices))

    monkeypatch.setattr(admission, "_allocators", allocators)


def make_manager(tmp_path, deployer=None, **extra):
    settings = Settings.load(data_dir=tmp_path / "data", instance_port_range=free_range(20), gpu_devices=DEVICES,
                             restart_backoff=60.0, restart_backoff_max=60.0, stop_timeout=1.0, **extra)
    return ServeManager(settings, deployer=deployer or MemoryDeployer(), probe=FakeProbe()).start(watch=False)


@pytest.fixture
def manager(tmp_path):
    mgr = make_manager(tmp_path)
    yield mgr
    mgr.close()


def launch(manager, instance_id, options="--model /models/tiny", **extra):
    return manager.create_from_launcher(LauncherRequest(options=options, **extra), instance_id)


class BarrierPlanner:
    """``plan_instance``, its first ``together`` calls held until all have been admitted: creates
    admitted on one snapshot of the holdings, none recorded yet."""

    def __init__(self, together: int = 2) -> None:
        self.barrier = threading.Barrier(together, timeout=5)
        self.together = together
        self.calls: list[str] = []
        self._lock = threading.Lock()
        self._real = manager_module.plan_instance

    def __call__(self, spec, owner):
        with self._lock:
            self.calls.append(spec.instance.name)
            first = len(self.calls) <= self.together
        if first:
            self.barrier.wait()
        return self._real(spec, owner)


def test_two_creates_admitted_on_one_snapshot_never_share_a_port(manager, monkeypatch):
    planner = BarrierPlanner()
    monkeypatch.setattr(manager_module, "plan_instance", planner)
    with ThreadPoolExecutor(2) as pool:
        records = list(pool.map(lambda name: launch(manager, name, gpu_uuids=[]), ["a", "b"]))
    low, _ = parse_port_range(manager.settings.instance_port_range)
    assert sorted(record.ports["http"] for record in records) == [low, low + 1]
    assert len(planner.calls) == 3  # both planned on one snapshot (one port), the loser once more
    loser = planner.calls[-1]
    assert manager.get(loser).ports["http"] == low + 1


def test_two_creates_admitted_on_one_snapshot_never_share_a_gpu(manager, monkeypatch):
    monkeypatch.setattr(manager_module, "plan_instance", BarrierPlanner())
    outcomes: dict[str, object] = {}

    def create(name):
        try:
            outcomes[name] = launch(manager, name, gpu_uuids=["GPU-0"])
        except InstanceConflict as exc:
            outcomes[name] = exc

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(create, ["a", "b"]))
    refused = [name for name, outcome in outcomes.items() if isinstance(outcome, InstanceConflict)]
    assert len(refused) == 1  # admitted again, it meets the winner's GPU: 409 naming it
    winner = ({"a", "b"} - set(refused)).pop()
    assert f"GPU 0 is in use by instance {winner!r}" in str(outcomes[refused[0]])
    assert [record.gpus for record in manager.list()] == [[0]]


def test_shared_gpus_may_be_admitted_together(manager, monkeypatch):
    monkeypatch.setattr(manager_module, "plan_instance", BarrierPlanner())
    with ThreadPoolExecutor(2) as pool:
        records = list(pool.map(lambda name: launch(manager, name, gpu_uuids=["GPU-0"], allow_shared_gpus=True),
                                ["a", "b"]))
    assert [record.gpus for record in records] == [[0], [0]]


def test_planning_holds_no_lock_other_creates_wait_on(manager, monkeypatch):
    release = threading.Event()
    real = manager_module.plan_instance

    def slow_plan(spec, owner):
        if spec.instance.name == "slow":
            assert release.wait(5)
        return real(spec, owner)

    monkeypatch.setattr(manager_module, "plan_instance", slow_plan)
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(launch, manager, "slow", gpu_uuids=[])
        try:
            assert launch(manager, "quick", gpu_uuids=[]).state is InstanceState.STARTING  # not behind "slow"
        finally:
            release.set()
        assert slow.result(5).ports["http"] != manager.get("quick").ports["http"]


def test_twenty_creates_of_one_id_one_wins(manager):
    def create(_):
        try:
            return launch(manager, "same", gpu_uuids=[])
        except InstanceConflict:
            return None

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(create, range(20)))
    assert sum(result is not None for result in results) == 1
    assert [record.id for record in manager.list()] == ["same"]


def test_a_failed_delete_keeps_the_scheduled_restart(manager):
    record = launch(manager, "f", restart_policy="on-failure", gpu_uuids=[])
    manager.deployer.set_state(record.workload, WorkloadState.FAILED, exit_code=1, reason="exited with code 1")
    manager._watch.run_once()
    assert manager.get("f").state is InstanceState.FAILED
    assert manager._context.restarts.pending("f")

    def down(name, timeout=None):
        raise DeployerUnavailable("daemon not reachable")

    manager.deployer.delete = down
    with pytest.raises(DeployerDown, match="cannot stop instance 'f'"):
        manager.delete("f")
    assert manager.get("f").state is InstanceState.FAILED
    assert manager._context.restarts.pending("f")  # the restart it was due is still coming
    del manager.deployer.delete
    manager.delete("f")
    assert not manager._context.restarts.pending("f")
