"""The vLLM backend: a pure plan of how vLLM runs for one instance on this worker."""

from __future__ import annotations

import logging
from typing import Literal

from gpustack_runtime.deployer import (
    Container,
    ContainerEnv,
    ContainerExecution,
    ContainerMount,
    ContainerProfileEnum,
    ContainerRestartPolicyEnum,
    WorkloadPlan,
)

from berth.backends import vllm_args as rules
from berth.backends import vllm_env as env_rules
from berth.backends.base import InferenceServer, distributed_parallelism, is_ascend, is_ascend_310p
from berth.backends.plan import (
    DeploymentMetadata,
    NamedPorts,
    PlanError,
    RayPorts,
    ServePlan,
    container_ports,
)
from berth.deployers.base import INSTANCE_LABEL, MANAGED_LABEL, RAY_HEAD_CONTAINER, RUN_CONTAINER
from berth.schemas import is_audio_model, is_omni_model
from berth.schemas.instances import InstancePorts
from berth.utils.args import extend_args_no_exist, find_int_parameter, find_parameter, flatten_to_argv

__all__ = ["VLLMServer", "ray_start_arguments"]

logger = logging.getLogger(__name__)

_LMCACHE_BACKENDS = {"cuda", "rocm"}
Executor = Literal["ray", "mp"] | None


def ray_start_arguments(ray: RayPorts, node_ip: str, *, leader: bool, head_address: str) -> list[str]:
    """``ray start`` arguments for the head (leader) or a node joining ``head_address``.

    Every port Ray binds comes from the band: the head also pins its Ray client server (the
    band's reserved client slot; Ray's default 10001 is shared between heads on one host) and
    gives its last worker port to the autoscaler's metrics (see :meth:`RayPorts.head_env`).
    """
    args = [
        "--block",
        "--disable-usage-stats",
        "--verbose",
        f"--node-manager-port={ray.node_manager}",
        f"--object-manager-port={ray.object_manager}",
        f"--runtime-env-agent-port={ray.runtime_env_agent}",
        f"--dashboard-agent-grpc-port={ray.dashboard_agent_grpc}",
        f"--dashboard-agent-listen-port={ray.dashboard_agent_listen}",
        f"--metrics-export-port={ray.metrics_export}",
        f"--min-worker-port={ray.min_worker}",
        f"--max-worker-port={ray.max_worker - 1 if leader else ray.max_worker}",
        f"--node-ip-address={node_ip}",
    ]
    if leader:
        return args + [
            "--head",
            f"--port={ray.gcs}",
            f"--dashboard-host={node_ip}",
            f"--dashboard-port={ray.dashboard}",
            f"--ray-client-server-port={ray.client}",
        ]
    return args + [f"--address={head_address}"]


class VLLMServer(InferenceServer):
    """Plans ``vllm serve`` for an instance: arguments, environment, image and workload."""

    backend_name = "vllm"

    def plan(self) -> ServePlan:
        meta = self.deployment_metadata()
        ports = self.named_ports(distributed=meta.distributed)
        executor = self.executor_backend(meta)
        env = self.engine_env(executor, ports.distributed)
        image = self.image()
        options, injected = self.engine_options(meta, executor, ports)
        args = [self.model_path, *options]
        ray = RayPorts.from_range(self.config.ray_port_range) if executor == "ray" else None
        named = NamedPorts(http=ports.http, dp_rpc=ports.dp_rpc, distributed=ports.distributed, ray=ray)
        workload = self.workload(meta, executor, image, env, args, named)
        base_url = None if meta.follower else f"http://{_reachable(self.worker.ip)}:{ports.http}"
        return ServePlan(
            name=meta.name,
            role=meta.role,
            image=image,
            command=list(self.config.entrypoint),
            args=args,
            env=env,
            injected=injected,
            workload=workload,
            ports=named,
            base_url=base_url,
            readiness_url=f"{base_url}/health" if base_url else None,
        )

    def executor_backend(self, meta: DeploymentMetadata) -> Executor:
        """How a distributed instance spans workers: Ray (default) or vLLM's own ``mp``
        multi-node mode, chosen per model with ``--distributed-executor-backend mp``."""
        if not meta.distributed:
            return None
        chosen = find_parameter(self.model.backend_parameters, ["distributed-executor-backend"])
        return "mp" if chosen == "mp" else "ray"

    # -- environment ---------------------------------------------------------------------

    def engine_env(self, executor: Executor, distributed_port: int | None) -> dict[str, str]:
        env = self.base_env()
        env_rules.set_loading_defaults(env)
        env_rules.set_cache_env(env, self.config.cache_dir)
        env_rules.set_lmcache_env(env, self.model.extended_kv_cache, self.total_vram_claim())
        devices = self.selected_devices()
        if executor is not None:
            assert distributed_port is not None
            ray_port = distributed_port if executor == "ray" else None
            env_rules.set_distributed_env(env, self.worker, ray_port, is_ascend(devices))
        if is_ascend(devices):
            env_rules.set_ascend_env(env, is_ascend_310p(devices))
        return env

    # -- arguments -----------------------------------------------------------------------

    def engine_options(
        self, meta: DeploymentMetadata, executor: Executor, ports: InstancePorts
    ) -> tuple[list[str], list[str]]:
        """(options after the model path, the ones berth injected)."""
        distributed = meta.distributed
        params = self.model.backend_parameters
        options: list[str] = []
        omni = is_omni_model(self.model)
        options += rules.omni_arguments(self.model, omni)
        if not omni and not is_audio_model(self.model):
            derived = rules.derive_max_model_len(rules.read_model_config(self.model_path))
            options += rules.max_model_len_arguments(self.model, derived)
        tp_pp = distributed_parallelism(self.instance) if distributed else (1, 1)
        options += rules.auto_parallelism_arguments(params, self.instance, distributed, tp_pp)
        options += rules.speculative_arguments(self.model, self.draft_model_path)
        options += rules.access_log_arguments(params, self.model.backend_version)
        options += rules.cache_report_arguments(params, self.model.backend_version)
        if executor == "ray":
            options += ["--distributed-executor-backend", "ray"]
            options += rules.data_parallel_arguments(params, ports.dp_rpc)
        elif executor == "mp":
            options += self._multinode_mp_arguments(meta, ports)
        options += self._lmcache_arguments()
        if is_ascend_310p(self.selected_devices()):
            options += ["--enforce-eager", "--dtype", "float16"]
        user = flatten_to_argv(params)
        options += user
        extend_args_no_exist(
            options,
            ("--host", self.worker.ip),
            ("--port", str(ports.http)),
            ("--served-model-name", self.instance.model_name),
        )
        return options, rules.injected_arguments(options, user)

    def _multinode_mp_arguments(self, meta: DeploymentMetadata, ports: InstancePorts) -> list[str]:
        """vLLM's own multi-node mode: every node runs ``vllm serve``; followers are headless."""
        leader_ip = self.worker.ip if meta.leader else self.instance.worker_ip
        if not leader_ip:
            raise PlanError("instance.worker_ip (the leader's address) is required on a follower")
        followers = self.instance.subordinate_workers
        rank = 0 if meta.leader else 1 + [w.worker_id for w in followers].index(self.worker.id)
        out = [
            "--nnodes", str(len(followers) + 1),
            "--node-rank", str(rank),
            "--master-addr", leader_ip,
            "--master-port", str(ports.distributed),
        ]
        dp = find_int_parameter(self.model.backend_parameters, ["data-parallel-size", "dp"])
        if dp and dp > 1:
            out += ["--data-parallel-address", leader_ip, "--data-parallel-rpc-port", str(ports.dp_rpc)]
        return out + (["--headless"] if meta.follower else [])

    def _lmcache_arguments(self) -> list[str]:
        kv = self.model.extended_kv_cache
        if not (kv and kv.enabled):
            return []
        if self.runtime_backend() in _LMCACHE_BACKENDS:
            return ["--kv-transfer-config", rules.KV_TRANSFER_CONFIG]
        logger.warning("extended KV cache (LMCache) needs NVIDIA or AMD GPUs; not configured")
        return []

    # -- workload ------------------------------------------------------------------------

    def workload(
        self,
        meta: DeploymentMetadata,
        executor: Executor,
        image: str,
        env: dict[str, str],
        args: list[str],
        ports: NamedPorts,
    ) -> WorkloadPlan:
        run = self._run_container(image, env, args)
        containers = [run]
        if executor != "ray":
            pass  # single node, or vLLM's mp multi-node: every node runs vllm serve itself
        elif meta.follower:
            self._become_ray_follower(run, ports.ray)
        elif meta.leader:
            run.mounts.append(ContainerMount(path="/tmp", volume="tmp-volume"))
            containers.append(self._ray_head(run, ports.ray))
        return WorkloadPlan(
            name=meta.name,
            labels={MANAGED_LABEL: "true", INSTANCE_LABEL: meta.name},
            host_network=True,
            # vLLM's ray.init() in the run container finds the head's raylet among the processes
            # it can see: a Ray leader's containers share one PID namespace.
            pid_shared=executor == "ray" and meta.leader,
            shm_size=int(self.config.shm_size_gib * (1 << 30)),
            containers=containers,
            run_as_user=self.config.runtime_uid,
            run_as_group=self.config.runtime_gid,
        )

    def command_script(self) -> str | None:
        """A script to run instead of the entrypoint (the command becomes its arguments)."""
        return None

    def _execution(self, command: list[str], args: list[str]) -> ContainerExecution:
        script = self.command_script()
        return ContainerExecution(
            privileged=True,
            command=None if script else list(command),
            command_script=script,
            args=[*command, *args] if script else list(args),
            run_as_user=self.config.runtime_uid,
            run_as_group=self.config.runtime_gid,
        )

    def _run_container(self, image: str, env: dict[str, str], args: list[str]) -> Container:
        return Container(
            image=image,
            name=RUN_CONTAINER,
            profile=ContainerProfileEnum.RUN,
            restart_policy=ContainerRestartPolicyEnum.NEVER,
            execution=self._execution(self.config.entrypoint, args),
            envs=[ContainerEnv(name=k, value=v) for k, v in env.items()],
            resources=self.resources(),
            mounts=self.mounts(),
            ports=container_ports(list(self.instance.ports or [])),
        )

    def _ray_args(self, ray: RayPorts | None, *, leader: bool) -> list[str]:
        if ray is None:
            raise PlanError("config.ray_port_range: a distributed instance needs a Ray port range")
        head_port = self.config_ray_head_port(ray)
        head = f"{self.instance.worker_ip}:{head_port}"
        if not leader and not self.instance.worker_ip:
            raise PlanError("instance.worker_ip (the leader's address) is required on a follower")
        return ray_start_arguments(ray, self.worker.ip, leader=leader, head_address=head)

    def config_ray_head_port(self, ray: RayPorts) -> int:
        """The leader's GCS port: ``config.ray_head_port`` if set, else this range's first port."""
        return self.config.ray_head_port or ray.gcs

    def _become_ray_follower(self, run: Container, ray: RayPorts | None) -> None:
        run.execution = self._execution(["ray", "start"], self._ray_args(ray, leader=False))
        run.ports = container_ports(ray.declared(leader=False))  # type: ignore[union-attr]

    def _ray_head(self, run: Container, ray: RayPorts | None) -> Container:
        envs = [ContainerEnv(name=e.name, value=e.value) for e in run.envs or []]
        for index, item in enumerate(envs):
            if item.name == "RAY_LOG_TO_STDERR":
                envs[index] = ContainerEnv(name="RAY_LOG_TO_STDERR", value="1")
                break
        else:
            envs.append(ContainerEnv(name="RAY_LOG_TO_STDERR", value="1"))
        assert ray is not None
        present = {e.name for e in envs}
        envs += [ContainerEnv(name=k, value=v) for k, v in ray.head_env().items() if k not in present]
        return Container(
            image=run.image,
            name=RAY_HEAD_CONTAINER,
            profile=ContainerProfileEnum.RUN,
            restart_policy=ContainerRestartPolicyEnum.NEVER,
            execution=self._execution(["ray", "start"], self._ray_args(ray, leader=True)),
            envs=envs,
            resources=run.resources,
            mounts=run.mounts,
            ports=container_ports(ray.declared(leader=True)),  # type: ignore[union-attr]
        )


def _reachable(ip: str) -> str:
    """An address a local client can use for a server bound to ``ip``."""
    return "127.0.0.1" if ip in ("0.0.0.0", "", "::") else ip
