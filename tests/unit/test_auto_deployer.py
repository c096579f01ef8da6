"""``auto`` decides per plan: the launcher for what it can run, the process deployer for the rest.

The plans are the planner's own (a single instance, a Ray leader with its ``ray-head`` sidecar,
a Ray follower, an mp follower running ``--headless``, a data-parallel instance); the launcher's
and the process deployer's ``check`` are the real ones. What runs is recorded by in-memory
stand-ins, so nothing is started.
"""

from __future__ import annotations

import pytest
from gpustack_runtime.deployer import WorkloadPlan

from berth.deployers import AutoDeployer, Deployer, InvalidWorkload, WorkloadNotFound
from berth.deployers.launcher import LauncherDeployer
from berth.deployers.launcher import deployer as launcher_module
from berth.deployers.memory import MemoryDeployer
from berth.deployers.process import ProcessDeployer
from berth.schemas.workload import WorkloadState
from tests.support.specs import distributed, make_plan

MP = {"backend_parameters": ["--distributed-executor-backend", "mp"]}
PLANS = {
    "single": lambda: make_plan(),
    "ray-leader": lambda: distributed(),
    "ray-follower": lambda: distributed(leader=False),
    "mp-follower": lambda: distributed(leader=False, model=MP),
    "data-parallel": lambda: make_plan(model={"backend_parameters": ["--data-parallel-size", "2"]}),
}
ON = {"single": "launcher", "ray-leader": "process", "ray-follower": "process",
      "mp-follower": "process", "data-parallel": "process"}


class StandIn(MemoryDeployer):
    """Records what it is given; refuses what the real deployer it stands for refuses."""

    def __init__(self, real: Deployer) -> None:
        super().__init__(initial=WorkloadState.RUNNING)
        self.name = real.name  # type: ignore[misc]
        self._real = real

    def check(self, plan: WorkloadPlan) -> str | None:
        return self._real.check(plan)


@pytest.fixture
def real(tmp_path, monkeypatch) -> tuple[Deployer, Deployer]:
    monkeypatch.setattr(launcher_module, "vllm_missing", lambda python: None)  # check() needs no vLLM
    return LauncherDeployer(run_dir=tmp_path / "l"), ProcessDeployer(run_dir=tmp_path / "p")


@pytest.mark.parametrize("kind", sorted(PLANS))
def test_each_plan_goes_to_a_deployer_that_can_run_it(real, kind: str) -> None:
    launcher, process = real
    auto = AutoDeployer([StandIn(launcher), StandIn(process)])
    plan = PLANS[kind]().workload
    assert (launcher.check(plan) is None) == (ON[kind] == "launcher")
    assert process.check(plan) is None
    status = auto.create(plan)
    assert status.deployer == ON[kind] and auto.get(plan.name).deployer == ON[kind]
    assert [s.name for s in auto.list()] == [plan.name]
    assert auto.delete(plan.name).state is WorkloadState.STOPPED
    with pytest.raises(WorkloadNotFound):
        auto.get(plan.name)


def test_the_launcher_says_why_not(real) -> None:
    launcher, _ = real
    assert "ray-head" in launcher.check(PLANS["ray-leader"]().workload)
    assert "--headless" in launcher.check(PLANS["mp-follower"]().workload)
    assert "--data-parallel-size 2" in launcher.check(PLANS["data-parallel"]().workload)
    assert "vllm serve" in launcher.check(PLANS["ray-follower"]().workload)


def test_a_plan_nobody_runs_is_refused_with_every_reason(real) -> None:
    launcher, _ = real
    auto = AutoDeployer([StandIn(launcher)])
    with pytest.raises(InvalidWorkload, match="launcher: .*ray-head"):
        auto.create(PLANS["ray-leader"]().workload)


def test_a_default_worker_accepts_every_role(tmp_path, real, monkeypatch) -> None:
    from berth.testing.fakes import FakeProbe
    from berth.worker import ServeManager, Settings
    from berth.worker.admission import _admission as admission
    from berth.worker.admission._allocation import GPUAllocator, PortAllocator
    from tests.support.specs import make_spec

    def allocators(settings):  # whether a port is bound on this busy host does not matter here
        return (PortAllocator(settings.instance_port_range, settings.ray_port_range, settings.ray_band_size,
                              is_free=lambda port: True), GPUAllocator(settings.gpu_devices))

    monkeypatch.setattr(admission, "_allocators", allocators)
    launcher, process = real
    auto = AutoDeployer([StandIn(launcher), StandIn(process)])
    settings = Settings.load(data_dir=tmp_path / "data")
    manager = ServeManager(settings, deployer=auto, probe=FakeProbe()).start(watch=False)
    follower = {"distributed_servers": {"subordinate_workers": [
        {"worker_id": 2, "worker_ip": "10.0.0.2", "gpu_indexes": [0]}]}, "gpu_indexes": [0], "ports": None}
    specs = {
        "single": make_spec(instance={"name": "single", "ports": None}),
        "ray-leader": make_spec(instance={"name": "leader", **follower}),
        "ray-follower": make_spec(instance={"name": "rfollow", **follower}, worker={"id": 2, "ip": "10.0.0.2"}),
        "mp-follower": make_spec(model=MP, instance={"name": "mfollow", **follower}, worker={"id": 2, "ip": "10.0.0.2"}),
        "data-parallel": make_spec(model={"backend_parameters": ["--data-parallel-size", "2"]},
                                   instance={"name": "dp", "ports": None}),
    }
    try:
        for kind, spec in specs.items():
            record, _ = manager.create_from_spec(spec, shared_gpus=True)
            assert manager.get(record.id).deployer == ON[kind], kind
    finally:
        manager.close()


def test_the_default_worker_deployer_is_auto_over_launcher_and_process(tmp_path, monkeypatch) -> None:
    from berth.worker import Settings
    from berth.worker.instances._deployer_factory import (
        describe_deployer,
        open_deployer,
    )

    monkeypatch.setattr(launcher_module, "vllm_missing", lambda python: None)  # as where vLLM imports
    settings = Settings.load(data_dir=tmp_path / "data")
    deployer = open_deployer(settings)
    assert isinstance(deployer, AutoDeployer) and deployer.member_names == ("launcher", "process")
    assert [m.run_dir for m in deployer.members] == [str(tmp_path / "data" / n) for n in ("launcher", "process")]
    assert describe_deployer(deployer, settings) == "auto (launcher, process)"
    monkeypatch.setattr(launcher_module, "vllm_missing", lambda python: "no vLLM here")
    assert open_deployer(settings).member_names == ("process",)
