"""ServeManager over the in-memory deployer: lifecycle, readiness, restarts, re-adoption, orphans."""

import threading
import time

import pytest

from berth.deployers.base import DeployerUnavailable, InvalidWorkload
from berth.deployers.memory import MemoryDeployer
from berth.schemas import DeploymentSpec
from berth.schemas.workload import WorkloadState
from berth.testing.fakes import FakeProbe
from berth.utils.backoff import backoff_delay
from berth.utils.ports import parse_port_range
from berth.worker import LauncherRequest, ServeManager, Settings
from berth.worker.admission._allocation import expand_ports
from berth.worker.errors import (
    DeployerDown,
    InstanceConflict,
    InvalidRequest,
    ResourceExhausted,
)
from berth.worker.reconcile._lifecycle import OWNER_LABEL
from berth.worker.store._registry import InstanceRecord, Registry
from berth.worker.store._states import InstanceState
from tests.support.ports import free_port, free_range


def settings(tmp_path, **extra):
    base = {"data_dir": tmp_path / "data", "poll_interval": 0.05, "restart_backoff": 0.01,
            "restart_backoff_max": 0.05, "stop_timeout": 1.0, "instance_port_range": free_range(100)}
    return Settings.load(**{**base, **extra})


@pytest.fixture
def deployer():
    return MemoryDeployer(initial=WorkloadState.RUNNING)


@pytest.fixture
def probe():
    return FakeProbe()


@pytest.fixture
def manager(tmp_path, deployer, probe):
    mgr = ServeManager(settings(tmp_path), deployer=deployer, probe=probe).start(watch=False)
    yield mgr
    mgr.close()


def launch(manager, instance_id=None, options="--model /models/tiny", **extra):
    return manager.create_from_launcher(LauncherRequest(options=options, **extra), instance_id)


def settle(manager, rounds=1):
    for _ in range(rounds):
        manager._watch.run_once()


def test_starting_until_health_and_models_answer(manager, probe):
    record = launch(manager, "a")
    start, end = parse_port_range(manager.settings.instance_port_range)
    assert record.state is InstanceState.STARTING and start <= record.ports["http"] <= end  # in the range, the lowest free
    settle(manager)
    assert manager.get("a").state is InstanceState.STARTING
    assert "not ready" in manager.get("a").reason
    probe.ready.add(record.endpoints.base_url)
    settle(manager)
    ready = manager.get("a")
    assert ready.state is InstanceState.RUNNING and ready.ready_at >= ready.started_at
    assert manager.metrics.start_to_ready._sum.get() >= 0  # observed once
    assert 'berth_instance_start_to_ready_seconds_count 1.0' in manager.metrics.render().decode()


def test_plan_is_recorded_before_the_workload(manager, deployer):
    seen = {}
    original = deployer.create

    def create(plan):
        seen["record"] = manager._context.registry.get(plan.name)
        return original(plan)

    deployer.create = create
    launch(manager, "b")
    assert seen["record"].state is InstanceState.PENDING
    assert deployer.created[-1].labels[OWNER_LABEL] == manager._context.owner


def test_failure_is_reported_with_exit_code(manager, deployer):
    record = launch(manager, "c")
    deployer.set_state(record.workload, WorkloadState.FAILED, exit_code=137, reason="killed by SIGKILL")
    settle(manager)
    failed = manager.get("c")
    assert failed.state is InstanceState.FAILED and failed.exit_code == 137
    assert failed.reason == "killed by SIGKILL"  # policy never: no restart note
    settle(manager, 3)
    assert manager.get("c").restarts == 0


def test_clean_exit_is_stopped(manager, deployer):
    record = launch(manager, "d", restart_policy="on-failure")
    deployer.set_state(record.workload, WorkloadState.STOPPED, exit_code=0, reason="exited with code 0")
    settle(manager, 3)
    assert manager.get("d").state is InstanceState.STOPPED and manager.get("d").restarts == 0


def test_vanished_workload_is_marked(manager, deployer):
    record = launch(manager, "e")
    deployer.delete(record.workload)
    settle(manager)
    assert manager.get("e").state is InstanceState.FAILED
    assert "gone from the memory deployer" in manager.get("e").reason


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_restart_with_bounded_backoff(manager, deployer):
    record = launch(manager, "f", restart_policy="on-failure")
    assert record.max_restarts == 3
    for attempt in range(1, 4):
        deployer.set_state(record.workload, WorkloadState.FAILED, exit_code=1, reason="exited with code 1")
        settle(manager)
        assert f"restart {attempt} of 3" in manager.get("f").reason
        assert wait_for(lambda: (manager._watch.run_once() or manager.get("f").restarts == attempt))
        assert manager.get("f").state is InstanceState.STARTING
    deployer.set_state(record.workload, WorkloadState.FAILED, exit_code=1, reason="exited with code 1")
    settle(manager, 5)
    final = manager.get("f")
    assert final.state is InstanceState.FAILED and final.restarts == 3 and "restart" not in final.reason
    assert len(deployer.created) == 4
    assert "berth_instance_restarts_total 3.0" in manager.metrics.render().decode()


def test_backoff_doubles_and_is_capped():
    assert [backoff_delay(n, 2.0, 60.0) for n in range(7)] == [2, 4, 8, 16, 32, 60, 60]
    assert backoff_delay(10**6, 1.0, 5.0) == 5.0


def test_create_errors_leave_no_record(manager, deployer):
    def refuse(plan):
        raise InvalidWorkload("argument --max-model-len: invalid int value: 'x'")

    deployer.create = refuse
    with pytest.raises(InvalidRequest, match="invalid int value"):
        launch(manager, "g")
    assert manager.list() == []

    def down(plan):
        raise DeployerUnavailable("daemon not reachable")

    deployer.create = down
    with pytest.raises(DeployerDown):
        launch(manager, "g")
    assert manager.list() == []


def test_ports_and_ids_do_not_collide(manager):
    first = launch(manager, "h1")
    second = launch(manager, "h2")
    assert first.ports["http"] != second.ports["http"]
    with pytest.raises(InstanceConflict, match="instance 'h1'"):
        launch(manager, "h3", options=f"--model /m --port {first.ports['http']}")
    with pytest.raises(InstanceConflict, match="already exists"):
        launch(manager, "h1")


def test_delete_does_not_block_other_requests(tmp_path, probe):
    release = threading.Event()
    stopping = threading.Event()

    class BlockedStop(MemoryDeployer):
        def delete(self, name, *, timeout=10.0):
            if name == "slow":
                stopping.set()
                release.wait(30)
            return super().delete(name, timeout=timeout)

    mgr = ServeManager(settings(tmp_path), deployer=BlockedStop(), probe=probe).start(watch=False)
    try:
        launch(mgr, "slow")
        stopper = threading.Thread(target=mgr.delete, args=("slow",))
        stopper.start()
        assert stopping.wait(10)
        others = threading.Thread(target=lambda: (launch(mgr, "other"), mgr.list(), mgr.get("slow")))
        others.start()
        others.join(10)
        assert not others.is_alive() and stopper.is_alive()  # done while the stop still waits
        assert mgr.get("slow").state is InstanceState.STOPPING
        release.set()
        stopper.join(10)
        assert [r.id for r in mgr.list()] == ["other"]
    finally:
        release.set()
        mgr.close()


def test_delete_all_runs_grace_periods_side_by_side(tmp_path, probe):
    together = threading.Barrier(6, timeout=10)  # broken unless all six stops wait at once

    class SlowStop(MemoryDeployer):
        def delete(self, name, *, timeout=10.0):
            together.wait()
            return super().delete(name, timeout=timeout)

    mgr = ServeManager(settings(tmp_path), deployer=SlowStop(), probe=probe).start(watch=False)
    try:
        for index in range(6):
            launch(mgr, f"i{index}")
        assert len(mgr.delete_all()) == 6
        assert not together.broken
    finally:
        mgr.close()


def test_readoption_after_restart_loses_nothing(tmp_path, deployer, probe):
    first = ServeManager(settings(tmp_path), deployer=deployer, probe=probe).start(watch=False)
    alive = launch(first, "alive")
    probe.ready.add(alive.endpoints.base_url)
    settle(first)
    gone = launch(first, "gone")
    launch(first, "stopping")
    first._context.registry.update("stopping", state=InstanceState.STOPPING)
    first.close()  # the worker exits (or is killed): workloads keep running

    deployer.delete(gone.workload)  # vanished while the worker was down
    registry = Registry(tmp_path / "data").open()  # killed between recording and creating
    registry.insert(InstanceRecord(id="never", source="launcher", spec={}, deployer="memory", workload="never"))
    registry.close()

    second = ServeManager(settings(tmp_path), deployer=deployer, probe=probe).start(watch=False)
    try:
        assert second.get("alive").state is InstanceState.RUNNING
        assert second.get("gone").state is InstanceState.FAILED
        assert "gone from the memory deployer" in second.get("gone").reason
        assert second.get("never").state is InstanceState.FAILED
        assert "before the workload was created" in second.get("never").reason
        with pytest.raises(Exception):
            second.get("stopping")
        assert sorted(second.recovery.adopted) == ["alive"]
        assert {w.name for w in deployer.list()} == {"alive"}
    finally:
        second.close()


def test_orphans_with_our_label_are_stopped_others_left(tmp_path, deployer, probe):
    first = ServeManager(settings(tmp_path), deployer=deployer, probe=probe).start(watch=False)
    owner = first._context.owner
    first.close()
    spec_plan = launch_plan_for(tmp_path, "orphan", owner)
    foreign = launch_plan_for(tmp_path, "foreign", "someone-else")
    deployer.create(spec_plan)
    deployer.create(foreign)
    second = ServeManager(settings(tmp_path), deployer=deployer, probe=probe).start(watch=False)
    try:
        assert second.recovery.orphans_stopped == ["orphan"]
        assert {w.name for w in deployer.list()} == {"foreign"}
        assert "berth_orphan_workloads_stopped_total 1.0" in second.metrics.render().decode()
    finally:
        second.close()


def launch_plan_for(tmp_path, name, owner):
    from gpustack_runtime.deployer import Container, ContainerExecution, WorkloadPlan

    from berth.deployers.base import INSTANCE_LABEL, MANAGED_LABEL

    return WorkloadPlan(
        name=name, labels={MANAGED_LABEL: "true", INSTANCE_LABEL: name, OWNER_LABEL: owner},
        containers=[Container(name="default", image="x", execution=ContainerExecution(command=["vllm"]))],
    )


def test_record_on_another_deployer_is_not_adopted(tmp_path, deployer, probe):
    registry = Registry(tmp_path / "data").open()
    registry.insert(InstanceRecord(id="p", source="launcher", spec={}, deployer="process", workload="p",
                                   state=InstanceState.RUNNING))
    registry.close()
    mgr = ServeManager(settings(tmp_path), deployer=deployer, probe=probe).start(watch=False)
    try:
        assert mgr.get("p").state is InstanceState.FAILED
        assert "BERTH_DEPLOYER=process" in mgr.get("p").reason
    finally:
        mgr.close()


def test_logs_hide_secrets_byte_for_byte(manager, deployer):
    record = launch(manager, "s", options="--model /m --api-key topsecretkey", env_vars={"HF_TOKEN": "hf_0123456789"})
    deployer.write_log(record.workload, b"args: api_key=topsecretkey token=hf_0123456789 done\n")
    whole = manager.logs("s", 0, None)
    assert b"topsecretkey" not in whole.data and b"hf_0123456789" not in whole.data
    assert len(whole.data) == whole.total
    cut = manager.logs("s", 18, 22)  # a range that cuts through the key
    assert cut.data == b"*****" and cut.start == 18


def spec_for(name, ports=None, gpus=None, followers=False, devices=2):
    instance = {"name": name, "model_name": name, "worker_id": 1, "worker_ip": "127.0.0.1"}
    if ports:
        instance["ports"] = ports
    if gpus is not None:
        instance["gpu_indexes"] = gpus
    if followers:
        instance["distributed_servers"] = {"subordinate_workers": [{"worker_id": 2, "worker_ip": "127.0.0.2",
                                                                    "gpu_indexes": [0]}]}
    worker = {"id": 1, "ip": "127.0.0.1",
              "gpu_devices": [{"index": i, "vendor": "nvidia", "type": "cuda"} for i in range(devices)]}
    return DeploymentSpec.model_validate({
        "model": {"name": name, "image_name": "local/vllm"}, "instance": instance, "worker": worker,
        "model_path": "/models/tiny"})


def test_spec_instances_get_ports_and_ray_bands(manager):
    record, plan = manager.create_from_spec(spec_for("lead", gpus=[0], followers=True))
    assert plan.ports.http and plan.ports.dp_rpc and plan.ports.distributed
    assert record.gpus == [0]
    other, _ = manager.create_from_spec(spec_for("lead2", gpus=[1], followers=True))
    bands = [expand_ports({"ray_range": r.ports["ray_range"]}) for r in (record, other)]
    assert all(len(band) == 100 and min(band) >= 41000 and max(band) <= 41999 for band in bands)
    assert bands[0].isdisjoint(bands[1])  # (which bands depends on what the host has bound)
    assert not set(record.ports.values()) & set(other.ports.values())


def test_spec_gpu_oversubscription_refused_unless_asked(manager):
    manager.create_from_spec(spec_for("g1", gpus=[0]))
    with pytest.raises(InstanceConflict, match="GPU 0 is in use by instance 'g1'"):
        manager.create_from_spec(spec_for("g2", gpus=[0]))
    manager.create_from_spec(spec_for("g2", gpus=[0]), shared_gpus=True)


def test_spec_ports_checked(manager):
    port = free_port()
    manager.create_from_spec(spec_for("p1", ports=[port]))
    with pytest.raises(InstanceConflict, match=f"port {port}"):
        manager.create_from_spec(spec_for("p2", ports=[port]))


def test_launcher_gpus_allocated_from_worker(tmp_path, deployer, probe):
    devices = [{"index": i, "uuid": f"GPU-{i}", "vendor": "nvidia", "type": "cuda"} for i in range(2)]
    mgr = ServeManager(settings(tmp_path, gpu_devices=devices), deployer=deployer, probe=probe).start(watch=False)
    try:
        first = launch(mgr, "a")
        assert first.gpus == [0]
        assert deployer.created[-1].containers[0].resources == {"nvidia.com/devices": "0"}
        second = launch(mgr, "b", gpu_uuids=["GPU-1"])
        assert second.gpus == [1]
        with pytest.raises(ResourceExhausted):
            launch(mgr, "c")
        with pytest.raises(InstanceConflict):
            launch(mgr, "c", gpu_uuids=["GPU-0"])
        assert launch(mgr, "c", gpu_uuids=["GPU-0"], allow_shared_gpus=True).gpus == [0]
        with_env = launch(mgr, "d", env_vars={"CUDA_VISIBLE_DEVICES": "1"}, allow_shared_gpus=True)
        assert with_env.gpus == [1]
    finally:
        mgr.close()


def test_fallback_to_process_when_launcher_unavailable(tmp_path, monkeypatch):
    from berth.worker.instances import _deployer_factory as deployer_factory

    calls = []

    def fake_get(name, **options):
        calls.append(name)
        if name == "launcher":
            raise DeployerUnavailable("vLLM is not importable")
        return MemoryDeployer()

    monkeypatch.setattr(deployer_factory, "get_deployer", fake_get)
    monkeypatch.setattr(deployer_factory, "_options", lambda name, settings: {})
    deployer = deployer_factory.open_deployer(settings(tmp_path, deployer="launcher"))
    assert calls == ["launcher", "process"] and isinstance(deployer, MemoryDeployer)


def test_watcher_thread_promotes_on_its_own(tmp_path, deployer, probe):
    mgr = ServeManager(settings(tmp_path), deployer=deployer, probe=probe).start()
    try:
        record = launch(mgr, "w")
        probe.ready.add(record.endpoints.base_url)
        assert wait_for(lambda: mgr.get("w").state is InstanceState.RUNNING)
    finally:
        mgr.close()


def test_create_delete_cycles_leave_nothing(manager, deployer):
    for index in range(50):
        launch(manager, f"cycle-{index}")
        manager.delete(f"cycle-{index}")
    assert manager.list() == [] and deployer.list() == []
    assert len(manager._context.locks) == 0


def test_op_locks_are_exclusive_per_id():
    from berth.worker.reconcile._context import OpLocks

    locks = OpLocks()
    assert locks.acquire("a")
    assert not locks.acquire("a", blocking=False)
    assert locks.acquire("b", blocking=False)
    waiter = threading.Thread(target=lambda: (locks.acquire("a"), locks.release("a")))
    waiter.start()
    locks.release("a")
    waiter.join(10)
    locks.release("b")
    assert len(locks) == 0
