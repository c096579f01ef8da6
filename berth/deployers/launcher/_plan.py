"""A berth plan -> what the launcher daemon needs to start it (pure; no I/O).

The launcher runs exactly one thing: ``vllm serve MODEL [options]``, in a process forked from
a daemon that preloaded vLLM. A plan fits when it has one container (the run container) whose
``command + args`` (or, with a command script, whose args) start with ``vllm serve``; the
options after that go to vLLM's own parser unchanged. A command script itself is not run
(there is no shell between the daemon and vLLM), so it must not do anything the instance needs
beyond starting ``vllm serve`` with those args. The container's env, plus the vendor's
visible-devices variables from its GPU resources, becomes the instance's env.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from gpustack_runtime.deployer import Container, WorkloadPlan

from berth.deployers._devices import visible_devices_env
from berth.deployers.base import RUN_CONTAINER, InvalidWorkload
from berth.deployers.launcher._vllm import unsupported
from berth.utils.args import find_bool_parameter, find_int_parameter

_OTHER_DEPLOYERS = "use the process or container deployer for it"


@dataclass(frozen=True, slots=True)
class InstanceRequest:
    """One ``create`` request for the daemon (``log`` is added by the deployer)."""

    name: str
    args: list[str]
    env: dict[str, str]
    cwd: str | None
    labels: dict[str, str] = field(default_factory=dict)


def plan_problem(plan: WorkloadPlan) -> str | None:
    """Why the launcher cannot run ``plan``, read from the plan alone (vLLM's parser has the
    last word at ``create``), or ``None``."""
    try:
        args = serve_args(run_container(plan))
    except InvalidWorkload as exc:
        return str(exc)
    return unsupported(
        headless=find_bool_parameter(args, _names("headless")),
        grpc=find_bool_parameter(args, _names("grpc")),
        api_servers=find_int_parameter(args, _names("api-server-count", "asc")) or 1,
        data_parallel=find_int_parameter(args, _names("data-parallel-size", "dp")) or 1,
    )


def _names(*options: str) -> tuple[str, ...]:
    """Option names as vLLM's parser accepts them: dashes or underscores."""
    return tuple(dict.fromkeys([*options, *(o.replace("-", "_") for o in options)]))


def instance_request(
    plan: WorkloadPlan, *, base_env: Mapping[str, str], default_cwd: str | None = None
) -> InstanceRequest:
    """The request that starts ``plan`` (checked by :func:`plan_problem` already)."""
    name = str(plan.name)
    container = run_container(plan)
    env = dict(base_env)
    env.update({e.name: str(e.value) for e in container.envs or []})
    env.update(visible_devices_env(container.resources))
    execution = container.execution
    cwd = (execution.working_dir if execution else None) or default_cwd
    return InstanceRequest(
        name=name,
        args=serve_args(container),
        env=env,
        cwd=cwd,
        labels={str(k): str(v) for k, v in (plan.labels or {}).items()},
    )


def run_container(plan: WorkloadPlan) -> Container:
    """The plan's only container; a sidecar (e.g. ``ray-head``) or a second container is refused."""
    containers = list(plan.containers or [])
    names = [c.name for c in containers]
    if len(containers) != 1 or names[0] != RUN_CONTAINER:
        raise InvalidWorkload(
            f"plan {plan.name!r} has containers {names}; the launcher runs a single "
            f"{RUN_CONTAINER!r} container running `vllm serve` (no sidecar such as ray-head); "
            f"{_OTHER_DEPLOYERS}"
        )
    return containers[0]


def serve_args(container: Container) -> list[str]:
    """The options after ``vllm serve`` in the container's command line."""
    execution = container.execution
    if execution is None:
        raise InvalidWorkload(f"container {container.name!r} has no execution; it must run `vllm serve`")
    args = [str(a) for a in execution.args or []]
    command = [] if execution.command_script else [str(c) for c in execution.command or []]
    argv = command + args
    if len(argv) < 2 or os.path.basename(argv[0]) != "vllm" or argv[1] != "serve":
        shown = " ".join(argv[:3]) or "(nothing)"
        raise InvalidWorkload(
            f"container {container.name!r} runs `{shown} ...`; the launcher only runs "
            f"`vllm serve MODEL [options]` (execution.command ['vllm', 'serve'] plus args); "
            f"{_OTHER_DEPLOYERS}"
        )
    return argv[2:]
