"""A plan's containers turned into local launch specs: argv, executable, environment, cwd.

What runs is exactly what the plan says: ``command + args``, or the plan's ``command_script``
run with ``args`` as its positional parameters (as gpustack-runtime does in a container: the
script becomes a file that is executed; one without ``#!`` is run by ``/bin/sh``). The command
is looked up in the deployer's binary path first (the virtualenv's ``bin``), then ``PATH``.

Container notions with no meaning for a local process (image, user and group, privileged mode,
capabilities, mounts, files, shm size, health checks, restart policy) are ignored with a debug
log line; the worker, not the deployer, restarts workloads and checks readiness.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gpustack_runtime.deployer import Container, ContainerProfileEnum, WorkloadPlan

from berth.deployers._devices import visible_devices_env
from berth.deployers.process._state import TAG_ENV, process_tag, script_path
from berth.deployers.base import InvalidWorkload
from berth.utils.env import is_secret_option

logger = logging.getLogger(__name__)

_CONTAINER_ONLY = (
    "image", "mounts", "files", "checks", "restart_policy",
)
_EXECUTION_ONLY = ("run_as_user", "run_as_group", "privileged", "capabilities", "readonly_rootfs")
_PLAN_ONLY = ("shm_size", "run_as_user", "run_as_group", "fs_group", "sysctls", "host_ipc")


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    """Everything the shim needs to start one container of a plan as a process."""

    container: str
    argv: list[str]
    executable: str
    env: dict[str, str]
    cwd: str | None = None
    script: str | None = None
    script_file: str | None = None

    def to_shim(self) -> dict[str, object]:
        """The part of the spec the shim reads from its stdin."""
        return {
            "argv": self.argv,
            "executable": self.executable,
            "env": self.env,
            "cwd": self.cwd,
        }


def plan_problem(plan: WorkloadPlan) -> str | None:
    """Why the process deployer cannot run ``plan`` (``None``: it can); no I/O."""
    for container in plan.containers or []:
        problem = container_problem(container)
        if problem is not None:
            return problem
    return None


def container_problem(container: Container) -> str | None:
    """Why ``container`` cannot run as a local process: an Init profile, or no command."""
    if container.profile == ContainerProfileEnum.INIT:
        return (f"container {container.name!r} has the Init profile, which the process deployer "
                f"does not run; run that step before creating the workload, or use the container deployer")
    execution = container.execution
    if execution is None or not (execution.command or execution.command_script):
        return (f"container {container.name!r} sets neither execution.command nor "
                f"execution.command_script; a local process has no image entrypoint to fall back on")
    return None


def build_launch_specs(
    plan: WorkloadPlan,
    *,
    workload_dir: str,
    bin_dirs: Sequence[str],
    base_env: Mapping[str, str],
) -> list[LaunchSpec]:
    """One :class:`LaunchSpec` per container of a plan the deployer checked; no I/O but lookups."""
    _log_ignored(plan, _PLAN_ONLY, f"workload {plan.name}")
    return [_launch_spec(c, workload_dir, bin_dirs, base_env) for c in plan.containers or []]


def _launch_spec(
    container: Container, workload_dir: str, bin_dirs: Sequence[str], base_env: Mapping[str, str]
) -> LaunchSpec:
    name = str(container.name)
    problem = container_problem(container)
    if problem is not None:
        raise InvalidWorkload(problem)
    execution = container.execution
    assert execution is not None  # container_problem refused a container without one
    _log_ignored(container, _CONTAINER_ONLY, f"container {name}")
    _log_ignored(execution, _EXECUTION_ONLY, f"container {name}")
    env = container_env(container, base_env, bin_dirs, process_tag(workload_dir, name))
    search = env["PATH"].split(os.pathsep)
    cwd = _working_dir(name, execution.working_dir)
    args = [str(a) for a in execution.args or []]
    if execution.command_script:
        return _script_spec(name, execution.command_script, args, workload_dir, env, cwd)
    argv = [str(c) for c in execution.command or []] + args
    return LaunchSpec(name, argv, resolve_executable(name, argv[0], search), env, cwd)


def _script_spec(
    name: str, script: str, args: list[str], workload_dir: str, env: dict[str, str], cwd: str | None
) -> LaunchSpec:
    path = script_path(workload_dir, name)
    if script.startswith("#!"):
        _check_interpreter(name, script, cwd)
        return LaunchSpec(name, [path, *args], path, env, cwd, script, path)
    return LaunchSpec(name, ["/bin/sh", path, *args], "/bin/sh", env, cwd, script, path)


def _check_interpreter(container: str, script: str, cwd: str | None) -> None:
    """The script's ``#!`` interpreter must be an executable file here: the process starts
    after ``create`` returns, so this is the last moment to refuse the plan with a reason."""
    line = script[2:].split("\n", 1)[0].strip()
    interpreter = line.split(maxsplit=1)[0] if line else ""
    where = os.path.join(cwd or os.getcwd(), interpreter)
    if not interpreter or not (os.path.isfile(where) and os.access(where, os.X_OK)):
        raise InvalidWorkload(
            f"container {container!r}: the command script's interpreter {interpreter!r} (its '#!' "
            f"line) is not an executable file on this host; install it or fix the '#!' line"
        )


def container_env(
    container: Container, base_env: Mapping[str, str], bin_dirs: Sequence[str], tag: str
) -> dict[str, str]:
    """Base env, then the plan's envs, then visible devices from resources (they win), PATH."""
    env = dict(base_env)
    env.update({e.name: str(e.value) for e in container.envs or []})
    env.update(visible_devices_env(container.resources))
    env["PATH"] = search_path(bin_dirs, env.get("PATH", os.defpath))
    env[TAG_ENV] = tag
    return env


def search_path(bin_dirs: Sequence[str], path: str) -> str:
    """``bin_dirs`` first, then ``path``'s entries not already listed."""
    dirs = [d for d in bin_dirs if d]
    dirs += [d for d in path.split(os.pathsep) if d and d not in dirs]
    return os.pathsep.join(dirs)


def resolve_executable(container: str, command: str, search: Sequence[str]) -> str:
    """Absolute path of ``command``; :class:`InvalidWorkload` naming it when it is missing."""
    found = shutil.which(command, path=os.pathsep.join(search))
    if found is None:
        where = "" if os.sep in command else f" in {os.pathsep.join(search)}"
        raise InvalidWorkload(
            f"container {container!r}: executable {command!r} not found{where}; install it "
            f"or fix execution.command"
        )
    return os.path.abspath(found)


def _working_dir(container: str, working_dir: str | None) -> str | None:
    if working_dir and not os.path.isdir(working_dir):
        raise InvalidWorkload(
            f"container {container!r}: execution.working_dir {working_dir!r} is not a directory "
            f"on this host; create it or leave working_dir unset"
        )
    return working_dir or None


def _log_ignored(obj: object, names: Sequence[str], what: str) -> None:
    present = [n for n in names if getattr(obj, n, None) not in (None, False, [], {}, "")]
    if present:
        logger.debug("%s: ignoring container-only settings %s", what, ", ".join(present))


def masked_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` with the values of options that look secret (``--api-key x``) replaced."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append("***")
            hide_next = False
            continue
        name, eq, _ = arg.partition("=")
        secret = arg.startswith("-") and is_secret_option(name)
        out.append(f"{name}=***" if secret and eq else arg)
        hide_next = secret and not eq
    return out
