"""What a worker of the previous release left in its data directory loads in this one.

The files in ``tests/fixtures/previous_release/`` were written by berth before the worker became
sub-packages (``make.py`` there says how): the registry (a running instance with a runtime LoRA
adapter, a Ray leader with its join check), the swap definitions (one pinned and asleep) and
the GPUStack identity. An upgraded worker re-adopts the instances, keeps what they recorded and
what swap knew, and rejoins GPUStack as the same worker.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from gpustack_runtime.deployer import Container, ContainerExecution, WorkloadPlan

from berth.deployers.base import INSTANCE_LABEL, MANAGED_LABEL
from berth.deployers.memory import MemoryDeployer
from berth.schemas.workload import WorkloadState
from berth.testing.fakes import FakeProbe
from berth.worker import InstanceState, ServeManager, Settings
from berth.worker.gpustack._identity import load_identity
from berth.worker.reconcile._lifecycle import OWNER_LABEL, owner_value
from berth.worker.store import RayJoin, RuntimeLora
from berth.worker.swap import DefinitionStore, SwapController

PREVIOUS = Path(__file__).resolve().parent.parent / "fixtures" / "previous_release"


@pytest.fixture
def data(tmp_path) -> Path:
    target = tmp_path / "data"
    target.mkdir()
    for name in ("registry.db", "swap.db", "gpustack/identity.json"):
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PREVIOUS / name, target / name)
    return target


def _running(deployer: MemoryDeployer, data: Path, *names: str) -> None:
    """The workloads the previous worker left running, labelled as it labelled them."""
    owner = owner_value(data)
    for name in names:
        deployer.create(WorkloadPlan(
            name=name, labels={MANAGED_LABEL: "true", INSTANCE_LABEL: name, OWNER_LABEL: owner},
            containers=[Container(name="default", image="x", execution=ContainerExecution(command=["vllm"]))]))


@pytest.fixture
def manager(data):
    deployer = MemoryDeployer(initial=WorkloadState.RUNNING)
    _running(deployer, data, "lone", "lead")
    settings = Settings.load(data_dir=data, instance_port_range="47000-47099", ray_port_range="47200-47399",
                             poll_interval=3600)
    manager = ServeManager(settings, deployer=deployer, probe=FakeProbe()).start(watch=False)
    yield manager
    manager.close()


def test_the_previous_registry_is_read_and_its_instances_readopted(manager):
    assert sorted(manager.recovery.adopted) == ["lead", "lone"] and manager.recovery.orphans_stopped == []
    lone = manager.get("lone")
    assert lone.state is InstanceState.RUNNING and lone.started_at == 100.0 and lone.revision == 4  # re-adopted as it was
    assert lone.endpoints.base_url == "http://127.0.0.2:47000" and lone.endpoints.served_names == ("m",)
    assert lone.endpoints.loras == (RuntimeLora("adapter-a", "/adapters/a"),)
    lead = manager.get("lead")
    assert lead.endpoints.ray_join == RayJoin("127.0.0.2:47200", "http://127.0.0.2:47202", "127.0.0.2",
                                              {"127.0.0.3": "worker 2"})
    held = manager.holdings().ports
    assert held[47000] == "lone" and held[47003] == "lead" and held[47250] == "lead"  # the band too
    assert manager.reserve_ports("gpustack-9", 1) == [47004]  # nothing of theirs is handed out again


def test_the_previous_registry_keeps_its_stored_shape(manager):
    lone = manager.get("lone")
    assert lone.endpoints.to_json() == {
        "base_url": "http://127.0.0.2:47000", "readiness_url": "http://127.0.0.2:47000/health",
        "served_names": ["m"], "loras": [{"name": "adapter-a", "path": "/adapters/a"}],
    }
    assert manager.get("lead").endpoints.to_json()["ray_join"] == {
        "head": "127.0.0.2:47200", "dashboard": "http://127.0.0.2:47202", "leader_ip": "127.0.0.2",
        "followers": {"127.0.0.3": "worker 2"},
    }
    assert manager.events_since(0)[0].type == "created" and manager.revision >= 8  # numbering goes on


def test_closing_the_upgraded_worker_leaves_the_workloads_running(manager):
    deployer = manager.deployer
    manager.close()
    assert {w.name for w in deployer.list()} == {"lead", "lone"}


def test_the_previous_swap_definitions_load(data, manager):
    store = DefinitionStore(data).open()
    try:
        parked = store.get("parked-model")
        assert parked is not None and parked.pinned and parked.asleep_since == 50.0 and parked.asleep_level == 1
        assert parked.request["options"] == "--model /models/p --served-model-name parked-model"
        other = store.get("other")
        assert other is not None and other.idle_timeout == 30 and not other.pinned
    finally:
        store.close()
    swap = SwapController(manager).start(policy=False)
    try:
        assert sorted(d.name for d in swap.definitions()) == ["other", "parked-model"]
        assert swap.state_of("parked-model")[0] == "parked"  # asleep before, but its engine is not running now
        assert swap.view(swap.get("parked-model"))["pinned"] is True
    finally:
        swap.close()


def test_the_previous_gpustack_identity_loads(data):
    identity = load_identity(data, "http://gpustack.example:80")
    assert identity is not None and identity.worker_id == 7 and identity.worker_name == "node-7"
    assert identity.token == "gpustack-worker-token-0123456789" and identity.token not in repr(identity)
    assert load_identity(data, "http://another-server:80") is None  # another server: join afresh
