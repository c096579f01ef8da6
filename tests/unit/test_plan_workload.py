"""The WorkloadPlan: containers, resources, mounts, ports, Ray head and followers, image."""

import pytest
from gpustack_runtime.deployer import ContainerProfileEnum, ContainerRestartPolicyEnum

from berth.backends import PlanError
from berth.deployers import INSTANCE_LABEL, MANAGED_LABEL
from tests.support.specs import distributed, make_plan

RAY_NODE = [
    "--block", "--disable-usage-stats", "--verbose",
    "--node-manager-port=41007", "--object-manager-port=41008", "--runtime-env-agent-port=41009",
    "--dashboard-agent-grpc-port=41004", "--dashboard-agent-listen-port=41005",
    "--metrics-export-port=41006", "--min-worker-port=41010",
]
RAY_COMMON = [*RAY_NODE, "--max-worker-port=41999"]


def test_single_workload_shape():
    plan = make_plan(instance={"gpu_indexes": [2, 3]}, config={"runtime_uid": 1000, "runtime_gid": 1001, "shm_size_gib": 2})
    workload = plan.workload
    assert workload.name == "m-1"
    assert workload.labels == {MANAGED_LABEL: "true", INSTANCE_LABEL: "m-1"}
    assert workload.host_network is True
    assert workload.shm_size == 2 << 30
    assert (workload.run_as_user, workload.run_as_group) == (1000, 1001)
    [run] = workload.containers
    assert run.name == "default"
    assert run.profile == ContainerProfileEnum.RUN
    assert run.restart_policy == ContainerRestartPolicyEnum.NEVER
    assert run.execution.privileged is True
    assert run.execution.command == ["vllm", "serve"]
    assert run.execution.args == plan.args
    assert dict(run.resources) == {"nvidia.com/devices": "2,3"}
    assert [(m.path, m.volume) for m in run.mounts] == [("/models/org", None)]
    assert [p.internal for p in run.ports] == [40000]
    assert {e.name: e.value for e in run.envs} == plan.env
    assert plan.readiness_url == "http://10.0.0.1:40000/health"


@pytest.mark.parametrize(
    ("vendor", "key"), [("nvidia", "nvidia.com/devices"), ("amd", "amd.com/devices"), ("ascend", "huawei.com/devices")]
)
def test_resources_keyed_by_vendor(vendor, key):
    plan = make_plan(worker={"gpu_devices": [{"index": 0, "vendor": vendor}]})
    assert dict(plan.workload.containers[0].resources) == {key: "0"}


def test_cpu_worker_has_no_gpu_resources():
    plan = make_plan(instance={"gpu_indexes": []}, worker={"gpu_devices": []}, model={"image_name": "x"})
    assert dict(plan.workload.containers[0].resources) == {}


def test_draft_model_dir_mounted_too():
    plan = make_plan(draft_model_path="/drafts/d")
    assert [m.path for m in plan.workload.containers[0].mounts] == ["/models/org", "/drafts"]


def test_hub_id_model_path_needs_no_mount():
    plan = make_plan(model_path="facebook/opt-125m")
    assert plan.workload.containers[0].mounts == []
    assert plan.args[0] == "facebook/opt-125m"


def test_image_resolution():
    assert make_plan().image == "vllm/vllm-openai:v0.11.0"
    assert make_plan(model={"backend_version": None}).image == "vllm/vllm-openai:latest"
    assert make_plan(model={"image_name": "my/image:1"}).image == "my/image:1"
    amd = make_plan(worker={"gpu_devices": [{"index": 0, "vendor": "amd"}]}, config={"images": {"amd": "r/v:{version}"}})
    assert amd.image == "r/v:0.11.0"
    with pytest.raises(PlanError, match="config.images.cpu"):
        make_plan(instance={"gpu_indexes": []}, worker={"gpu_devices": []})


def test_other_vendors_use_the_runner_catalog():
    hygon = {"gpu_devices": [{"index": 0, "vendor": "hygon"}]}
    image = make_plan(worker=hygon, model={"backend_version": None}).image
    assert image.startswith("gpustack/runner:dtk")
    with pytest.raises(PlanError, match="config.images.hygon"):
        make_plan(worker=hygon, model={"backend_version": "0.0.1"})


def test_leader_has_ray_head_sidecar():
    plan = distributed()
    run, head = plan.workload.containers
    assert [(m.path, m.volume) for m in run.mounts] == [("/models/org", None), ("/tmp", "tmp-volume")]
    assert head.name == "ray-head"
    assert head.execution.command == ["ray", "start"]
    assert head.execution.args == [
        *RAY_NODE, "--max-worker-port=41998", "--node-ip-address=10.0.0.1",
        "--head", "--port=41000", "--dashboard-host=10.0.0.1", "--dashboard-port=41002",
        "--ray-client-server-port=41001",
    ]
    assert [p.internal for p in head.ports] == [
        41003, 41004, 41005, 41006, 41007, 41008, 41009, 41000, 41002, 41001, 41999,
    ]
    assert head.mounts is run.mounts and head.resources is run.resources
    assert plan.workload.pid_shared is True
    run_env = {e.name: e.value for e in run.envs}
    head_env = [(e.name, e.value) for e in head.envs]
    assert run_env["RAY_LOG_TO_STDERR"] == "0"
    assert ("RAY_LOG_TO_STDERR", "1") in head_env
    assert [k for k, _ in head_env] == [*run_env, "DASHBOARD_METRIC_PORT", "AUTOSCALER_METRIC_PORT"]
    assert head_env[-2:] == [("DASHBOARD_METRIC_PORT", "41003"), ("AUTOSCALER_METRIC_PORT", "41999")]
    assert "DASHBOARD_METRIC_PORT" not in run_env
    assert [p.internal for p in run.ports] == [40000, 40001, 40002]
    assert plan.ports.ray.gcs == 41000


def test_leader_sidecar_appends_ray_log_env_when_absent():
    plan = make_plan(instance={"gpu_indexes": [0]})  # not distributed: no sidecar
    assert len(plan.workload.containers) == 1


def test_follower_run_container_joins_head():
    plan = distributed(leader=False)
    [run] = plan.workload.containers
    assert plan.name == "m-1-f0"
    assert run.execution.command == ["ray", "start"]
    assert run.execution.args == [*RAY_COMMON, "--node-ip-address=10.0.0.2", "--address=10.0.0.1:41000"]
    assert [p.internal for p in run.ports] == [41003, 41004, 41005, 41006, 41007, 41008, 41009]
    assert dict(run.resources) == {"nvidia.com/devices": "0,1"}
    assert plan.readiness_url is None
    assert plan.workload.pid_shared is False


def test_follower_with_explicit_head_port():
    plan = distributed(leader=False, config={"ray_port_range": "42000-42099", "ray_head_port": 41000})
    assert plan.workload.containers[0].execution.args[-1] == "--address=10.0.0.1:41000"
    assert "--node-manager-port=42007" in plan.workload.containers[0].execution.args


def test_follower_not_listed_is_an_error():
    with pytest.raises(PlanError, match="subordinate_workers"):
        distributed(leader=False, worker={"id": 9})


def test_bad_instance_name_rejected():
    with pytest.raises(PlanError, match="instance.name"):
        make_plan(instance={"name": "bad/name"})


def test_command_script_prepends_command():
    from berth.backends.vllm import VLLMServer
    from tests.support.specs import make_spec

    plan = VLLMServer.from_spec(make_spec(model={"env": {"PYPI_PACKAGES_INSTALL": "x"}})).plan()
    execution = plan.workload.containers[0].execution
    assert execution.command is None
    assert execution.command_script.startswith("#!/bin/sh\n")
    assert execution.command_script.endswith('exec "$@"\n')
    assert execution.args[:3] == ["vllm", "serve", "/models/org/m"]
