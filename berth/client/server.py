"""``VLLMServer``: one vLLM server, planned by berth and run by one of berth's deployers."""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import secrets
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from gpustack_runtime.deployer import WorkloadPlan

from berth.backends.plan import ServePlan
from berth.client._deployers import ServerDeployer
from berth.client._logs import LogForwarder, log_tail, secret_values
from berth.client._ready import is_ready
from berth.client.client import VLLMClient, http_url
from berth.client.config import LLMConfig, ServeConfig
from berth.client.errors import ServerStartError
from berth.client.log_utils import LOG_LEVEL_ENV
from berth.client.planning import batched_workload, free_port, plan_server
from berth.client.serve_args import serve_options
from berth.deployers import Deployer, DeployerError, WorkloadNotFound
from berth.schemas.workload import WorkloadStatus
from berth.utils.waiting import WaitTimeout, wait_until

__all__ = ["VLLMServer", "as_llm_config", "new_server_name"]

logger = logging.getLogger(__name__)

#: Seconds between readiness probes while a server starts.
PROBE_INTERVAL = 0.25


class _Unset:
    """Marks an override that was not given (``None`` is a value: no startup timeout)."""

    def __repr__(self) -> str:
        return "<unset>"


UNSET: Any = _Unset()


def as_llm_config(value: LLMConfig | Mapping[str, Any]) -> LLMConfig:
    """An LLMConfig from itself or a dict of its fields."""
    return value if isinstance(value, LLMConfig) else LLMConfig.model_validate(dict(value))


def new_server_name(index: int = 0) -> str:
    """A workload name no other client process will pick: ``berth-client-<pid>-<hex>-<i>``."""
    return f"berth-client-{os.getpid()}-{secrets.token_hex(3)}-{index}"


class VLLMServer:
    """One server for ``llm_config`` on ``gpu_ids`` (none: a CPU server), of the kind
    ``serve_config.server`` names: a batched server (gserve's ``/generate`` and ``/chat``) or
    ``vllm serve`` (vLLM's OpenAI-compatible API).

    Positional arguments are gserve's (``llm_config, gpu_ids, host, port, startup_timeout,
    verbose``); given ones override the fields of ``serve_config`` (``startup_timeout=None``:
    no limit); the port is picked free when absent. A ``vllm serve`` is planned by
    ``berth.backends.vllm`` with ``serve_config.profile`` (``exact`` by default: the options
    as given) and run by ``deployer`` (default: the launcher when vLLM imports here, else the
    process deployer); a batched server runs as one process. State is kept in a temporary
    directory. :meth:`start` returns once the server answers ``/health`` (and, for
    ``vllm serve``, ``/v1/models`` lists the model); :meth:`shutdown` stops every process of
    the server. The constructor does no I/O.
    """

    def __init__(
        self,
        llm_config: LLMConfig | Mapping[str, Any],
        gpu_ids: Sequence[int] = (),
        host: str | None = None,
        port: int | None = None,
        startup_timeout: float | None = UNSET,
        verbose: bool | None = None,
        *,
        serve_config: ServeConfig | None = None,
        deployer: Deployer | None = None,
        name: str | None = None,
    ) -> None:
        self.llm_config = as_llm_config(llm_config)
        overrides = {"host": host, "port": port, "verbose": verbose}
        changes = {k: v for k, v in overrides.items() if v is not None}
        if startup_timeout is not UNSET:
            changes["startup_timeout"] = startup_timeout
        self.serve_config = dataclasses.replace(serve_config or ServeConfig(), **changes)
        self.gpu_ids = list(gpu_ids)
        self.name = name or new_server_name()
        self._deployers = ServerDeployer(deployer)
        self._port = self.serve_config.port
        self._plan: ServePlan | None = None
        self._started = False
        self._forwarder: LogForwarder | None = None
        # the worker's rule: secret env values, and the values of secret options (--api-key)
        self._secrets = secret_values(self.serve_config.env, os.environ, args=serve_options(self.llm_config))

    def __repr__(self) -> str:
        port = self._port if self._port is not None else "auto"
        return f"VLLMServer(name={self.name!r}, host={self.host!r}, port={port}, gpus={self.gpu_ids})"

    # -- address --------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self.serve_config.host

    @property
    def port(self) -> int:
        """The server's port (picked at :meth:`start` when none was given)."""
        if self._port is None:
            self._port = free_port(self.host)
        return self._port

    @property
    def base_url(self) -> str:
        return http_url(self.host, self.port)

    @property
    def model(self) -> str:
        """The model name requests carry (the LoRA adapter's when ``lora_path`` is set)."""
        return self.llm_config.request_model

    @property
    def kind(self) -> str:
        """``batched`` or ``openai`` (``ServeConfig.server``)."""
        return self.serve_config.server

    @property
    def plan(self) -> ServePlan | None:
        """The plan a ``vllm serve`` was started from (``None`` before :meth:`start`, and for a
        batched server, which is not planned by the vLLM backend)."""
        return self._plan

    def workload(self) -> WorkloadPlan:
        """What :meth:`start` hands the deployer: the planned ``vllm serve``, or the batched
        server's process (its argv is exactly what runs)."""
        place = {"name": self.name, "host": self.host, "port": self.port, "gpus": self.gpu_ids,
                 "env": self._server_env()}
        if self.kind == "batched":
            return batched_workload(self.llm_config, **place)
        self._plan = plan_server(self.llm_config, profile=self.serve_config.profile, **place)
        return self._plan.workload

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> VLLMServer:
        """Start the server and wait until it is ready; raises :class:`ServerStartError`."""
        if self._started:
            return self
        workload = self.workload()
        deployer = self._deployers.get(self.serve_config)
        try:
            deployer.create(workload)
        except DeployerError as exc:
            self._plan = None
            self._deployers.close(self.serve_config)
            raise ServerStartError(f"cannot start server {self.name}: {exc}") from exc
        self._started = True
        atexit.register(self.shutdown)  # a program that forgets shutdown() leaves no server
        if self.serve_config.verbose:
            self._forwarder = LogForwarder(deployer, self.name, f"[{self.name}]", self._secrets).start()
        try:
            self._wait_ready()
        except BaseException:
            self.shutdown()
            raise
        return self

    def _server_env(self) -> dict[str, str]:
        level = self.serve_config.server_log_level()
        return {"VLLM_LOGGING_LEVEL": level, LOG_LEVEL_ENV: level, **self.serve_config.env}

    def _wait_ready(self) -> None:
        timeout = self.serve_config.startup_timeout

        def ready() -> bool:
            if is_ready(self.base_url, self.model, kind=self.kind):
                return True
            self._fail_if_exited()
            return False

        try:
            wait_until(ready, timeout=timeout, interval=PROBE_INTERVAL, what=f"server {self.name}")
        except WaitTimeout:
            raise ServerStartError(
                f"server {self.name} at {self.base_url} was not ready within "
                f"startup_timeout={timeout:g} s; raise ServeConfig.startup_timeout if the "
                f"model loads slowly.{self._tail()}"
            ) from None
        logger.info("server %s ready at %s (model %s)", self.name, self.base_url, self.model)

    def _fail_if_exited(self) -> None:
        status = self.status()
        if status is None or status.state.terminal:
            state = "is gone" if status is None else (
                f"ended ({status.state}, exit code {status.exit_code}): {status.reason}")
            raise ServerStartError(f"server {self.name} {state} before it was ready.{self._tail()}")

    def _tail(self) -> str:
        deployer = self._deployers.current
        if deployer is None:
            return ""
        text = log_tail(deployer, self.name, self._secrets)
        return f"\nlast lines of its log:\n{text}" if text else ""

    def status(self) -> WorkloadStatus | None:
        """The deployer's status of this server, or ``None`` when it is not running."""
        deployer = self._deployers.current
        if deployer is None or not self._started:
            return None
        try:
            return deployer.get(self.name)
        except WorkloadNotFound:
            return None

    def is_running(self) -> bool:
        """True while the server's processes are alive (ready or not)."""
        status = self.status()
        return status is not None and not status.state.terminal

    def client(self, **options: Any) -> VLLMClient:
        """A :class:`VLLMClient` for this server (timeouts and limits from ``serve_config``)."""
        settings: dict[str, Any] = {
            "model": self.model, "timeout": self.serve_config.client_timeout,
            "max_concurrency": self.serve_config.max_concurrency,
            "max_retries": self.serve_config.max_retries, "kind": self.kind,
        }
        return VLLMClient(base_url=self.base_url, **{**settings, **options})

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then kill after ``timeout`` s) and remove its state.

        Also run at interpreter exit for a started server; a process killed by a signal it
        does not handle skips that, and leaves its servers running.
        """
        atexit.unregister(self.shutdown)
        if self._forwarder is not None:
            self._forwarder.stop()
            self._forwarder = None
        deployer = self._deployers.current
        if self._started and deployer is not None:
            try:
                deployer.delete(self.name, timeout=timeout)
            except DeployerError as exc:
                logger.warning("stopping server %s: %s", self.name, exc)
        self._plan = None
        self._started = False
        self._deployers.close(self.serve_config)

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.shutdown()
