"""Port reservations: kept in the registry's file, counted with every instance's holdings, used
and consumed by the instance created under their key; and a registry written before them opens
as it is."""

from __future__ import annotations

import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing

import pytest

from berth.deployers.memory import MemoryDeployer
from berth.schemas import InstancePorts
from berth.testing.fakes import FakeProbe
from berth.utils.ports import parse_port_range
from berth.worker import LauncherRequest, ServeManager, Settings
from berth.worker.admission import _admission as admission
from berth.worker.admission._allocation import GPUAllocator, PortAllocator
from berth.worker.admission._allocator import TRIES, Allocator, Placement
from berth.worker.errors import InstanceConflict, InvalidRequest
from berth.worker.reconcile import plan_instance
from berth.worker.store._registry import REGISTRY_FILE, InstanceRecord
from tests.support.ports import free_range
from tests.support.specs import local_spec

BOUND: set[int] = set()


@pytest.fixture(autouse=True)
def host_ports(monkeypatch):
    """Ports count as bound on this host only when a test puts them in ``BOUND``."""
    BOUND.clear()

    def allocators(settings):
        return (PortAllocator(settings.instance_port_range, settings.ray_port_range, settings.ray_band_size,
                              is_free=lambda port: port not in BOUND), GPUAllocator(settings.gpu_devices))

    monkeypatch.setattr(admission, "_allocators", allocators)


def settings(tmp_path, port_range):
    return Settings.load(data_dir=tmp_path / "data", instance_port_range=port_range)


def start(tmp_path, port_range, deployer=None):
    return ServeManager(settings(tmp_path, port_range), deployer=deployer or MemoryDeployer(),
                        probe=FakeProbe()).start(watch=False)


@pytest.fixture
def port_range():
    return free_range(20)


@pytest.fixture
def low(port_range):
    return parse_port_range(port_range)[0]


@pytest.fixture
def manager(tmp_path, port_range):
    mgr = start(tmp_path, port_range)
    yield mgr
    mgr.close()


def launch(manager, instance_id):
    return manager.create_from_launcher(LauncherRequest(options="--model /models/tiny"), instance_id)


def test_reserved_ports_are_kept_from_every_other_holder(manager, low):
    assert launch(manager, "a").ports["http"] == low
    BOUND.add(low + 1)
    assert manager.reserve_ports("k", 2) == [low + 2, low + 3]  # never a held or bound one
    assert manager.reserve_ports("k", 2) == [low + 2, low + 3]  # the same key: the same ports
    assert manager.reserve_ports("k", 1) == [low + 2, low + 3]
    assert manager.reserve_ports("j", 1) == [low + 4]
    held = manager.holdings().ports
    assert (held[low], held[low + 2], held[low + 3], held[low + 4]) == ("a", "k", "k", "j")
    assert launch(manager, "b").ports["http"] == low + 5
    with pytest.raises(InstanceConflict, match=f"port {low + 2} is already used by instance 'k'"):
        manager.create_from_spec(local_spec("other", [low + 2]))


def test_a_create_under_the_key_uses_its_reserved_ports_and_consumes_them(manager, tmp_path, low):
    ports = manager.reserve_ports("gs-7", 3)
    record, _ = manager.create_from_spec(local_spec("gs-7", ports))
    assert InstancePorts.model_validate(record.ports).to_list() == ports
    assert [manager.holdings().ports[port] for port in ports] == ["gs-7"] * 3  # the instance's now
    assert manager._context.registry.reservations() == {}
    with closing(sqlite3.connect(tmp_path / "data" / REGISTRY_FILE)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM reservations").fetchone()[0] == 0
    manager.release_reservation("gs-7")  # gone already: nothing to do
    assert manager.get("gs-7").ports["http"] == low


def test_a_create_under_the_key_may_take_other_ports_and_still_consumes(manager, low):
    manager.reserve_ports("k", 1)
    record, _ = manager.create_from_spec(local_spec("k"))
    assert record.ports["http"] in (low, low + 1)
    assert manager._context.registry.reservations() == {}


def test_reservations_survive_a_restart_until_released(tmp_path, port_range, low):
    first = start(tmp_path, port_range)
    ports = first.reserve_ports("k", 2)
    first.close()
    second = start(tmp_path, port_range)
    try:
        assert second.holdings().ports == dict.fromkeys(ports, "k")
        assert second.reserve_ports("k", 2) == ports
        assert launch(second, "a").ports["http"] == low + 2
        second.release_reservation("k")
        second.release_reservation("k")  # no error when absent
        assert launch(second, "b").ports["http"] == low
    finally:
        second.close()
    third = start(tmp_path, port_range)
    try:
        assert "k" not in third.holdings().ports.values()
    finally:
        third.close()


@pytest.mark.parametrize(("key", "count"), [("", 1), ("k", 0), ("k", 65)])
def test_a_bad_reservation_is_refused_by_name(manager, key, count):
    with pytest.raises(InvalidRequest, match="reservation"):
        manager.reserve_ports(key, count)


def test_two_reservations_chosen_on_one_snapshot_never_share_a_port(manager, monkeypatch, low):
    barrier = threading.Barrier(2, timeout=5)
    calls = []
    real = Allocator._free_ports

    def free_ports(self, count):
        chosen = real(self, count)
        calls.append(chosen)
        if len(calls) <= 2:
            barrier.wait()  # both chose on one snapshot; neither is written yet
        return chosen

    monkeypatch.setattr(Allocator, "_free_ports", free_ports)
    with ThreadPoolExecutor(2) as pool:
        reserved = list(pool.map(lambda key: manager.reserve_ports(key, 1), ["x", "y"]))
    assert sorted(reserved) == [[low], [low + 1]]
    assert calls[:2] == [[low], [low]] and calls[2] == [low + 1]


def test_placement_gives_up_naming_what_collided(manager, low):
    manager.reserve_ports("k", 1)
    admitted = admission.admit_spec(local_spec("q", [low]), manager.settings, admission.Holdings(), shared_gpus=False)
    plan = plan_instance(admitted.spec, manager.owner)
    record = InstanceRecord(id="q", source="spec", spec={}, deployer="memory", workload="q")
    tries = []

    def stale(held):  # as if every snapshot were taken just before "k" reserved the port
        tries.append(held)
        return Placement(admitted, record, plan)

    with pytest.raises(InstanceConflict, match=f"instance 'q': port {low} \\(now held by 'k'\\).* {TRIES} times"):
        manager._allocation.place("q", stale, claim=lambda instance_id: None)
    assert len(tries) == TRIES and manager.find("q") is None
