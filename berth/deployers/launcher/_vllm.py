"""The launcher's only contact with vLLM: preload it, parse ``vllm serve`` options, serve.

The daemon calls :func:`preload` once and :func:`parse_serve_args` per create (before it
forks, so a bad option is refused with vLLM's own message). The forked child calls
:func:`serve`. Entry points are vLLM 0.32's: ``vllm.entrypoints.launchers.api_server.entry``
(``run_server``), ``vllm.entrypoints.launchers.cli_args`` (``make_arg_parser``,
``validate_parsed_serve_args``) and ``vllm.utils.argparse_utils.FlexibleArgumentParser``.

Nothing here runs a torch operation, builds an engine or starts an event loop in the daemon.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Mapping
from typing import Any

#: Modules an instance loads that the daemon imports ahead of time (failures are skipped:
#: some exist only on one platform).
PRELOAD = (
    "vllm",
    "vllm.entrypoints.launchers.api_server.entry",
    "vllm.entrypoints.launchers.cli_args",
    "vllm.entrypoints.launchers.app",
    "vllm.utils.argparse_utils",
    "vllm.engine.arg_utils",
    "vllm.v1.engine.async_llm",
    "vllm.v1.engine.core",
    "vllm.v1.engine.core_client",
    "vllm.v1.executor.multiproc_executor",
    "vllm.v1.executor.uniproc_executor",
    "vllm.v1.worker.cpu_worker",
    "vllm.v1.worker.cpu_model_runner",
    "vllm.v1.worker.gpu_worker",
    "vllm.v1.worker.gpu_model_runner",
    "vllm.model_executor.model_loader",
    "vllm.model_executor.models.llama",
    "vllm.tokenizers",
    "uvloop",
    "uvicorn",
    "fastapi",
    "transformers",
)
#: The variable vLLM's multiprocessing helpers read to pick fork or spawn.
MP_METHOD_ENV = "VLLM_WORKER_MULTIPROC_METHOD"


class ServeArgsError(ValueError):
    """vLLM refused the options; the message is vLLM's own."""


def preload(extra: tuple[str, ...] = ()) -> tuple[list[str], Any]:
    """Import vLLM and what an instance loads; build the serve parser. Returns (failed, parser)."""
    failed = []
    for name in (*PRELOAD, *extra):
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - a module of another platform; report, go on
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
    return failed, build_parser()


def build_parser() -> argparse.ArgumentParser:
    """vLLM's ``vllm serve`` parser, raising :class:`ServeArgsError` instead of exiting."""
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    class _Parser(FlexibleArgumentParser):
        def error(self, message: str):  # type: ignore[override]
            raise ServeArgsError(message)

        def exit(self, status: int = 0, message: str | None = None):  # type: ignore[override]
            raise ServeArgsError(message or "this option exits (e.g. --help); it cannot run")

    return make_arg_parser(_Parser(prog="vllm serve", description="vLLM API server"))


def parse_serve_args(parser: argparse.ArgumentParser, args: list[str]) -> argparse.Namespace:
    """Parse and validate ``vllm serve`` options exactly as the CLI does; refuse what the
    launcher cannot run (several API servers, headless, gRPC)."""
    from vllm.entrypoints.launchers.cli_args import validate_parsed_serve_args

    try:
        namespace = parser.parse_args(list(args))
        validate_parsed_serve_args(namespace)
    except ServeArgsError:
        raise
    except (ValueError, TypeError) as exc:
        raise ServeArgsError(str(exc)) from None
    if namespace.model_tag is not None:
        namespace.model = namespace.model_tag
    _refuse_unsupported(namespace)
    namespace.api_server_count = None  # one API server in this process, as `vllm serve` does
    return namespace


def unsupported(*, headless: bool, grpc: bool, api_servers: int, data_parallel: int) -> str | None:
    """Why the launcher cannot run a server with these options, or ``None``: it runs one API
    server per instance, in-process, so no headless engine, gRPC, extra API servers or data
    parallelism (each of which starts processes the daemon did not fork)."""
    reasons = []
    if headless:
        reasons.append("--headless (no API server)")
    if grpc:
        reasons.append("--grpc")
    if api_servers > 1:
        reasons.append(f"--api-server-count {api_servers}")
    if data_parallel > 1:
        reasons.append(f"--data-parallel-size {data_parallel}")
    if not reasons:
        return None
    return (f"the launcher runs one API server per instance and cannot run {', '.join(reasons)}; "
            f"remove the option or use the process deployer")


def _refuse_unsupported(ns: argparse.Namespace) -> None:
    reason = unsupported(
        headless=bool(getattr(ns, "headless", False)),
        grpc=bool(getattr(ns, "grpc", False)),
        api_servers=getattr(ns, "api_server_count", None) or 1,
        data_parallel=getattr(ns, "data_parallel_size", 1) or 1,
    )
    if reason is not None:
        raise ServeArgsError(reason)


def fork_engine_after_config() -> None:
    """Make vLLM fork (not spawn) its engine-core and worker processes in this instance.

    vLLM's CPU platform sets ``VLLM_WORKER_MULTIPROC_METHOD=spawn`` while it checks the config,
    and a spawned process re-imports all of vLLM (most of a cold start). The launcher's child
    never touched torch or CUDA before, so fork is safe; the platform's hook is wrapped to set
    the method back to fork right after it ran. An explicit ``spawn`` in the instance's env wins.
    """
    if os.environ.get(MP_METHOD_ENV) == "spawn":
        return
    from vllm.platforms import current_platform

    cls = type(current_platform)
    original = cls.check_and_update_config.__func__

    def check_and_update_config(klass: type, vllm_config: Any) -> None:
        original(klass, vllm_config)
        os.environ[MP_METHOD_ENV] = "fork"

    cls.check_and_update_config = classmethod(check_and_update_config)


def apply_omp_env_in_forked_workers() -> None:
    """Give a forked CPU worker the OpenMP threads and cores vLLM chose for it.

    vLLM's CPU backend sets ``OMP_NUM_THREADS`` and ``GOMP_CPU_AFFINITY`` (or the Intel/generic
    equivalents) around starting each worker, for the new process's OpenMP runtime to read as
    it loads. A forked worker's runtime was loaded long before, in the daemon, so the variables
    would go unread: the worker would run as many threads as the machine has cores, unbound,
    competing with the API server and engine core. This fork hook applies them at once instead:
    the process's CPU affinity (inherited by the threads OpenMP creates later) and torch's
    thread count (the original setter, before vLLM's worker disables it).
    """
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    import torch

    set_num_threads = torch.set_num_threads

    def after_fork_in_child() -> None:
        cpus = omp_cpus(os.environ)
        if cpus:
            os.sched_setaffinity(0, cpus)
        threads = os.environ.get("OMP_NUM_THREADS", "")
        if threads.isdigit() and int(threads) > 0:
            set_num_threads(int(threads))

    os.register_at_fork(after_in_child=after_fork_in_child)


def omp_cpus(env: Mapping[str, str]) -> set[int]:
    """The cores named by ``GOMP_CPU_AFFINITY`` (``"0 1 2"``), ``KMP_AFFINITY``
    (``...proclist=[0,1]``) or ``OMP_PLACES`` (``"{0,1}"``); empty when none is set."""
    if env.get("GOMP_CPU_AFFINITY"):
        text = env["GOMP_CPU_AFFINITY"]
    elif "proclist=[" in env.get("KMP_AFFINITY", ""):
        text = env["KMP_AFFINITY"].split("proclist=[", 1)[1].split("]", 1)[0]
    else:
        text = env.get("OMP_PLACES", "").strip("{}")
    return {int(item) for item in text.replace(",", " ").split() if item.isdigit()}


def close_listener_in_forked_children() -> None:
    """Keep the HTTP listening socket out of the engine core and workers vLLM forks.

    ``run_server`` binds the API socket before it builds the engine; forked (not spawned)
    engine processes would inherit it and hold the port after the API server is gone.
    """
    from vllm.entrypoints.launchers.api_server import entry

    original = entry.setup_server

    def setup_server(*args: Any, **kwargs: Any) -> Any:
        listen_address, sock = original(*args, **kwargs)
        os.register_at_fork(after_in_child=sock.close)
        return listen_address, sock

    entry.setup_server = setup_server


def serve(namespace: argparse.Namespace, argv: list[str]) -> None:
    """Run vLLM's OpenAI-compatible server for ``namespace`` (parsed from ``argv``) until it is
    told to stop."""
    import uvloop
    from vllm.entrypoints.launchers.api_server.entry import run_server
    from vllm.logger import configure_logging_from_args

    configure_logging_from_args(namespace)  # after the instance's env is in place
    fork_engine_after_config()
    apply_omp_env_in_forked_workers()
    close_listener_in_forked_children()
    sys.argv = ["vllm", "serve", *argv]  # vLLM inspects sys.argv in places
    uvloop.run(run_server(namespace))
