"""One client of a berth worker's HTTP API, for the CLI (``--worker URL``), the demo and the
Python client's ``instance_base_url``.

The HTTP stack is the standard library's ``urllib`` with proxies disabled:

* it imports nothing of berth and nothing heavy, so the CLI and the demo (loaded by every
  ``berth`` command) stay light; every call here is one short request, so a pooled async
  session would buy nothing;
* a worker is on this node or on the cluster's network: a proxy configured for the internet
  (``HTTP_PROXY``) would otherwise get the requests, and the bearer token with them.

One error mapping for all: an HTTP error status raises :class:`WorkerAPIError` with the
worker's own ``detail`` (FastAPI's JSON error body), and on 401 a hint about the token; no
answer at all (refused, reset, timed out, cut off) raises :class:`WorkerUnreachable` (also a
``ConnectionError``) naming the worker's URL. Callers turn these into their own error types.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from berth.utils.waiting import wait_until

__all__ = ["Reply", "WorkerAPI", "WorkerAPIError", "WorkerUnreachable", "error_detail"]

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
#: Log answers that are not errors: the bytes asked for, the whole log, or a range past its end.
LOG_STATUSES = (200, 206, 416)


class WorkerAPIError(Exception):
    """The worker answered with an error status (``status``, ``detail``), or something unusable."""

    def __init__(self, message: str, *, status: int | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class WorkerUnreachable(WorkerAPIError, ConnectionError):
    """No answer from the worker (refused, reset, timed out, cut off mid-answer): worth retrying."""


@dataclass(frozen=True, slots=True)
class Reply:
    """One answer, whatever its status."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")


def error_detail(body: bytes) -> str:
    """What an error body says: its JSON ``detail`` when it has one, else its first 300 characters."""
    text = body[:300].decode("utf-8", "replace").strip()
    try:
        parsed = json.loads(body)
    except ValueError:
        return text or "(empty body)"
    if isinstance(parsed, dict) and parsed.get("detail") not in (None, ""):
        detail = parsed["detail"]
        return detail if isinstance(detail, str) else json.dumps(detail)
    return text or "(empty body)"


def quoted(instance_id: str | int) -> str:
    """An instance id as one path segment."""
    return urllib.parse.quote(str(instance_id), safe="")


class WorkerAPI:
    """A berth worker at ``url`` (``http://127.0.0.1:8001``), with an optional bearer token.

    ``timeout`` is each request's default; ``token_hint`` completes the message of a 401 when
    no token was given (say where the caller's token comes from); ``unreachable_hint``
    completes the message when nothing answers. Raises ``ValueError`` for a URL that is not
    http(s). A caller whose errors have a type of their own (the CLI's one-line errors) sets
    ``error_type`` and ``unreachable_type`` in a subclass, to subclasses of these two.
    """

    error_type: type[WorkerAPIError] = WorkerAPIError
    unreachable_type: type[WorkerUnreachable] = WorkerUnreachable

    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0, *,
                 token_hint: str = "pass the worker's API token",
                 unreachable_hint: str = "start one with `berth serve`") -> None:
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"worker URL {url!r} is not an http(s) URL such as http://127.0.0.1:8001")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.token_hint = token_hint
        self.unreachable_hint = unreachable_hint

    def __repr__(self) -> str:  # never shows the token
        return f"WorkerAPI({self.url!r})"

    # -- requests ------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                *, timeout: float | None = None) -> Reply:
        """One request; its answer whatever the status. Raises :class:`WorkerUnreachable`."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=dict(headers or {}))
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with _OPENER.open(request, timeout=self.timeout if timeout is None else timeout) as response:
                return Reply(response.status, dict(response.headers), response.read())
        except urllib.error.HTTPError as exc:
            return Reply(exc.code, dict(exc.headers or {}), exc.read())
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise self.unreachable_type(
                f"no berth worker answering at {self.url} ({reason}); {self.unreachable_hint}") from None

    def error(self, method: str, path: str, reply: Reply) -> WorkerAPIError:
        """The one error for an error answer: the worker's detail, and the token hint on 401."""
        detail = error_detail(reply.body)
        where = f"{method} {self.url}{path} answered HTTP {reply.status}"
        if reply.status == 401:
            hint = "the worker refused the token given" if self.token else self.token_hint
            return self.error_type(f"{where}; {hint} ({detail})", status=reply.status, detail=detail)
        return self.error_type(f"{where}: {detail}", status=reply.status, detail=detail)

    def call(self, method: str, path: str, body: Any = None, *, timeout: float | None = None) -> Any:
        """A JSON call that must succeed; its decoded answer (``None`` for an empty body)."""
        # (no timeout argument unless one is given: a subclass may stand in for request())
        reply = self.request(method, path, body) if timeout is None else self.request(method, path, body, timeout=timeout)
        if reply.status >= 400:
            raise self.error(method, path, reply)
        try:
            return reply.json()
        except ValueError:
            raise self.error_type(f"{method} {self.url}{path} answered {reply.status} with a body that is not JSON: "
                                 f"{reply.body[:100]!r}", status=reply.status) from None

    # -- the worker's resources ------------------------------------------------------------

    def health(self, timeout: float | None = None) -> bool:
        """Whether ``/health`` answers 200 (no token needed); False when nothing answers."""
        try:
            return self.request("GET", "/health", timeout=timeout).status == 200
        except WorkerUnreachable:
            return False

    def instances(self) -> list[dict[str, Any]]:
        """Every instance's view (``GET /v2/instances``)."""
        return list(self.call("GET", "/v2/instances")["instances"])

    def instance(self, instance_id: str | int) -> dict[str, Any]:
        """One instance's view (``GET /v2/instances/{id}``)."""
        return self.call("GET", f"/v2/instances/{quoted(instance_id)}")  # type: ignore[no-any-return]

    def create(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Submit a deployment spec (``POST /v2/instances``); the answer names ``instance_id``."""
        return self.call("POST", "/v2/instances", spec)  # type: ignore[no-any-return]

    def delete(self, instance_id: str | int) -> Any:
        """Stop and delete one instance (``DELETE /v2/instances/{id}``)."""
        return self.call("DELETE", f"/v2/instances/{quoted(instance_id)}")

    def models(self) -> list[dict[str, Any]]:
        """The registered models (``GET /v2/models``); [] when model swapping is off."""
        reply = self.request("GET", "/v2/models")
        return list(reply.json().get("models", [])) if reply.status == 200 else []

    @staticmethod
    def log_path(instance_id: str | int, container: str = "default") -> str:
        """Where an instance's log is read (``GET /v2/instances/{id}/log``)."""
        query = "" if container == "default" else "?" + urllib.parse.urlencode({"container": container})
        return f"/v2/instances/{quoted(instance_id)}/log{query}"

    def log_range(self, instance_id: str | int, range_header: str | None, container: str = "default") -> Reply:
        """One read of a log: ``range_header`` (``bytes=START-``, ``bytes=-N``) or all of it.

        200, 206 and 416 (a range past the end) are answers; anything else raises."""
        path = self.log_path(instance_id, container)
        reply = self.request("GET", path, headers={"Range": range_header} if range_header else {})
        if reply.status in LOG_STATUSES:
            return reply
        raise self.error("GET", path, reply)

    def wait_settled(self, instance_id: str | int, timeout: float, *, interval: float = 1.0,
                     on_wait: Callable[[dict[str, Any], float], object] | None = None) -> dict[str, Any]:
        """Poll one instance until it is ready or has stopped; its last view.

        Raises :class:`berth.utils.waiting.WaitTimeout` (``last``: the last view) after ``timeout`` s."""
        return wait_until(lambda: self.instance(instance_id), timeout=timeout, interval=interval,
                          what=f"instance {instance_id} to be ready", on_wait=on_wait,
                          done=lambda view: view.get("ready") or view.get("status") == "stopped")
