"""Talking to a berth worker's API from the CLI (``berth --worker URL ...``).

Standard library HTTP only: the CLI must stay light, and every call is one request.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from berth.cli._app import CLIError


class WorkerUnreachable(CLIError):
    """The worker did not answer (refused, reset, timed out, cut off mid-answer): worth retrying."""


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")


class WorkerAPI:
    """A berth worker at ``url`` (``http://127.0.0.1:8001``), with an optional bearer token."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0) -> None:
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise CLIError(f"--worker {url!r} must be an http(s) URL such as http://127.0.0.1:8001")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Reply:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=dict(headers or {}))
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return Reply(response.status, dict(response.headers), response.read())
        except urllib.error.HTTPError as exc:
            return Reply(exc.code, dict(exc.headers or {}), exc.read())
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise WorkerUnreachable(
                f"no berth worker answering at {self.url} ({exc}); start one with `berth serve`") from None

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """A JSON call; a 4xx/5xx becomes one CLI error line with the worker's own message."""
        reply = self.request(method, path, body)
        if reply.status >= 400:
            try:
                detail = reply.json().get("detail", reply.body.decode(errors="replace"))
            except (ValueError, AttributeError):
                detail = reply.body.decode(errors="replace")[:300]
            raise CLIError(f"worker answered {reply.status}: {detail}")
        return reply.json()

    @staticmethod
    def log_path(instance_id: str, container: str = "default") -> str:
        query = "" if container == "default" else "?" + urllib.parse.urlencode({"container": container})
        return f"/v2/instances/{urllib.parse.quote(instance_id, safe='')}/log{query}"

    def log_range(self, instance_id: str, range_header: str | None, container: str = "default") -> Reply:
        headers = {"Range": range_header} if range_header else {}
        reply = self.request("GET", self.log_path(instance_id, container), headers=headers)
        if reply.status in (200, 206, 416):
            return reply
        raise CLIError(f"worker answered {reply.status} for the log of {instance_id!r}: {reply.body[:300]!r}")

    def wait_ready(self, instance_id: str, timeout: float, on_update: Any) -> dict[str, Any]:
        """Poll one instance until it is ready or has ended; returns its last view."""
        started = time.monotonic()
        path = f"/v2/instances/{urllib.parse.quote(instance_id, safe='')}"
        while True:
            view = self.call("GET", path)
            if view.get("ready") or view.get("status") == "stopped":
                return view
            elapsed = time.monotonic() - started
            if elapsed > timeout:
                raise CLIError(f"{instance_id} not ready after {timeout:.0f} s ({view.get('state')}: {view.get('reason')})")
            on_update(view, elapsed)
            time.sleep(1.0)
