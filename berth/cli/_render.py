"""Showing a plan to a person: containers, masked env, and equivalent ``docker run`` lines."""

from __future__ import annotations

import shlex

from gpustack_runtime.deployer import Container, WorkloadPlan
from rich.console import Console
from rich.table import Table

from berth.backends.plan import ServePlan
from berth.utils.env import mask_env, mask_secrets_in_args


_GPU_FLAGS = {
    "nvidia.com/devices": lambda ids: ["--gpus", f'"device={ids}"'],
    "amd.com/devices": lambda ids: ["--device=/dev/kfd", "--device=/dev/dri", "-e", f"HIP_VISIBLE_DEVICES={ids}"],
    "huawei.com/devices": lambda ids: [
        *[f"--device=/dev/davinci{i}" for i in ids.split(",")],
        "--device=/dev/davinci_manager", "--device=/dev/devmm_svm", "--device=/dev/hisi_hdc",
    ],
}


def _env_of(container: Container) -> dict[str, str]:
    return {e.name: e.value for e in container.envs or []}


def _command_of(container: Container) -> list[str]:
    execution = container.execution
    if execution is None:
        return []
    if execution.command_script:
        return ["sh", "-c", execution.command_script, "--", *(execution.args or [])]
    return [*(execution.command or []), *(execution.args or [])]


def docker_run_line(workload: WorkloadPlan, container: Container) -> str:
    """An equivalent ``docker run`` for one container (secrets masked)."""
    parts = ["docker", "run", "-d", "--name", f"{workload.name}-{container.name}"]
    if workload.host_network:
        parts += ["--network", "host"]
    if container.execution and container.execution.privileged:
        parts.append("--privileged")
    if workload.host_ipc:
        parts += ["--ipc", "host"]  # the host's /dev/shm: no --shm-size
    elif workload.shm_size:
        parts += ["--shm-size", str(workload.shm_size)]
    if workload.run_as_user is not None:
        parts += ["--user", f"{workload.run_as_user}:{workload.run_as_group or workload.run_as_user}"]
    for key, value in (container.resources or {}).items():
        parts += _GPU_FLAGS.get(key, lambda ids, k=key: ["--device", f"{k}={ids}"])(str(value))
    for mount in container.mounts or []:
        source = f"{workload.name}-{mount.volume}" if mount.volume else mount.path
        parts += ["-v", f"{source}:{mount.path}"]
    for key, value in mask_env(_env_of(container)).items():
        parts += ["-e", f"{key}={value}"]
    command = mask_secrets_in_args(_command_of(container))
    if command:
        parts += ["--entrypoint", command[0], container.image, *command[1:]]
    else:
        parts.append(container.image)
    return shlex.join(parts)


def _container_table(workload: WorkloadPlan, container: Container) -> Table:
    table = Table(title=f"container {container.name!r}", show_header=False, title_justify="left")
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("image", container.image)
    table.add_row("command", shlex.join(mask_secrets_in_args(_command_of(container))))
    env = mask_env(_env_of(container))
    table.add_row("env", "\n".join(f"{k}={v}" for k, v in env.items()) or "-")
    table.add_row("ports", ", ".join(str(p.internal) for p in container.ports or []) or "-")
    mounts = [f"{m.volume + ':' if m.volume else ''}{m.path}" for m in container.mounts or []]
    table.add_row("mounts", ", ".join(mounts) or "-")
    table.add_row("resources", ", ".join(f"{k}={v}" for k, v in (container.resources or {}).items()) or "-")
    return table


def print_plan(console: Console, plan: ServePlan) -> None:
    workload = plan.workload
    console.print(f"[bold]workload[/] {plan.name}  role={plan.role}  profile={plan.profile}  "
                  f"host_network={workload.host_network}  host_ipc={workload.host_ipc}  "
                  f"shm={workload.shm_size}  user={workload.run_as_user}:{workload.run_as_group}")
    ports = plan.ports
    console.print(f"[bold]ports[/] http={ports.http} dp_rpc={ports.dp_rpc} distributed={ports.distributed}"
                  + (f" master={ports.master}" if ports.master else "")
                  + (f" vllm_base={ports.vllm_base}" if ports.vllm_base else "")
                  + (f" ray={ports.ray.gcs}-{ports.ray.max_worker}" if ports.ray else ""))
    if plan.served_names:
        console.print(f"[bold]serves[/] {', '.join(plan.served_names)}")
    if plan.readiness_url:
        console.print(f"[bold]ready when[/] {plan.readiness_url} answers 200")
    console.print(f"[bold]injected[/] {shlex.join(mask_secrets_in_args(plan.injected)) or '-'}")
    for warning in plan.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    for container in workload.containers or []:
        console.print(_container_table(workload, container))
    console.print("[bold]equivalent docker commands[/]")
    for container in workload.containers or []:
        console.print(docker_run_line(workload, container), soft_wrap=True, highlight=False, markup=False)
