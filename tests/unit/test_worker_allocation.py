"""Ports and GPUs: no collision between instances or with ports bound on the host."""

import socket

import pytest

from berth.schemas import GPUDevice
from berth.worker.admission._allocation import GPUAllocator, PortAllocator, expand_ports
from berth.worker.errors import InstanceConflict, InvalidRequest, ResourceExhausted


def allocator(port_range="40000-40009", pool="41000-41099", band=20, bound=()):
    return PortAllocator(port_range, pool, band, is_free=lambda port: port not in set(bound))


def test_lowest_free_ports_skip_held_and_bound():
    ports = allocator(bound={40001})
    assert ports.allocate(3, held={40000}) == [40002, 40003, 40004]


def test_range_exhausted_is_clear():
    with pytest.raises(ResourceExhausted, match="instance_port_range 40000-40009"):
        allocator().allocate(11, held=set())


def test_ray_bands_do_not_overlap():
    ports = allocator()
    first = ports.allocate_band(set())
    held = expand_ports({"ray_range": first})
    second = ports.allocate_band(held)
    assert first == "41000-41019" and second == "41020-41039"
    assert held.isdisjoint(expand_ports({"ray_range": second}))


def test_ray_band_skips_bound_ports():
    assert allocator(bound={41005}).allocate_band(set()) == "41020-41039"


def test_ray_pool_exhausted():
    ports = allocator(pool="41000-41039")
    held = expand_ports({"ray_range": "41000-41039"})
    with pytest.raises(ResourceExhausted, match="Ray band"):
        ports.allocate_band(held)


def test_check_names_owner_and_host_binding():
    ports = allocator(bound={8000})
    with pytest.raises(InstanceConflict, match="instance 'a'"):
        ports.check([40000], {40000: "a"}, "options: --port")
    with pytest.raises(InstanceConflict, match="already in use on this host"):
        ports.check([8000], {}, "options: --port")
    ports.check([8001], {}, "options: --port")


def test_real_host_check_sees_a_listener():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(InstanceConflict):
            PortAllocator(f"{port}-{port}", "41000-41099", 20).check([port], {}, "port")


def test_expand_ports():
    assert expand_ports({"http": 1, "dp_rpc": None, "distributed": 3, "ray_range": "10-12"}) == {1, 3, 10, 11, 12}


DEVICES = [GPUDevice(index=i, uuid=f"GPU-{i}", vendor="nvidia") for i in range(4)]


def test_gpus_by_uuid_or_index():
    gpus = GPUAllocator(DEVICES)
    assert gpus.resolve(["GPU-2", "0"], "gpu_uuids") == [2, 0]
    with pytest.raises(InvalidRequest, match=r"gpu_uuids\[1\]: no GPU 'GPU-9'"):
        gpus.resolve(["GPU-1", "GPU-9"], "gpu_uuids")
    with pytest.raises(InvalidRequest, match="listed twice"):
        gpus.resolve(["GPU-1", "1"], "gpu_uuids")


def test_no_gpus_configured():
    with pytest.raises(InvalidRequest, match="no GPUs configured"):
        GPUAllocator([]).resolve(["GPU-0"], "gpu_uuids")
    assert GPUAllocator([]).pick(1, {}) == []


def test_oversubscription_refused_unless_shared():
    gpus = GPUAllocator(DEVICES)
    with pytest.raises(InstanceConflict, match="in use by instance 'x'"):
        gpus.check_free([1], {1: "x"}, "gpu_uuids", shared=False)
    gpus.check_free([1], {1: "x"}, "gpu_uuids", shared=True)


def test_pick_free_gpus():
    gpus = GPUAllocator(DEVICES)
    assert gpus.pick(2, {0: "a", 2: "b"}) == [1, 3]
    with pytest.raises(ResourceExhausted, match="needs 3 GPUs but only 2"):
        gpus.pick(3, {0: "a", 2: "b"})
