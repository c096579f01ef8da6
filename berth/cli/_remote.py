"""Reaching a berth worker's API from the CLI (``berth --worker URL ...``).

The client is :class:`berth.utils.worker_api.WorkerAPI` (standard library HTTP, one request
per call); here its errors become the CLI's one-line errors, and the token comes from
``BERTH_API_TOKEN`` or ``BERTH_API_TOKEN_FILE``.
"""

from __future__ import annotations

import os
from pathlib import Path

from berth.cli._app import CLIError, state
from berth.utils import worker_api
from berth.utils.worker_api import Reply  # noqa: F401  (the CLI's name for an answer)

#: How a CLI user passes the worker's token.
TOKEN_HINT = "set BERTH_API_TOKEN or BERTH_API_TOKEN_FILE to the worker's API token"


class WorkerError(worker_api.WorkerAPIError, CLIError):
    """The worker answered with an error: one line with the worker's own message."""


class WorkerUnreachable(worker_api.WorkerUnreachable, CLIError):
    """The worker did not answer (refused, reset, timed out, cut off mid-answer): worth retrying."""


class WorkerAPI(worker_api.WorkerAPI):
    """A berth worker at ``url`` (``http://127.0.0.1:8001``), its errors CLI errors."""

    error_type = WorkerError
    unreachable_type = WorkerUnreachable

    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0) -> None:
        try:
            super().__init__(url, token, timeout, token_hint=TOKEN_HINT)
        except ValueError:
            raise CLIError(f"--worker {url!r} must be an http(s) URL such as http://127.0.0.1:8001") from None


def _token() -> str | None:
    token = os.environ.get("BERTH_API_TOKEN")
    path = os.environ.get("BERTH_API_TOKEN_FILE")
    if not token and path:
        try:
            token = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise CLIError(f"cannot read BERTH_API_TOKEN_FILE {path}: {exc}") from None
    return token or None


def remote() -> WorkerAPI | None:
    """The worker given by ``--worker``/``BERTH_WORKER``, or None to act locally."""
    url = state.get("worker")
    return WorkerAPI(str(url), _token()) if url else None
