"""The vLLM backend: a pure plan of how vLLM runs for one instance on this worker."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from typing import Any, Literal

from gpustack_runtime.deployer import (
    Container,
    ContainerEnv,
    ContainerExecution,
    ContainerMount,
    ContainerProfileEnum,
    ContainerRestartPolicyEnum,
    WorkloadPlan,
)
from gpustack_runtime.detector.ascend import get_ascend_cann_variant

from berth.backends import vllm_args as rules
from berth.backends import vllm_env as env_rules
from berth.backends.base import InferenceServer, distributed_parallelism, gpus_per_node, is_ascend, is_ascend_310p
from berth.backends.kv_transfer import compose_kv_transfer_config, descriptor_in
from berth.backends.plan import (
    DeploymentMetadata,
    NamedPorts,
    PlanError,
    RayPorts,
    ServePlan,
    container_ports,
)
from berth.backends.serving_script import serving_script
from berth.backends.vllm_topology import MultinodeTopology, UserParallelism, multinode_topology
from berth.deployers.base import INSTANCE_LABEL, MANAGED_LABEL, RAY_HEAD_CONTAINER, RUN_CONTAINER
from berth.schemas import is_audio_model, is_omni_model
from berth.schemas.instances import InstancePorts
from berth.utils.args import (
    extend_args_no_exist,
    find_bool_parameter,
    find_parameter,
    flatten_to_argv,
    served_names,
)
from berth.utils.versions import compare_versions

__all__ = ["VLLMServer", "ray_start_arguments"]

Executor = Literal["ray", "mp"] | None
_LMCACHE_RUNTIMES = {"cuda", "rocm"}
#: vllm-ascend registers its NPU CPU-offload connector from this release on.
ASCEND_OFFLOAD_MIN_VERSION = "0.21.0"
#: vLLM 0.18.0 dropped Ray from its default dependencies (matters for custom images).
_RAY_DROPPED = "0.18.0"
CUDA_COMPAT_ENV = "GPUSTACK_ENABLE_CUDA_MINOR_VERSION_COMPATIBILITY"
HOST_IPC_ENV = "GPUSTACK_HOST_IPC"
SCRIPT_DISABLED_ENV = "GPUSTACK_MODEL_SERVING_COMMAND_SCRIPT_DISABLED"
RUNTIME_UID_ENV = "GPUSTACK_MODEL_RUNTIME_UID"
RUNTIME_GID_ENV = "GPUSTACK_MODEL_RUNTIME_GID"
RUNTIME_SHM_ENV = "GPUSTACK_MODEL_RUNTIME_SHM_SIZE_GIB"
_IMAGE_CUDA = re.compile(r"cuda(\d+)\.(\d+)")


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


def ray_by_default(version: str | None, image_name: str | None) -> bool:
    """Whether a distributed instance that names no executor uses Ray: yes on the runner
    images (they bundle Ray); no on a model's own image, nor on a ``-custom`` vLLM from 0.18.0
    on (vLLM no longer ships Ray), where vLLM's mp multi-node mode runs instead."""
    if image_name:
        return False
    if not version or "-custom" not in version:
        return True
    return compare_versions(version.split("-custom", 1)[0], _RAY_DROPPED) < 0


def _truthy(value: str) -> bool:
    """GPUStack's switches: 1, true, yes or on (any case) turn them on."""
    return value.lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True, slots=True)
class Layout:
    """What a plan decides first and everything else reads: role, ports, executor, topology."""

    meta: DeploymentMetadata
    ports: InstancePorts
    executor: Executor
    topology: MultinodeTopology | None


class VLLMServer(InferenceServer):
    """Plans ``vllm serve`` for an instance: arguments, environment, image and workload."""

    backend_name = "vllm"
    _run_as: tuple[int | None, int | None] = (None, None)

    def plan(self) -> ServePlan:
        self.warnings = []
        self._devices = None
        layout = self.layout()
        env = self.engine_env(layout)
        image = self.image()
        args, injected = self.engine_arguments(layout)
        ray = RayPorts.from_range(self.config.ray_port_range) if layout.executor == "ray" else None
        ports = layout.ports
        named = NamedPorts(
            http=ports.http, dp_rpc=ports.dp_rpc, distributed=ports.distributed, ray=ray,
            master=ports.master, vllm_base=ports.vllm_base,
        )
        script = self.command_script(env)
        workload = self.workload(layout, image, env, args, named, script)
        command, run_args = self._engine_command(layout, args, ray)
        follower = layout.meta.follower
        base_url = None if follower else f"http://{_reachable(self.worker.ip)}:{ports.http}"
        return ServePlan(
            name=layout.meta.name,
            role=layout.meta.role,
            image=image,
            command=command,
            args=run_args,
            env=env,
            injected=injected,
            workload=workload,
            ports=named,
            base_url=base_url,
            readiness_url=f"{base_url}/health" if base_url else None,
            warnings=list(self.warnings),
            profile=self.profile,
            served_names=[] if follower else served_names(args),
        )

    def _engine_command(self, layout: Layout, args: list[str], ray: RayPorts | None) -> tuple[list[str], list[str]]:
        """The command line this worker's run container runs (before any serving script)."""
        if layout.executor == "ray" and layout.meta.follower:
            return ["ray", "start"], self._ray_args(ray, leader=False)
        return list(self.config.entrypoint), args

    # -- layout --------------------------------------------------------------------------

    def layout(self) -> Layout:
        meta = self.deployment_metadata()
        ports = self.named_ports(distributed=meta.distributed)
        executor = self.executor_backend(meta)
        topology = self.topology(meta) if executor == "mp" else None
        if executor == "mp" and ports.master is None:
            raise PlanError(
                "instance.ports must hold at least 3 ports for vLLM's mp multi-node mode "
                "([http, data-parallel RPC, master, ...])"
            )
        return Layout(meta, ports, executor, topology)

    def executor_backend(self, meta: DeploymentMetadata) -> Executor:
        """How a distributed instance spans workers: the user's ``--distributed-executor-backend``
        (``mp`` is vLLM's own multi-node mode, any other value Ray), else Ray on the runner
        images and mp on a model's own image (see :func:`ray_by_default`)."""
        if not meta.distributed:
            return None
        chosen = find_parameter(self.model.backend_parameters, ["distributed-executor-backend"])
        if chosen is not None:
            return "mp" if chosen == "mp" else "ray"
        return "ray" if ray_by_default(self.model.backend_version, self.model.image_name) else "mp"

    def topology(self, meta: DeploymentMetadata) -> MultinodeTopology:
        """vLLM's mp layout seen from this node (the leader is rank 0, followers in list order)."""
        rank = 0 if meta.follower_index is None else meta.follower_index + 1
        user = UserParallelism.from_parameters(self.model.backend_parameters)
        return multinode_topology(gpus_per_node(self.instance), rank, user)

    # -- environment ---------------------------------------------------------------------

    def engine_env(self, layout: Layout) -> dict[str, str]:
        env = self.base_env()
        devices = self.selected_devices()
        if not self.exact:
            if self.disable_cuda_compat():
                env.setdefault("NVIDIA_DISABLE_REQUIRE", "1")
            env_rules.set_loading_defaults(env)
            warning = env_rules.set_cache_env(env, self.config.cache_dir)
            if warning:
                self.warn(warning)
        self._kv_cache_env(env)
        if layout.executor is not None:
            env_rules.set_distributed_env(env, self.worker, self._env_ports(layout), is_ascend(devices))
        if is_ascend(devices) and not self.exact:
            env_rules.set_ascend_env(env, is_ascend_310p(devices))
        return env

    def _env_ports(self, layout: Layout) -> env_rules.DistributedEnvPorts:
        ports = layout.ports
        if layout.executor == "ray":
            return env_rules.DistributedEnvPorts(ray_init=ports.distributed)
        shape = layout.topology.shape if layout.topology else None
        return env_rules.DistributedEnvPorts(
            dp_master=ports.dp_master if shape in ("dp_only", "nested") else None,
            vllm_base=ports.vllm_base if shape == "dp_only" else None,
        )

    def _kv_cache_env(self, env: dict[str, str]) -> None:
        kv = self.model.extended_kv_cache
        if not (kv and kv.enabled):
            return
        if kv.is_shared():
            snapshot = self.instance.cache_config
            if snapshot and snapshot.injected:
                env.update(snapshot.env)
            else:
                reason = f": {snapshot.reason}" if snapshot and snapshot.reason else ""
                self.warn(f"starting without the shared KV cache{reason}")
            return
        if self.device_info().runtime == "cann":
            return  # Ascend sizes its offload connector in --kv-transfer-config
        env_rules.set_lmcache_env(env, kv, kv.local_ram_bytes(self.total_vram_claim()))

    # -- arguments -----------------------------------------------------------------------

    def head_arguments(self) -> list[str]:
        """What follows the entrypoint: the model's ``run_command`` (rendered, split like a
        shell), else the model path."""
        if self.model.run_command:
            # as GPUStack renders a run command: the model's env names too, role and group not
            variables = {**(self.model.env or {}), **self.template_variables()}
            variables.pop("role", None), variables.pop("group_id", None)
            rendered = self.render(self.model.run_command, "model.run_command", variables)
            try:
                return shlex.split(rendered)
            except ValueError as exc:
                raise PlanError(f"model.run_command cannot be split like a shell command: {exc}") from None
        return [self.model_path]

    def engine_arguments(self, layout: Layout) -> tuple[list[str], list[str]]:
        """(the arguments after the entrypoint, the options berth injected)."""
        arguments = self.head_arguments()
        arguments += self._policy_arguments(layout)
        arguments += rules.speculative_arguments(self.model, self.draft_model_path)
        if not self.exact:
            arguments += rules.access_log_arguments(self.model.backend_parameters, self.model.backend_version)
            arguments += rules.cache_report_arguments(self.model.backend_parameters, self.model.backend_version)
        arguments += self._distributed_arguments(layout)
        cache = self._kv_cache_arguments()
        arguments += cache
        if is_ascend_310p(self.selected_devices()) and not self.exact:
            arguments += ["--enforce-eager", "--dtype", "float16"]
        for warning in rules.lora_arguments(
            arguments, self.instance.mounted_loras, self.model.name, self.model.backend_parameters
        ):
            self.warn(warning)
        user = [self._rendered_token(token) for token in flatten_to_argv(self.model.backend_parameters)]
        arguments += user
        extend_args_no_exist(
            arguments,
            ("--host", self.worker.ip),
            ("--port", str(layout.ports.http)),
            ("--served-model-name", self.instance.model_name),
        )
        arguments, warning = compose_kv_transfer_config(arguments, self.instance.role, descriptor_in(cache))
        if warning:
            self.warn(warning)
        start = next((i for i, a in enumerate(arguments) if a.startswith("-")), len(arguments))
        return arguments, rules.injected_arguments(arguments[start:], user)

    def _rendered_token(self, token: str) -> str:
        """One parameter token with its placeholders filled; a token that would render empty
        stays as written (GPUStack's rule: an option never loses its value to an empty one)."""
        return self.render(token, "model.backend_parameters") or token

    def _policy_arguments(self, layout: Layout) -> list[str]:
        """The cluster profile's derived options: omni flag, length cap, parallelism."""
        if self.exact:
            return []
        params = self.model.backend_parameters
        omni = is_omni_model(self.model)
        out = rules.omni_arguments(self.model, omni)
        if not omni and not is_audio_model(self.model):
            derived = rules.derive_max_model_len(rules.read_model_config(self.model_path))
            out += rules.max_model_len_arguments(self.model, derived)
        if layout.topology is not None:
            return out + rules.mp_parallelism_arguments(UserParallelism.from_parameters(params), layout.topology)
        tp_pp = (1, 1)
        if layout.meta.distributed:
            tp_pp, warning = distributed_parallelism(self.instance)
            if warning and find_parameter(params, rules.PARALLELISM) is None:
                self.warn(warning)
        return out + rules.auto_parallelism_arguments(params, self.instance, layout.meta.distributed, tp_pp)

    def _distributed_arguments(self, layout: Layout) -> list[str]:
        if layout.executor == "ray":
            params = self.model.backend_parameters
            return ["--distributed-executor-backend", "ray", *rules.data_parallel_arguments(params, layout.ports.dp_rpc)]
        if layout.topology is not None:
            return self._multinode_mp_arguments(layout.topology, layout.ports)
        return []

    def _multinode_mp_arguments(self, topology: MultinodeTopology, ports: InstancePorts) -> list[str]:
        """vLLM's own multi-node mode, by shape: data-parallel options (dp_only), node rank and
        master (mp_only), or both (nested); followers run ``--headless`` unless every data
        parallel engine serves its own API (``--data-parallel-hybrid-lb``)."""
        params = self.model.backend_parameters
        leader_ip = self.instance.worker_ip
        if not leader_ip:
            raise PlanError("instance.worker_ip (the leader's address) is required for vLLM's mp multi-node mode")
        out: list[str] = []
        if find_parameter(params, ["distributed-executor-backend"]) is None:
            out += ["--distributed-executor-backend", "mp"]
        data_parallel = ["--data-parallel-address", leader_ip, "--data-parallel-rpc-port", str(ports.dp_rpc)]
        nodes = [
            "--nnodes", str(topology.nnodes),
            "--node-rank", str(topology.node_rank),
            "--master-addr", leader_ip,
            "--master-port", str(ports.master),
        ]
        if topology.shape == "dp_only":
            # on the leader a start rank would switch vLLM to hybrid load balancing
            start = ["--data-parallel-start-rank", str(topology.start_rank)] if topology.start_rank > 0 else []
            out += start + data_parallel
        elif topology.shape == "mp_only":
            out += nodes
        else:
            out += nodes + data_parallel
        hybrid = find_bool_parameter(params, ["data-parallel-hybrid-lb"])
        return out + (["--headless"] if topology.follower and not hybrid else [])

    def _kv_cache_arguments(self) -> list[str]:
        """The extended KV cache's connector: the shared service's arguments when injected;
        locally LMCache on NVIDIA and AMD, vllm-ascend's CPU offload connector on Ascend."""
        kv = self.model.extended_kv_cache
        if not (kv and kv.enabled):
            return []
        if kv.is_shared():
            snapshot = self.instance.cache_config
            return list(snapshot.args) if snapshot and snapshot.injected else []
        info = self.device_info()
        if info.runtime == "cann":
            return self._ascend_offload_arguments(info.arch_family)
        if info.runtime not in _LMCACHE_RUNTIMES:
            self.warn("the local extended KV cache needs NVIDIA, AMD or Ascend devices; not configured")
            return []
        return ["--kv-transfer-config", rules.KV_TRANSFER_CONFIG]

    def _ascend_unsupported(self, arch_family: str | None) -> str | None:
        if get_ascend_cann_variant(arch_family) == "310p":
            return "the extended KV cache is not supported on Ascend 310P"
        version = self.model.backend_version
        if version and compare_versions(version, ASCEND_OFFLOAD_MIN_VERSION) < 0:
            return f"the extended KV cache on Ascend needs vLLM Ascend {ASCEND_OFFLOAD_MIN_VERSION} or later, not {version}"
        return None

    def _ascend_offload_arguments(self, arch_family: str | None) -> list[str]:
        """vllm-ascend's ``SimpleCPUOffloadConnector``, sized per rank: the worker's budget
        divided by its cards (the connector's deployment-wide size would be reserved again by
        every data-parallel engine)."""
        reason = self._ascend_unsupported(arch_family)
        if reason:
            self.warn(f"{reason}; not configured")
            return []
        kv = self.model.extended_kv_cache
        assert kv is not None
        extra: dict[str, int] = {}
        ram = kv.local_ram_bytes(self.total_vram_claim())
        if ram:
            extra["cpu_bytes_to_use_per_rank"] = ram // (len(self.selected_devices()) or 1)
        if kv.chunk_size and kv.chunk_size > 0:
            self.warn("extended_kv_cache.chunk_size does not apply on Ascend; ignored")
        connector = {"kv_connector": "SimpleCPUOffloadConnector", "kv_role": "kv_both", "kv_connector_extra_config": extra}
        return ["--kv-transfer-config", json.dumps(connector, separators=(",", ":"))]

    # -- preparation -----------------------------------------------------------------------

    def cuda_compat_enabled(self) -> bool:
        """CUDA minor-version compatibility: the model's env switch, else ``config``'s."""
        value = (self.model.env or {}).get(CUDA_COMPAT_ENV)
        return _truthy(value) if value is not None else self.config.cuda_minor_version_compatibility

    def disable_cuda_compat(self) -> bool:
        """Run on the host driver instead of the image's cuda-compat libraries: when enabled and
        the image targets a newer CUDA minor of the host's major (consumer GPUs reject the
        compat libraries)."""
        if self.exact or not self.cuda_compat_enabled():
            return False
        info = self.device_info()
        if info.runtime != "cuda" or not info.runtime_version:
            return False
        image_cuda = _image_cuda_version(self.image())
        host = info.runtime_version.removeprefix("v")
        if not image_cuda or image_cuda.split(".")[0] != host.split(".")[0]:
            return False
        return compare_versions(image_cuda, host) > 0

    def cache_files(self) -> dict[str, str]:
        snapshot = self.instance.cache_config
        return dict(snapshot.files) if snapshot and snapshot.injected else {}

    def command_script(self, env: dict[str, str] | None = None) -> str | None:
        """A script to run instead of the entrypoint (the command becomes its arguments): when
        connector files must be written, cuda-compat disabled or ``PYPI_PACKAGES_INSTALL`` set,
        unless ``GPUSTACK_MODEL_SERVING_COMMAND_SCRIPT_DISABLED`` says no."""
        env = env or {}
        if _truthy(env.get(SCRIPT_DISABLED_ENV, "0")):
            return None
        compat, files = self.disable_cuda_compat(), self.cache_files()
        if not compat and not files and "PYPI_PACKAGES_INSTALL" not in env:
            return None
        return serving_script(files, disable_cuda_compat=compat)

    def host_ipc(self) -> bool:
        """Join the host IPC namespace: the model's ``GPUSTACK_HOST_IPC`` if set, else
        ``config.host_ipc`` if set, else only when a shared KV cache is attached (its CUDA-IPC
        transfers import the engine's buffers)."""
        value = (self.model.env or {}).get(HOST_IPC_ENV)
        if value is not None:
            return _truthy(value)
        if self.config.host_ipc is not None:
            return self.config.host_ipc
        snapshot = self.instance.cache_config
        return bool(snapshot and snapshot.injected)

    def container_user(self, env: dict[str, str]) -> tuple[int | None, int | None, float]:
        """(uid, gid, shm GiB) of the workload: ``GPUSTACK_MODEL_RUNTIME_UID``/``_GID``/
        ``_SHM_SIZE_GIB`` in the env win over ``config``; an unusable value is a warning."""
        uid = self._env_number(env, RUNTIME_UID_ENV, int, self.config.runtime_uid)
        gid = self._env_number(env, RUNTIME_GID_ENV, int, self.config.runtime_gid)
        shm = self._env_number(env, RUNTIME_SHM_ENV, float, self.config.shm_size_gib)
        return uid, gid, shm

    def _env_number(self, env: dict[str, str], name: str, kind: type, default: Any) -> Any:
        value = env.get(name)
        if not value:
            return default
        try:
            return kind(value)
        except ValueError:
            self.warn(f"env {name}={value!r} is not a number; using {default!r}")
            return default

    # -- workload ------------------------------------------------------------------------

    def workload(
        self,
        layout: Layout,
        image: str,
        env: dict[str, str],
        args: list[str],
        ports: NamedPorts,
        script: str | None,
    ) -> WorkloadPlan:
        meta, executor = layout.meta, layout.executor
        uid, gid, shm_gib = self.container_user(env)
        self._run_as = (uid, gid)
        run = self._run_container(image, env, args, script)
        containers = [run]
        if executor != "ray":
            pass  # single node, or vLLM's mp multi-node: every node runs vllm serve itself
        elif meta.follower:
            self._become_ray_follower(run, ports.ray, script)
        elif meta.leader:
            run.mounts.append(ContainerMount(path="/tmp", volume="tmp-volume"))
            containers.append(self._ray_head(run, ports.ray, script))
        selector = self.model.gpu_type_selector
        return WorkloadPlan(
            name=meta.name,
            labels={MANAGED_LABEL: "true", INSTANCE_LABEL: meta.name},
            host_network=True,
            host_ipc=self.host_ipc(),
            # vLLM's ray.init() in the run container finds the head's raylet among the processes
            # it can see: a Ray leader's containers share one PID namespace.
            pid_shared=executor == "ray" and meta.leader,
            shm_size=int(shm_gib * (1 << 30)),
            containers=containers,
            run_as_user=uid,
            run_as_group=gid,
            instance_type=selector.type if selector else None,
        )

    def _execution(self, command: list[str], args: list[str], script: str | None) -> ContainerExecution:
        return ContainerExecution(
            privileged=True,
            command=None if script else list(command),
            command_script=script,
            args=[*command, *args] if script else list(args),
            run_as_user=self._run_as[0],
            run_as_group=self._run_as[1],
        )

    def _run_container(self, image: str, env: dict[str, str], args: list[str], script: str | None) -> Container:
        return Container(
            image=image,
            name=RUN_CONTAINER,
            profile=ContainerProfileEnum.RUN,
            restart_policy=ContainerRestartPolicyEnum.NEVER,
            execution=self._execution(self.config.entrypoint, args, script),
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

    def _become_ray_follower(self, run: Container, ray: RayPorts | None, script: str | None) -> None:
        run.execution = self._execution(["ray", "start"], self._ray_args(ray, leader=False), script)
        run.ports = container_ports(ray.declared(leader=False))  # type: ignore[union-attr]

    def _ray_head(self, run: Container, ray: RayPorts | None, script: str | None) -> Container:
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
            execution=self._execution(["ray", "start"], self._ray_args(ray, leader=True), script),
            envs=envs,
            resources=run.resources,
            mounts=run.mounts,
            ports=container_ports(ray.declared(leader=True)),  # type: ignore[union-attr]
        )


def _image_cuda_version(image: str | None) -> str | None:
    """``major.minor`` of the CUDA an image's tag names (``runner:cuda12.9-vllm0.11``), if any."""
    reference = (image or "").split("/")[-1]
    if ":" not in reference:
        return None
    match = _IMAGE_CUDA.search(reference.split(":", 1)[1])
    return f"{match.group(1)}.{match.group(2)}" if match else None


def _reachable(ip: str) -> str:
    """An address a local client can use for a server bound to ``ip``."""
    return "127.0.0.1" if ip in ("0.0.0.0", "", "::") else ip
