"""Start-up latency of one vLLM instance, side by side: time from "create" to the first HTTP 200
on ``/health``, median of ``--runs`` runs per configuration, same model and flags throughout.

    .venv/bin/python bench/start_latency.py --runs 5

Configurations: a plain ``vllm serve`` subprocess (the baseline), berth's process deployer,
berth's launcher deployer for its first instance (the daemon starts and imports vLLM within the
measured time) and for a later instance (daemon already up). Prints one line per configuration:
its median and its ratio to plain ``vllm serve``, e.g. ``launcher, later instance: 1.6 s, 0.05x``;
single runs go to stderr. Uses the tiny local model (no hub) unless ``--model`` names another.
One server runs at a time, and every process started here is stopped before the next run.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from berth.testing import CPU_ENV, free_port, serve_argv, serve_plan, tiny_model_path, wait_http_ok

Run = Callable[[int], float]  # run number -> seconds to healthy


def _health(port: int) -> str:
    return f"http://127.0.0.1:{port}/health"


def plain_vllm(model: str, workdir: Path, timeout: float) -> Run:
    vllm = str(Path(sys.executable).with_name("vllm"))

    def run(i: int) -> float:
        port = free_port()
        argv = [vllm, "serve", *serve_argv(model, port)]
        with open(workdir / f"plain-{i}.log", "wb") as log:
            started = time.monotonic()
            proc = subprocess.Popen(argv, env={**os.environ, **CPU_ENV}, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_http_ok(_health(port), timeout=timeout, give_up=lambda: _exited(proc))
            return time.monotonic() - started
        finally:
            _stop_group(proc)

    return run


def _exited(proc: subprocess.Popen[bytes]) -> str | None:
    code = proc.poll()
    return None if code is None else f"exited with code {code}"


def _stop_group(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group (engine core, workers)
    except ProcessLookupError:
        pass


def deployer_run(make: Callable[[], object], model: str, timeout: float, *, shutdown_each: bool) -> Run:
    state: dict[str, object] = {}

    def run(i: int) -> float:
        deployer = state.get("deployer") or make()
        state["deployer"] = deployer
        name, port = f"bench-{i}", free_port()

        def failed() -> str | None:
            status = deployer.get(name)  # type: ignore[attr-defined]
            return status.reason if status.state.terminal else None

        started = time.monotonic()
        deployer.create(serve_plan(name, model, port))  # type: ignore[attr-defined]
        try:
            wait_http_ok(_health(port), timeout=timeout, give_up=failed)
            return time.monotonic() - started
        finally:
            deployer.delete(name, timeout=20.0)  # type: ignore[attr-defined]
            if shutdown_each:
                _shutdown(state.pop("deployer"))

    run.close = lambda: _shutdown(state.pop("deployer", None))  # type: ignore[attr-defined]
    return run


def _shutdown(deployer: object | None) -> None:
    if deployer is not None and hasattr(deployer, "shutdown"):
        deployer.shutdown()


def process_deployer(model: str, workdir: Path, timeout: float) -> Run | str:
    try:
        from berth.deployers.process import ProcessDeployer
    except ImportError as exc:
        return f"berth.deployers.process is not available ({exc})"
    return deployer_run(lambda: ProcessDeployer(run_dir=workdir / "process"), model, timeout, shutdown_each=False)


def launcher(model: str, workdir: Path, timeout: float, *, first: bool) -> Run | str:
    try:
        from berth.deployers.launcher import LauncherDeployer
    except ImportError as exc:
        return f"berth.deployers.launcher is not available ({exc})"
    run_dir = workdir / ("lf" if first else "ll")
    make = lambda: LauncherDeployer(run_dir=run_dir)  # noqa: E731
    run = deployer_run(make, model, timeout, shutdown_each=first)
    if first:
        return run
    warm = deployer_run(make, model, timeout, shutdown_each=False)  # not timed: starts the daemon
    return _after_warmup(run, warm)


def _after_warmup(run: Run, warm: Run) -> Run:
    """``run``, after one untimed instance through ``warm`` (same run_dir, so same daemon,
    which stays up until ``run.close()`` shuts it down)."""

    def timed(i: int) -> float:
        if i == 0:
            warm(-1)
        return run(i)

    timed.close = run.close  # type: ignore[attr-defined]
    return timed


def measure_all(configs: list[tuple[str, Run | str]], runs: int) -> dict[str, list[float]]:
    """Run every configuration once per round, ``runs`` rounds: a machine whose load drifts
    slows every configuration alike instead of whichever happened to run then."""
    times: dict[str, list[float]] = {label: [] for label, run in configs if not isinstance(run, str)}
    try:
        for i in range(runs):
            for label, run in configs:
                if not isinstance(run, str):
                    _one(label, run, i, times[label])
    finally:
        for _label, run in configs:
            getattr(run, "close", lambda: None)()
    return times


def _one(label: str, run: Run, i: int, into: list[float]) -> None:
    try:
        into.append(run(i))
        print(f"# {label} run {i + 1}: {into[-1]:.2f} s", file=sys.stderr, flush=True)
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"# {label} run {i + 1} failed: {exc}", file=sys.stderr, flush=True)


def report(configs: list[tuple[str, Run | str]], times: dict[str, list[float]]) -> None:
    baseline = None
    for label, run in configs:
        if isinstance(run, str):
            print(f"{label}: skipped, {run}")
            continue
        if not times[label]:
            print(f"{label}: no successful run")
            continue
        median = statistics.median(times[label])
        baseline = baseline or median
        print(f"{label}: {median:.1f} s, {median / baseline:.2f}x", flush=True)


def main() -> int:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--runs", type=int, default=5, help="runs per configuration (median taken; default 5)")
    cli.add_argument("--model", help="model path (default: the tiny local Llama, built on first use)")
    cli.add_argument("--timeout", type=float, default=600.0, help="give up on one start after this many s")
    options = cli.parse_args()
    model = options.model or str(tiny_model_path())
    timeout = options.timeout
    with tempfile.TemporaryDirectory(prefix="berth-bench-") as tmp:
        workdir = Path(tmp)
        configs = [
            ("plain vllm serve", plain_vllm(model, workdir, timeout)),
            ("process deployer", process_deployer(model, workdir, timeout)),
            ("launcher, first instance", launcher(model, workdir, timeout, first=True)),
            ("launcher, later instance", launcher(model, workdir, timeout, first=False)),
        ]
        report(configs, measure_all(configs, options.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
