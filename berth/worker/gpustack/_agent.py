"""The GPUStack agent: makes ``berth serve`` one worker of a GPUStack 2.3 cluster.

Started by the worker's app when ``gpustack_url`` is set, it runs on the app's event loop:

1. **join**: ``POST /v2/workers`` with this host's status. The first time with the registration
   token; GPUStack answers with the worker's id, UUID and its own token, which are kept in
   ``<data_dir>/gpustack/identity.json``. Later starts register again with that UUID and token,
   so GPUStack finds the same worker (same id, same instances).
2. **heartbeat** (``/v2/worker-heartbeat``) and **status** (``/v2/worker-status``) on their intervals.
3. **instances** and **model files**: a full list (resync) then ``?watch=true`` NDJSON events,
   handled by :class:`.instances.InstanceSync` and :class:`.files.FileSync`; a resync again every
   ``gpustack_resync_interval`` and after every reconnect, so what changed while the stream (or
   berth) was down is caught up, deletions included.
4. **report**: berth's instance states pushed to GPUStack every ``poll_interval``.

A server that is down, slow or answering 5xx is retried with exponential back-off (one log line
per outage); the instances keep serving meanwhile. Any other failure of a step (an instance berth
cannot translate, a line of the stream that is not JSON, an identity that cannot be saved) is
logged once per distinct failure (the traceback at debug) and retried with back-off too: no loop
ever ends but by :meth:`GPUStackAgent.stop`. Nothing here changes how berth runs engines: it calls
:class:`~berth.worker.instances.ServeManager`'s public methods.

Concurrency: everything here runs on the app's event loop; blocking work (the manager's calls,
reading the host's status, the identity file) goes to threads under the limiter the app passes
(``limiter``), never anyio's or asyncio's default pool.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import platform
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.to_thread

from berth.schemas import Worker
from berth.worker.gpustack._client import (
    GPUStackClient,
    ServerRefused,
    ServerUnavailable,
    server_backoff,
)
from berth.worker.gpustack._files import FileSync
from berth.worker.gpustack._identity import Identity, load_identity, save_identity
from berth.worker.gpustack._instances import InstanceSync
from berth.worker.gpustack._status import CPUSampler, registration_body
from berth.worker.gpustack._translate import instance_from_header
from berth.worker.instances import ServeManager

logger = logging.getLogger(__name__)

_AUTH_LOST = (401, 403)
_RETRYABLE = (ServerUnavailable, ServerRefused)
#: Distinct failures a loop remembers having logged (a run of new ones each gets one line).
_REMEMBERED = 32


class NotJoined(RuntimeError):
    """The worker has no GPUStack identity yet (never registered, server unreachable so far)."""


class Failures:
    """What a loop logs of its unexpected failures: a warning the first time each one (type and
    message) is seen since the loop last worked, its traceback at debug every time."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._seen: set[str] = set()

    def unexpected(self, exc: BaseException) -> None:
        key = f"{type(exc).__name__}: {str(exc)[:200]}"
        if key not in self._seen:
            logger.warning("GPUStack %s failed unexpectedly (%s); retrying with back-off", self.what, key)
            if len(self._seen) < _REMEMBERED:
                self._seen.add(key)
        logger.debug("GPUStack %s failure", self.what, exc_info=exc)

    def cleared(self) -> None:
        self._seen.clear()


class GPUStackAgent:
    """This worker's membership of one GPUStack cluster. Construct (no I/O), :meth:`start`, :meth:`stop`."""

    def __init__(self, manager: ServeManager, limiter: anyio.CapacityLimiter | None = None,
                 log_reads: anyio.CapacityLimiter | None = None) -> None:
        """``limiter``: threads for blocking work; ``log_reads``: threads for the log reads of its
        routes (the app's limiters; anyio's default when None)."""
        settings = manager.settings
        if not settings.gpustack_url:
            raise ValueError("gpustack_url is not set")
        self.manager = manager
        self.settings = settings
        self.limiter = limiter
        self.log_reads = log_reads
        self.client = GPUStackClient(settings.gpustack_url)
        self.identity: Identity | None = None
        self.instances = InstanceSync(manager, self.client, self.worker, limiter)
        self._cpu = CPUSampler()
        self._tasks: list[asyncio.Task[None]] = []
        self._resyncing = asyncio.Lock()
        self._joining = asyncio.Lock()

    # -- what the worker's routes use ------------------------------------------------------------

    def worker(self) -> Worker:
        """This worker as berth's plans see it, with GPUStack's id and name."""
        if self.identity is None:
            raise NotJoined("not registered with GPUStack yet")
        base = self.settings.to_worker()
        return base.model_copy(update={"id": self.identity.worker_id, "name": self.identity.worker_name})

    def accepts(self, presented: bytes) -> bool:
        """True when ``presented`` is this worker's GPUStack token (what the server sends)."""
        token = self.identity.token.encode() if self.identity else b""
        return bool(token) and hmac.compare_digest(presented, token)

    @staticmethod
    def header_route(value: str) -> str | None:
        return instance_from_header(value)

    # -- lifecycle -------------------------------------------------------------------------------

    async def _in_thread(self, call: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(call, *args, limiter=self.limiter, abandon_on_cancel=True)

    async def start(self) -> None:
        assert self.settings.gpustack_url is not None
        self.identity = await self._in_thread(load_identity, self.settings.data_dir, self.settings.gpustack_url)
        if self.identity is not None:
            self.client.token = self.identity.token
            logger.info("GPUStack: re-joining %s as worker %d (%s)", self.settings.gpustack_url,
                        self.identity.worker_id, self.identity.worker_name)
        self._tasks = [asyncio.create_task(self._run(), name="gpustack-agent")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.client.close()

    async def _run(self) -> None:
        await self._join_with_retries()
        loops: list[tuple[str, Callable[[], Awaitable[None]], float]] = [
            ("heartbeat", self._heartbeat, self.settings.gpustack_heartbeat_interval),
            ("status", self._status, self.settings.gpustack_status_interval),
            ("resync", self._resync, self.settings.gpustack_resync_interval),
            ("report", self.instances.report, self.settings.poll_interval),
        ]
        tasks = [asyncio.create_task(self._every(name, step, interval), name=f"gpustack-{name}")
                 for name, step, interval in loops]
        tasks += [asyncio.create_task(self._watch("model-instances", self._resync_instances, self.instances.on_event)),
                  asyncio.create_task(self._watch("model-files", self._resync_files, self._files().on_event))]
        self._tasks.extend(tasks)
        await asyncio.gather(*tasks)

    def _files(self) -> FileSync:
        return FileSync(self.client, self.worker().id or 0, self.limiter)

    # -- joining ---------------------------------------------------------------------------------

    async def _join_with_retries(self) -> None:
        backoff, failures = server_backoff(), Failures("registration")
        while True:
            try:
                await self._join()
                return
            except _RETRYABLE as exc:
                delay = backoff.next()
                logger.warning("GPUStack: cannot register with %s (%s); retrying in %.0f s",
                               self.settings.gpustack_url, exc, delay)
            except Exception as exc:  # noqa: BLE001 - joining must go on whatever failed
                delay = backoff.next()
                failures.unexpected(exc)
            await asyncio.sleep(delay)

    def _name(self) -> str:
        if self.settings.worker_name:
            return self.settings.worker_name
        return self.identity.worker_name if self.identity else socket.gethostname()

    async def _join(self) -> None:
        """Register (again); keep the identity GPUStack answers with."""
        uuid = self.identity.worker_uuid if self.identity else ""
        body = await self._in_thread(registration_body, self.settings, self._cpu, uuid)
        body |= {"name": self._name(), "labels": {"os": platform.system().lower(), "arch": platform.machine(),
                                                    "berth": "true"}}
        answer = await self._register(body)
        identity = Identity(server_url=self.settings.gpustack_url or "", worker_id=int(answer["id"]),
                            worker_uuid=str(answer["worker_uuid"]), worker_name=str(answer["name"]),
                            token=str(answer["token"]))
        await self._in_thread(save_identity, self.settings.data_dir, identity)
        self.identity, self.client.token = identity, identity.token
        logger.info("GPUStack: joined %s as worker %d (%s)", self.settings.gpustack_url, identity.worker_id,
                    identity.worker_name)

    async def _register(self, body: dict[str, Any]) -> dict[str, Any]:
        registration = self.settings.gpustack_token.get_secret_value() if self.settings.gpustack_token else None
        if self.identity is not None:
            try:
                return await self.client.call("POST", "/workers", body=body, token=self.identity.token)
            except ServerRefused as exc:
                if exc.status not in _AUTH_LOST or registration is None:
                    raise
                logger.warning("GPUStack refused this worker's saved token (%s); registering afresh", exc.status)
                body = body | {"worker_uuid": ""}
        if registration is None:
            raise ServerRefused(401, "no registration token: set BERTH_GPUSTACK_TOKEN (or --gpustack-token) "
                                     "to the GPUStack server's token")
        return await self.client.call("POST", "/workers", body=body, token=registration)

    # -- loops -----------------------------------------------------------------------------------

    async def _every(self, name: str, step: Callable[[], Awaitable[None]], interval: float) -> None:
        backoff, failing, failures = server_backoff(initial=interval, maximum=max(30.0, interval)), False, Failures(name)
        while True:
            try:
                await step()
            except _RETRYABLE as exc:
                if not failing:
                    logger.warning("GPUStack %s failed: %s (retrying with back-off; instances keep serving)", name, exc)
                failing = True
                await self._maybe_rejoin(exc)
                await asyncio.sleep(backoff.next())
                continue
            except Exception as exc:  # noqa: BLE001 - one bad step must not end the loop
                failures.unexpected(exc)
                failing = True
                await asyncio.sleep(backoff.next())
                continue
            if failing:
                logger.info("GPUStack %s works again", name)
            failing = False
            failures.cleared()
            backoff.reset()
            await asyncio.sleep(interval)

    async def _maybe_rejoin(self, exc: Exception) -> None:
        """After the server refused this worker's token (GPUStack deleted the worker): join again, once."""
        if not (isinstance(exc, ServerRefused) and exc.status in _AUTH_LOST):
            return
        if self._joining.locked():  # another loop is already re-joining: wait for it
            async with self._joining:
                return
        async with self._joining:
            await self._join_with_retries()

    async def _heartbeat(self) -> None:
        await self.client.call("POST", "/worker-heartbeat", body={})

    async def _status(self) -> None:
        uuid = self.identity.worker_uuid if self.identity else ""
        body = await self._in_thread(registration_body, self.settings, self._cpu, uuid)
        await self.client.call("POST", "/worker-status", body=body)

    async def _resync(self) -> None:
        await self._resync_instances()
        await self._resync_files()

    async def _resync_instances(self) -> None:
        async with self._resyncing:  # one snapshot at a time: an older list never undoes a newer one
            await self.instances.resync(await self.client.list_all("model-instances"))

    async def _resync_files(self) -> None:
        await self._files().resync(await self.client.list_all("model-files"))

    async def _watch(self, kind: str, resync: Callable[[], Awaitable[None]],
                     handle: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        backoff, failing, failures = server_backoff(maximum=15.0), False, Failures(f"{kind} watch")
        while True:
            try:
                await resync()
                if failing:
                    logger.info("GPUStack %s watch reconnected", kind)
                failing = False
                failures.cleared()
                async for event in self.client.watch(kind):
                    backoff.reset()
                    await self._handle(kind, handle, event)
            except _RETRYABLE as exc:
                delay = backoff.next()
                log = logger.debug if failing else logger.warning
                log("GPUStack %s watch interrupted (%s); reconnecting with back-off", kind, exc)
                failing = True
                await self._maybe_rejoin(exc)
                await asyncio.sleep(delay)
            except Exception as exc:  # noqa: BLE001 - a resync or a line that fails must not end the watch
                failing = True
                failures.unexpected(exc)
                await asyncio.sleep(backoff.next())

    @staticmethod
    async def _handle(kind: str, handle: Callable[[dict[str, Any]], Awaitable[None]], event: dict[str, Any]) -> None:
        try:
            await handle(event)
        except _RETRYABLE:
            raise
        except Exception:  # noqa: BLE001 - one bad event must not end the watch
            logger.exception("GPUStack %s event %s failed", kind, event.get("id"))

