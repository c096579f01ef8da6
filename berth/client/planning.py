"""Planning the client's servers: an OpenAI server as a berth deployment spec planned by
berth's vLLM backend, or a batched server as a one-process workload.

The client does not build ``vllm serve`` command lines itself: it describes the server as a
:class:`~berth.schemas.DeploymentSpec` (model, instance, a worker at ``host`` with the server's
GPUs, the options of :func:`~berth.client.serve_args.serve_options`) and lets
``berth.backends.vllm.VLLMServer.plan()`` decide the rest, exactly as the worker would.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping

from gpustack_runtime.deployer import (
    Container,
    ContainerEnv,
    ContainerExecution,
    ContainerProfileEnum,
    ContainerRestartPolicyEnum,
    WorkloadPlan,
)

from berth.backends.plan import ServePlan
from berth.backends import plan_spec
from berth.client.config import LLMConfig, Profile
from berth.client.serve_args import llm_kwargs, serve_options
from berth.deployers.base import RUN_CONTAINER
from berth.schemas import DeploymentSpec, GPUDevice, Model, ModelInstance, Worker
from berth.utils.ports import free_port  # re-exported: the client's servers take their ports here
from berth.utils.versions import installed_vllm_version  # re-exported: planning's version gate

__all__ = [
    "LOCAL_IMAGE",
    "batched_args",
    "batched_workload",
    "free_port",
    "installed_vllm_version",
    "model_location",
    "plan_server",
]

#: The plan's image: the process and launcher deployers run vLLM from this environment and
#: ignore it, but a plan needs one (a CPU worker has no default image).
LOCAL_IMAGE = "local/vllm"


def model_location(name: str) -> str:
    """``model_name`` as the planner and the server take it: ``~/m``, ``./m``, ``../m`` and any
    other relative path that exists here become absolute (vLLM would read them relative to the
    server's working directory, which is not the caller's); a hub id stays as it is."""
    expanded = os.path.expanduser(name)
    relative = expanded.startswith(("./", "../")) or expanded in (".", "..")
    if expanded != name or relative or (not os.path.isabs(expanded) and os.path.exists(expanded)):
        return os.path.abspath(expanded)
    return name


def plan_server(
    llm: LLMConfig,
    *,
    name: str,
    host: str,
    port: int,
    gpus: list[int],
    env: Mapping[str, str],
    profile: Profile = "exact",
) -> ServePlan:
    """Plan one ``vllm serve`` of ``llm`` named ``name`` at ``host:port`` on ``gpus`` (none:
    CPU), by ``profile``: ``exact`` runs the config's options as given (berth adds only host,
    port and served name), ``cluster`` applies GPUStack's scheduling rules."""
    env = dict(env)
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
    served = llm.served_model_name or llm.model_name
    spec = DeploymentSpec(
        model=Model(
            name=served,
            backend_version=installed_vllm_version(),
            backend_parameters=serve_options(llm),
            env=env,
            image_name=LOCAL_IMAGE,
        ),
        instance=ModelInstance(
            name=name, model_name=served, worker_ip=host, gpu_indexes=gpus or None, ports=[port]
        ),
        worker=Worker(
            ip=host,
            gpu_devices=[GPUDevice(index=g, vendor="nvidia", type="cuda") for g in gpus],
        ),
        model_path=model_location(llm.model_name),
        profile=profile,
    )
    return plan_spec(spec)


def batched_workload(
    llm: LLMConfig,
    *,
    name: str,
    host: str,
    port: int,
    gpus: list[int],
    env: Mapping[str, str],
) -> WorkloadPlan:
    """One batched server (:mod:`berth.client.batched_server`) as a workload: this Python
    running the module with gserve's options, nothing added beyond what the config says."""
    command = [sys.executable, "-m", "berth.client.batched_server", *batched_args(llm, host, port, gpus)]
    run = Container(
        image=LOCAL_IMAGE,
        name=RUN_CONTAINER,
        profile=ContainerProfileEnum.RUN,
        restart_policy=ContainerRestartPolicyEnum.NEVER,
        execution=ContainerExecution(command=command),
        envs=[ContainerEnv(name=k, value=v) for k, v in env.items()],
    )
    return WorkloadPlan(name=name, host_network=True, containers=[run])


def batched_args(llm: LLMConfig, host: str, port: int, gpus: list[int]) -> list[str]:
    """gserve's server options for ``llm``: ``--serve --model --host --port --gpus`` and the
    config's engine options as ``--llm_kwargs`` JSON (unset fields left out)."""
    args = ["--serve", "--model", model_location(llm.model_name), "--host", host,
            "--port", str(port), "--gpus", ",".join(str(g) for g in gpus)]
    kwargs = llm_kwargs(llm)
    if kwargs:
        args += ["--llm_kwargs", json.dumps(kwargs)]
    if llm.lora_path:
        args += ["--lora_path", model_location(llm.lora_path)]
    return args
