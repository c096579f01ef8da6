"""``berth run / ps / logs / stop``: drive a deployer on this machine directly, no worker.

(With ``--worker URL`` the same commands go through a worker's API instead; see ``_remote``.)
"""

from __future__ import annotations

import json
import sys
import threading
import time
from enum import Enum
from pathlib import Path

import typer
from rich.table import Table

from berth.backends.plan import ServePlan
from berth.cli._app import CLIError, app, console, err_console, load_spec
from berth.cli._plan import make_plan
from berth.cli._remote import remote
from berth.cli._remote_cmds import remote_logs, remote_ps, remote_run, remote_stop
from berth.deployers import AUTO, Deployer, DeployerError, deployer_names
from berth.deployers import open_deployer as open_local_deployer
from berth.schemas import WorkloadState, WorkloadStatus
from berth.utils.readiness import probe_ready
from berth.utils.waiting import WaitTimeout, wait_until


#: ``auto`` and the deployers whose workloads outlive this command (:data:`berth.deployers.REGISTRY`).
DeployerKind = Enum(  # type: ignore[misc]
    "DeployerKind", {name: name for name in (AUTO, *deployer_names(durable=True))}, type=str
)


def data_dir() -> Path:
    """The worker's data dir (``BERTH_DATA_DIR``, the settings file, or the default), so that
    ``berth run/ps/logs/stop`` and ``berth serve`` look at the same run directories."""
    from berth.worker.settings import Settings

    try:
        return Settings().data_dir
    except ValueError as exc:
        raise CLIError(f"invalid settings: {exc}") from None


def open_deployer(kind: DeployerKind) -> Deployer:
    try:
        return open_local_deployer(kind.value, data_dir())
    except DeployerError as exc:
        raise CLIError(str(exc)) from None


DEPLOYER_OPTION = typer.Option(
    DeployerKind("process"), "--deployer", "-d", envvar="BERTH_DEPLOYER",
    help="Where workloads run: local processes, containers (gpustack-runtime), the vLLM launcher, "
    "or auto (per workload: the launcher when it can run it, else a process).",
)


def _wait_ready(deployer: Deployer, plan: ServePlan, timeout: float) -> WorkloadStatus:
    served = plan.served_names[0] if plan.served_names else None
    started = time.monotonic()

    def poll() -> tuple[WorkloadStatus, bool, str]:
        """(status, ready, why not); an ended workload is done without a probe."""
        current = deployer.get(plan.name)
        if current.state.terminal:
            return current, False, ""
        ready, why = probe_ready(plan.base_url, served) if plan.base_url else (False, "")
        return current, ready, why

    with console.status(f"starting {plan.name}...") as status:
        try:
            current, ready, _ = wait_until(
                poll, timeout=timeout, interval=1.0, what=f"{plan.name} to be ready",
                done=lambda seen: seen[0].state.terminal or seen[1],
                on_wait=lambda seen, elapsed: status.update(
                    f"starting {plan.name}: {seen[0].state} ({seen[2] or 'waiting'}), {elapsed:.0f} s"))
        except WaitTimeout as exc:
            why = exc.last[2]
            raise CLIError(f"{plan.name} not ready after {timeout:.0f} s ({why}); see `berth logs {plan.name}`") from None
        if ready:
            console.print(f"[green]ready[/] in {time.monotonic() - started:.1f} s: {plan.base_url}/v1")
        return current


@app.command()
def run(
    spec: Path = typer.Argument(..., help="Deployment spec (YAML or JSON)."),
    deployer: DeployerKind = DEPLOYER_OPTION,
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait until the server answers."),
    timeout: float = typer.Option(600.0, "--timeout", help="Seconds to wait for readiness."),
) -> None:
    """Plan SPEC and run it here; print the API URL once the server is ready.

    Ctrl-C while waiting stops the workload again.
    """
    loaded = load_spec(spec)
    api = remote()
    if api is not None:
        remote_run(api, loaded, wait, timeout)
        return
    plan = make_plan(loaded)
    target = open_deployer(deployer)
    try:
        target.create(plan.workload)
    except DeployerError as exc:
        raise CLIError(str(exc)) from None
    console.print(f"created {plan.name} on the {target.name} deployer")
    if not wait or plan.base_url is None:
        return
    try:
        final = _wait_ready(target, plan, timeout)
    except KeyboardInterrupt:
        err_console.print(f"interrupted: stopping {plan.name}")
        target.delete(plan.name, timeout=10)
        raise typer.Exit(130) from None
    if final.state.terminal:
        tail = target.logs(plan.name, start=max(0, target.logs(plan.name, start=1 << 62).total - 2000)).data
        raise CLIError(f"{plan.name} {final.state} ({final.reason or 'exit ' + str(final.exit_code)}):\n"
                       + tail.decode(errors="replace"))


def _age(created: float | None) -> str:
    if not created:
        return "-"
    seconds = int(time.time() - created)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


@app.command()
def ps(
    deployer: DeployerKind = DEPLOYER_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """List instances (with --worker) or the workloads berth runs on this machine."""
    api = remote()
    if api is not None:
        remote_ps(api, as_json)
        return
    items = sorted(open_deployer(deployer).list(), key=lambda s: s.name)
    if as_json:
        typer.echo(json.dumps([item.model_dump(mode="json") for item in items], indent=2))
        return
    table = Table("name", "state", "containers", "exit", "age", "reason")
    for item in items:
        containers = ", ".join(f"{c.name}:{c.state}" for c in item.containers)
        exit_code = "-" if item.exit_code is None else str(item.exit_code)
        table.add_row(item.name, str(item.state), containers, exit_code, _age(item.created_at), item.reason[:60])
    console.print(table)


@app.command()
def logs(
    name: str = typer.Argument(..., help="Workload name."),
    container: str = typer.Option("default", "--container", "-c", help="Container of the plan: default or ray-head."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new output."),
    tail: int = typer.Option(0, "--tail", "-n", help="Only the last N lines (0: all)."),
    deployer: DeployerKind = DEPLOYER_OPTION,
) -> None:
    """Print a workload's log (one container's stream)."""
    api = remote()
    if api is not None:
        try:
            remote_logs(api, name, container, follow, tail)
        except KeyboardInterrupt:
            raise typer.Exit(0) from None
        return
    target = open_deployer(deployer)
    try:
        total = target.logs(name, container=container, start=1 << 62).total
        start = _tail_start(target, name, container, total, tail) if tail else 0
        if not follow:
            _copy(target, name, container, start)
            return
        for data in target.follow(name, container=container, start=start, stop=threading.Event()):
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
    except DeployerError as exc:
        raise CLIError(str(exc)) from None
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def _copy(target: Deployer, name: str, container: str, start: int) -> None:
    while True:
        chunk = target.logs(name, container=container, start=start, end=start + (1 << 20) - 1)
        if not chunk.data:
            return
        sys.stdout.buffer.write(chunk.data)
        start += len(chunk.data)


def _tail_start(target: Deployer, name: str, container: str, total: int, lines: int) -> int:
    window = 64 * 1024
    while True:
        start = max(0, total - window)
        data = target.logs(name, container=container, start=start).data
        newlines = [i for i, b in enumerate(data) if b == 0x0A]
        body = newlines[:-1] if data.endswith(b"\n") else newlines
        if len(body) >= lines:
            return start + body[-lines] + 1
        if start == 0:
            return 0
        window *= 4


@app.command()
def stop(
    name: str = typer.Argument(..., help="Workload name."),
    timeout: float = typer.Option(10.0, "--timeout", "-t", help="Grace period before killing."),
    deployer: DeployerKind = DEPLOYER_OPTION,
) -> None:
    """Stop a workload gracefully and remove it (containers, volumes, processes, logs)."""
    api = remote()
    if api is not None:
        remote_stop(api, name)
        return
    try:
        last = open_deployer(deployer).delete(name, timeout=timeout)
    except DeployerError as exc:
        raise CLIError(str(exc)) from None
    if last is None:
        raise CLIError(f"no workload named {name!r}; see `berth ps`")
    state = last.state if last.state is not WorkloadState.RUNNING else WorkloadState.STOPPED
    console.print(f"stopped {name} ({state})")
