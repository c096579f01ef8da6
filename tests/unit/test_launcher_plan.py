"""What the launcher takes from a plan: ``vllm serve`` options, env, devices, labels."""

from __future__ import annotations

import pytest
from gpustack_runtime.deployer import (
    Container,
    ContainerEnv,
    ContainerExecution,
    ContainerResources,
    WorkloadPlan,
)

from berth.deployers.base import (
    INSTANCE_LABEL,
    MANAGED_LABEL,
    InvalidWorkload,
    plan_problem,
)
from berth.deployers.launcher._plan import instance_request, serve_args


def _container(name="default", command=("vllm", "serve"), args=("/m", "--port", "8000"), **kw) -> Container:
    execution = ContainerExecution(
        command=list(command) if command is not None else None,
        args=list(args),
        command_script=kw.pop("script", None),
        working_dir=kw.pop("working_dir", None),
    )
    return Container(image="img", name=name, execution=execution, **kw)


def _plan(*containers: Container, name: str = "inst") -> WorkloadPlan:
    return WorkloadPlan(
        name=name,
        labels={MANAGED_LABEL: "true", INSTANCE_LABEL: name},
        host_network=True,
        containers=list(containers) or [_container()],
    )


def test_serve_args_after_vllm_serve() -> None:
    assert serve_args(_container()) == ["/m", "--port", "8000"]
    assert serve_args(_container(command=["/opt/venv/bin/vllm", "serve"])) == ["/m", "--port", "8000"]


def test_serve_args_with_command_script_come_from_args() -> None:
    c = _container(command=None, args=["vllm", "serve", "/m", "--x", '{"a b": 1}'], script="#!/bin/sh\nexec \"$@\"")
    assert serve_args(c) == ["/m", "--x", '{"a b": 1}']


@pytest.mark.parametrize(
    "command,args",
    [(["python", "-m", "vllm"], ["serve"]), (["vllm", "bench"], []), (["vllm"], []), ([], [])],
)
def test_other_commands_are_refused(command, args) -> None:
    with pytest.raises(InvalidWorkload, match="only runs `vllm serve"):
        serve_args(_container(command=command, args=args))


def test_sidecar_plans_are_refused() -> None:
    ray = _container(name="ray-head", command=["ray", "start", "--head"], args=[])
    with pytest.raises(InvalidWorkload, match="ray-head"):
        instance_request(_plan(_container(), ray), base_env={})


def test_bad_names_are_refused() -> None:
    assert "workload name 'a/b'" in (plan_problem(_plan(name="a/b")) or "")


def test_env_layers_and_devices() -> None:
    c = _container(
        envs=[ContainerEnv(name="A", value="plan"), ContainerEnv(name="HF_TOKEN", value="s3cret")],
        resources=ContainerResources(**{"nvidia.com/devices": "0,1"}),
        working_dir="/srv",
    )
    request = instance_request(_plan(c), base_env={"A": "base", "B": "base"}, default_cwd="/here")
    assert request.env["A"] == "plan" and request.env["B"] == "base"
    assert request.env["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert request.env["HF_TOKEN"] == "s3cret"
    assert request.cwd == "/srv"
    assert request.labels == {MANAGED_LABEL: "true", INSTANCE_LABEL: "inst"}
    assert request.args == ["/m", "--port", "8000"]


def test_default_cwd_when_plan_names_none() -> None:
    assert instance_request(_plan(), base_env={}, default_cwd="/here").cwd == "/here"


@pytest.mark.parametrize(
    "env,cpus",
    [
        ({"GOMP_CPU_AFFINITY": "0 1 3"}, {0, 1, 3}),
        ({"KMP_AFFINITY": "granularity=fine,explicit,proclist=[2,5]"}, {2, 5}),
        ({"OMP_PLACES": "{4,6}", "OMP_PROC_BIND": "true"}, {4, 6}),
        ({}, set()),
    ],
)
def test_omp_cpus_reads_what_vllm_sets_for_a_cpu_worker(env, cpus) -> None:
    from berth.deployers.launcher._vllm import omp_cpus

    assert omp_cpus(env) == cpus
