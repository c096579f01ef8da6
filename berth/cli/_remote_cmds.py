"""The worker-API side of ``run / ps / logs / stop`` (used when ``--worker URL`` is given)."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import typer
from rich.table import Table

from berth.cli._app import CLIError, console
from berth.cli._remote import WorkerAPI
from berth.cli._remote_follow import LogFollow, content_total
from berth.schemas import DeploymentSpec
from berth.utils.waiting import WaitTimeout


def remote_run(api: WorkerAPI, spec: DeploymentSpec, wait: bool, timeout: float) -> None:
    # only what the spec file says: the worker fills in its own config (entrypoint, images...)
    created = api.create(spec.model_dump(mode="json", exclude_unset=True))
    instance_id = created["instance_id"]
    console.print(f"created {instance_id} on {api.url}")
    if not wait:
        return
    with console.status(f"starting {instance_id}...") as status:
        try:
            view = api.wait_settled(instance_id, timeout, on_wait=lambda v, t: status.update(
                f"starting {instance_id}: {v.get('state')} ({v.get('reason') or 'waiting'}), {t:.0f} s"))
        except WaitTimeout as exc:
            last = exc.last
            raise CLIError(f"{instance_id} not ready after {timeout:.0f} s ({last.get('state')}: {last.get('reason')})") from None
    if not view.get("ready"):
        raise CLIError(f"{instance_id} {view.get('state')}: {view.get('reason')}; see `berth logs {instance_id}`")
    console.print(f"[green]ready[/]: {view.get('base_url')}/v1")


def _uptime(view: dict[str, Any]) -> str:
    since = view.get("ready_at") or view.get("started_at")
    if not since or view.get("status") == "stopped":
        return "-"
    seconds = int(time.time() - since)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def _with_models(views: list[dict[str, Any]], models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Instances with their model's state (asleep shows as such), then the parked models."""
    by_instance = {model["instance_id"]: model for model in models}
    shown = [dict(view, model_state=by_instance[view["instance_id"]]["state"]) if view["instance_id"] in by_instance
             else view for view in views]
    running = {view["instance_id"] for view in views}
    shown += [{"instance_id": m["instance_id"], "served_names": [m["name"]], "state": m["state"],
               "model_state": m["state"], "status": "stopped", "reason": m["reason"]}
              for m in models if m["instance_id"] not in running]
    return shown


def remote_ps(api: WorkerAPI, as_json: bool) -> None:
    views = _with_models(api.instances(), api.models())
    if as_json:
        typer.echo(json.dumps(views, indent=2))
        return
    table = Table("id", "model", "state", "ports", "GPUs", "uptime", "readiness URL")
    for view in views:
        ports = view.get("ports") or {}
        shown = ", ".join(f"{k}={v}" for k, v in ports.items() if v is not None)
        model = ", ".join(view.get("served_names") or []) or "-"
        gpus = ",".join(str(g) for g in view.get("gpus") or []) or "-"
        state = view.get("state", "?") if view.get("model_state") in (None, "running") else view["model_state"]
        table.add_row(view["instance_id"], model, state, shown or "-", gpus, _uptime(view),
                      view.get("readiness_url") or "-")
    console.print(table)


def _write(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.flush()


def remote_logs(api: WorkerAPI, instance_id: str, container: str, follow: bool, tail: int) -> None:
    """Print the log (its last ``tail`` lines if given); with ``follow``, then new bytes until it ends."""
    offset = _print_tail(api, instance_id, container, tail) if tail else 0
    if follow:
        LogFollow(api, instance_id, container, offset).run()
        return
    while (reply := api.log_range(instance_id, f"bytes={offset}-", container)).status == 206 and reply.body:
        _write(reply.body)
        offset += len(reply.body)


def _print_tail(api: WorkerAPI, instance_id: str, container: str, lines: int) -> int:
    """Print the last ``lines`` lines (of the last 64 KiB); returns the offset after them."""
    reply = api.log_range(instance_id, f"bytes=-{64 * 1024}", container)
    _write(b"".join(reply.body.splitlines(keepends=True)[-lines:]))
    return content_total(reply) or len(reply.body)


def remote_stop(api: WorkerAPI, instance_id: str) -> None:
    api.delete(instance_id)
    console.print(f"stopped {instance_id}")
