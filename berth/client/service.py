"""``VLLMService``: several vLLM servers (one per GPU group) behind one batched client."""

from __future__ import annotations

import atexit
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any

from berth.client._deployers import ServerDeployer
from berth.client.attach import instance_base_url
from berth.client.batch import BatchSender
from berth.client.config import LLMConfig, ServeConfig
from berth.client.planning import free_port
from berth.client.server import VLLMServer, as_llm_config, new_server_name
from berth.client.transport import Endpoint, Transport
from berth.deployers import Deployer

__all__ = ["VLLMService"]

logger = logging.getLogger(__name__)


class VLLMService(BatchSender):
    """Starts one server per entry of ``serve_config.gpu_ids`` (in parallel) and spreads every
    ``chat``/``generate`` batch over the running ones by outstanding work, results in input
    order. ``attach`` adds servers it did not start, by base URL (``model`` names their model
    when they should not be asked; ``attach_kind`` is their API, ``openai`` or ``batched``).
    Use :meth:`start`/:meth:`shutdown` or a ``with`` block; the constructor does no I/O.
    """

    def __init__(
        self,
        llm_config: LLMConfig | Mapping[str, Any] | None = None,
        serve_config: ServeConfig | Mapping[str, Any] | None = None,
        *,
        attach: Sequence[str] = (),
        model: str | None = None,
        attach_kind: str = "openai",
        deployer: Deployer | None = None,
        max_prompts_per_request: int = 256,
    ) -> None:
        self.llm_config = None if llm_config is None else as_llm_config(llm_config)
        self.serve_config = _as_serve_config(serve_config)
        self.max_prompts_per_request = max_prompts_per_request
        self.servers: list[VLLMServer] = []
        self._attached = [
            Endpoint(url, model=model, concurrency=self.serve_config.max_concurrency,
                     kind=attach_kind)
            for url in attach
        ]
        self._endpoints: dict[str, Endpoint] = {}
        self._deployers = ServerDeployer(deployer)
        self._transport = Transport(timeout=self.serve_config.client_timeout,
                                    max_retries=self.serve_config.max_retries)

    @classmethod
    def from_worker(cls, worker_url: str, instance_ids: Sequence[str | int],
                    serve_config: ServeConfig | Mapping[str, Any] | None = None,
                    *, worker_token: str | None = None, **options: Any) -> VLLMService:
        """A service over instances a berth worker manages, found by instance id
        (``worker_token``: the worker API's bearer token, when it has one)."""
        urls = [instance_base_url(worker_url, i, token=worker_token) for i in instance_ids]
        return cls(serve_config=serve_config, attach=urls, **options)

    def __repr__(self) -> str:
        urls = [e.base_url for e in self.endpoints]
        return f"VLLMService(servers={len(self.servers)}, endpoints={urls})"

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> VLLMService:
        """Start every server in parallel; if one fails, stop them all and raise its error."""
        if self.llm_config is None or self.servers:
            return self
        self.servers = self._make_servers(self.llm_config)
        atexit.register(self.shutdown)
        with ThreadPoolExecutor(max_workers=len(self.servers)) as pool:
            outcomes = list(pool.map(_start_quietly, self.servers))
        failures = [error for error in outcomes if error is not None]
        if failures:
            self.shutdown()
            raise failures[0]
        self._endpoints = {s.name: self._endpoint_of(s) for s in self.servers}
        return self

    def _make_servers(self, llm: LLMConfig) -> list[VLLMServer]:
        deployer = self._deployers.get(self.serve_config)
        ports = self._ports(len(self.serve_config.gpu_groups()))
        return [
            VLLMServer(llm, gpus, port=port, serve_config=self.serve_config, deployer=deployer,
                       name=new_server_name(index))
            for index, (gpus, port) in enumerate(zip(self.serve_config.gpu_groups(), ports))
        ]

    def _ports(self, count: int) -> list[int]:
        if self.serve_config.port is not None:
            return [self.serve_config.port + i for i in range(count)]
        taken: set[int] = set()
        for _ in range(count):
            taken.add(free_port(self.serve_config.host, avoid=taken))
        return sorted(taken)

    def _endpoint_of(self, server: VLLMServer) -> Endpoint:
        return Endpoint(server.base_url, model=server.model,
                        concurrency=self.serve_config.max_concurrency, kind=server.kind)

    def shutdown(self) -> None:
        """Stop every server this service started (in parallel) and close connections.

        Also run at interpreter exit for a started service.
        """
        atexit.unregister(self.shutdown)
        self._release_loop()
        if self.servers:
            with ThreadPoolExecutor(max_workers=len(self.servers)) as pool:
                list(pool.map(lambda server: server.shutdown(), self.servers))
        self.servers = []
        self._endpoints = {}
        self._deployers.close(self.serve_config)

    def __enter__(self) -> VLLMService:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.shutdown()

    # -- state ----------------------------------------------------------------------------

    @property
    def run_dir(self) -> str | None:
        """Where the servers' state and logs are (a temporary directory unless configured)."""
        return self._deployers.run_dir

    @property
    def endpoints(self) -> list[Endpoint]:
        """Every endpoint: the started servers' and the attached ones."""
        return [*self._endpoints.values(), *self._attached]

    def is_running(self) -> bool:
        """True when at least one started server runs, or any server is attached."""
        return bool(self._attached) or any(s.is_running() for s in self.servers)

    def _batch_endpoints(self) -> list[Endpoint]:
        running = [self._endpoints[s.name] for s in self.servers
                   if s.name in self._endpoints and s.is_running()]
        return [*running, *self._attached]


def _as_serve_config(value: ServeConfig | Mapping[str, Any] | None) -> ServeConfig:
    if value is None:
        return ServeConfig()
    return value if isinstance(value, ServeConfig) else ServeConfig.model_validate(dict(value))


def _start_quietly(server: VLLMServer) -> BaseException | None:
    try:
        server.start()
    except Exception as exc:  # collected and re-raised by VLLMService.start
        return exc
    return None
