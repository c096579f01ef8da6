"""``VLLMServer``: one vLLM server, planned by berth and run by one of berth's deployers."""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from berth.backends.plan import ServePlan
from berth.client._deployers import close_deployer, open_deployer
from berth.client._logs import LogForwarder, log_tail, secret_values
from berth.client._ready import is_ready
from berth.client.client import VLLMClient, http_url
from berth.client.config import LLMConfig, ServeConfig
from berth.client.errors import ServerStartError
from berth.client.planning import free_port, plan_server
from berth.deployers import Deployer, DeployerError, WorkloadNotFound
from berth.schemas.workload import WorkloadStatus

__all__ = ["VLLMServer", "as_llm_config", "new_server_name"]

logger = logging.getLogger(__name__)

#: Seconds between readiness probes while a server starts.
PROBE_INTERVAL = 0.5


def as_llm_config(value: LLMConfig | Mapping[str, Any]) -> LLMConfig:
    """An LLMConfig from itself or a dict of its fields."""
    return value if isinstance(value, LLMConfig) else LLMConfig.model_validate(dict(value))


def new_server_name(index: int = 0) -> str:
    """A workload name no other client process will pick: ``berth-client-<pid>-<hex>-<i>``."""
    return f"berth-client-{os.getpid()}-{secrets.token_hex(3)}-{index}"


class VLLMServer:
    """One ``vllm serve`` for ``llm_config`` on ``gpu_ids`` (none: a CPU server).

    ``host``, ``port``, ``startup_timeout`` and ``verbose`` override the fields of
    ``serve_config``; the port is picked free when absent. The server is planned by
    ``berth.backends.vllm`` (so ``CUDA_VISIBLE_DEVICES`` and the GPU resources follow
    ``gpu_ids``) and run by ``deployer`` (default: the launcher when vLLM imports here, else the
    process deployer, keeping state in a temporary directory). :meth:`start` returns once
    ``/health`` answers 200 and ``/v1/models`` lists the model; :meth:`shutdown` stops every
    process of the server. The constructor does no I/O.
    """

    def __init__(
        self,
        llm_config: LLMConfig | Mapping[str, Any],
        gpu_ids: Sequence[int] = (),
        host: str | None = None,
        port: int | None = None,
        startup_timeout: float | None = None,
        verbose: bool | None = None,
        *,
        serve_config: ServeConfig | None = None,
        deployer: Deployer | None = None,
        name: str | None = None,
    ) -> None:
        self.llm_config = as_llm_config(llm_config)
        overrides = {"host": host, "port": port, "startup_timeout": startup_timeout,
                     "verbose": verbose}
        base = (serve_config or ServeConfig()).model_dump()
        base.update({k: v for k, v in overrides.items() if v is not None})
        self.serve_config = ServeConfig.model_validate(base)
        self.gpu_ids = list(gpu_ids)
        self.name = name or new_server_name()
        self._deployer = deployer
        self._owns_deployer = deployer is None
        self._run_dir: str | None = None
        self._port = self.serve_config.port
        self._plan: ServePlan | None = None
        self._forwarder: LogForwarder | None = None
        self._secrets = secret_values(self.serve_config.env, os.environ)

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
    def plan(self) -> ServePlan | None:
        """The plan the server was started from (``None`` before :meth:`start`)."""
        return self._plan

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> VLLMServer:
        """Start the server and wait until it is ready; raises :class:`ServerStartError`."""
        if self._plan is not None:
            return self
        plan = plan_server(self.llm_config, name=self.name, host=self.host, port=self.port,
                           gpus=self.gpu_ids, env=self._server_env())
        deployer = self._ensure_deployer()
        try:
            deployer.create(plan.workload)
        except DeployerError as exc:
            self._close_deployer()
            raise ServerStartError(f"cannot start server {self.name}: {exc}") from exc
        self._plan = plan
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
        return {"VLLM_LOGGING_LEVEL": self.serve_config.server_log_level(), **self.serve_config.env}

    def _ensure_deployer(self) -> Deployer:
        if self._deployer is None:
            self._run_dir = self.serve_config.run_dir or tempfile.mkdtemp(prefix="berth-client-")
            self._deployer = open_deployer(self.serve_config.deployer, self._run_dir)
        return self._deployer

    def _wait_ready(self) -> None:
        timeout = self.serve_config.startup_timeout
        deadline = time.monotonic() + timeout
        while not is_ready(self.base_url, self.model):
            self._fail_if_exited()
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"server {self.name} at {self.base_url} was not ready within "
                    f"startup_timeout={timeout:g} s; raise ServeConfig.startup_timeout if the "
                    f"model loads slowly.{self._tail()}"
                )
            time.sleep(PROBE_INTERVAL)
        logger.info("server %s ready at %s (model %s)", self.name, self.base_url, self.model)

    def _fail_if_exited(self) -> None:
        status = self.status()
        if status is None or status.state.terminal:
            state = "is gone" if status is None else (
                f"ended ({status.state}, exit code {status.exit_code}): {status.reason}")
            raise ServerStartError(f"server {self.name} {state} before it was ready.{self._tail()}")

    def _tail(self) -> str:
        if self._deployer is None:
            return ""
        text = log_tail(self._deployer, self.name, self._secrets)
        return f"\nlast lines of its log:\n{text}" if text else ""

    def status(self) -> WorkloadStatus | None:
        """The deployer's status of this server, or ``None`` when it is not running."""
        if self._deployer is None or self._plan is None:
            return None
        try:
            return self._deployer.get(self.name)
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
            "max_retries": self.serve_config.max_retries,
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
        if self._plan is not None and self._deployer is not None:
            try:
                self._deployer.delete(self.name, timeout=timeout)
            except DeployerError as exc:
                logger.warning("stopping server %s: %s", self.name, exc)
        self._plan = None
        self._close_deployer()

    def _close_deployer(self) -> None:
        if not self._owns_deployer or self._deployer is None:
            return
        close_deployer(self._deployer)
        self._deployer = None
        if self._run_dir is not None and self.serve_config.run_dir is None:
            shutil.rmtree(self._run_dir, ignore_errors=True)
        self._run_dir = None

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.shutdown()
