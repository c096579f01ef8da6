"""Ports in one shape: the scheduler's list -> InstancePorts -> the registry -> the API, held
and released as a whole."""

from __future__ import annotations

import pytest

from berth.deployers.memory import MemoryDeployer
from berth.schemas import InstancePorts
from berth.testing.fakes import FakeProbe
from berth.worker import ServeManager, Settings
from berth.worker.admission import _admission as admission
from berth.worker.admission._admission import Holdings
from berth.worker.admission._allocation import GPUAllocator, PortAllocator, expand_ports
from berth.worker.errors import InstanceConflict
from berth.worker.store._registry import InstanceRecord
from tests.support.specs import local_spec

FOUR = [47000, 47001, 47002, 47003]


def test_the_scheduler_list_by_name_and_back() -> None:
    ports = InstancePorts.from_list(FOUR, ray_range="47100-47139")
    assert (ports.http, ports.dp_rpc, ports.master, ports.distributed) == (47000, 47001, 47002, 47003)
    assert ports.to_list() == FOUR
    assert ports.held() == set(FOUR) | set(range(47100, 47140))
    assert InstancePorts.model_validate(ports.stored()) == ports
    assert InstancePorts.from_list([5, 6]).to_list() == [5, 6]  # dp_rpc and distributed are one port


def test_a_bad_band_or_port_is_refused() -> None:
    with pytest.raises(ValueError):
        InstancePorts(ray_range="nonsense")
    with pytest.raises(ValueError):
        InstancePorts(extra=(70000,))


def test_holdings_hold_every_port_of_a_four_port_list() -> None:
    record = InstanceRecord(id="four", source="spec", spec={}, deployer="memory", workload="four",
                            ports=InstancePorts.from_list(FOUR).stored(), gpus=[])
    held = Holdings.of([record])
    assert set(held.ports) == set(FOUR) and expand_ports(record.ports) == set(FOUR)
    allocator = PortAllocator("47000-47004", "41000-41099", 20, is_free=lambda port: True)
    assert allocator.allocate(1, set(held.ports)) == [47004]  # never 47002, mp's master


@pytest.fixture
def manager(tmp_path, monkeypatch):
    # Whether a port is bound on this busy host does not matter here: every port counts as free.
    def allocators(settings: Settings) -> tuple[PortAllocator, GPUAllocator]:
        ports = PortAllocator(settings.instance_port_range, settings.ray_port_range, settings.ray_band_size,
                              is_free=lambda port: True)
        return ports, GPUAllocator(settings.gpu_devices)

    monkeypatch.setattr(admission, "_allocators", allocators)
    settings = Settings.load(data_dir=tmp_path / "data", instance_port_range="47000-47004")
    mgr = ServeManager(settings, deployer=MemoryDeployer(), probe=FakeProbe()).start(watch=False)
    yield mgr
    mgr.close()


def test_no_port_of_a_four_port_list_is_handed_out_twice(manager) -> None:
    record, _ = manager.create_from_spec(local_spec("four", FOUR))
    assert InstancePorts.model_validate(record.ports).to_list() == FOUR
    assert manager.deployer.get(record.workload) is not None
    with pytest.raises(InstanceConflict, match="port 47002 is already used by instance 'four'"):
        manager.create_from_spec(local_spec("clash", [47002]))
    other, _ = manager.create_from_spec(local_spec("next"))  # allocated: the one port left
    assert InstancePorts.model_validate(other.ports).to_list() == [47004]
    manager.delete("four")  # released as a whole
    again, _ = manager.create_from_spec(local_spec("clash", [47002]))
    assert InstancePorts.model_validate(again.ports).http == 47002


def test_the_run_container_declares_every_scheduler_port(manager) -> None:
    _, plan = manager.create_from_spec(local_spec("declared", FOUR))
    run = plan.workload.containers[0]
    assert sorted(p.internal for p in run.ports or []) == FOUR
