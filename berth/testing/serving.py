"""Small helpers for tests and benchmarks that start vLLM servers on this machine.

``serve_plan`` builds the kind of ``WorkloadPlan`` berth's planner makes for one ``vllm serve``
(hand-built, so tests do not depend on the planner); ``free_port`` and ``wait_http_ok`` find a
loopback port and wait for a server to answer on it. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence

from gpustack_runtime.deployer import Container, ContainerEnv, ContainerExecution, WorkloadPlan

from berth.deployers.base import INSTANCE_LABEL, MANAGED_LABEL, RUN_CONTAINER
from berth.utils.ports import LOOPBACK, free_port
from berth.utils.waiting import WaitTimeout, wait_until

__all__ = ["CPU_ENV", "LOOPBACK", "free_port", "serve_argv", "serve_plan", "wait_http_ok"]

#: What vLLM needs on a CPU-only machine for a tiny model: a 1 GiB KV cache (the default
#: claims a large share of memory, too much when several servers share the machine).
CPU_ENV: dict[str, str] = {"VLLM_CPU_KVCACHE_SPACE": "1"}


def serve_argv(model: str, port: int, extra: Sequence[str] = ()) -> list[str]:
    """The options after ``vllm serve`` for ``model`` on ``127.0.0.1:port`` (eager mode)."""
    return [model, "--enforce-eager", "--host", LOOPBACK, "--port", str(port), *extra]


def serve_plan(
    name: str,
    model: str,
    port: int,
    *,
    extra: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> WorkloadPlan:
    """A one-container plan running ``vllm serve`` as berth's planner would lay it out."""
    envs = {**CPU_ENV, **(env or {})}
    run = Container(
        image="vllm/vllm-openai",
        name=RUN_CONTAINER,
        execution=ContainerExecution(command=["vllm", "serve"], args=serve_argv(model, port, extra)),
        envs=[ContainerEnv(name=k, value=v) for k, v in envs.items()],
    )
    return WorkloadPlan(
        name=name,
        labels={MANAGED_LABEL: "true", INSTANCE_LABEL: name},
        host_network=True,
        containers=[run],
    )


def wait_http_ok(
    url: str,
    *,
    timeout: float = 120.0,
    give_up: Callable[[], str | None] | None = None,
    poll: float = 0.05,
) -> float:
    """Seconds until ``GET url`` answers 200. Raises ``TimeoutError`` after ``timeout``, or
    ``RuntimeError`` with ``give_up()``'s message as soon as it returns one."""
    def answers() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2.0) as reply:
                if reply.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        reason = give_up() if give_up is not None else None
        if reason:
            raise RuntimeError(f"{url} will not answer: {reason}")
        return False

    started = time.monotonic()
    try:
        wait_until(answers, timeout=max(timeout, 0.0), interval=poll, what=f"{url} to answer 200")
    except WaitTimeout:
        raise TimeoutError(f"{url} did not answer 200 within {timeout:.0f} s") from None
    return time.monotonic() - started
