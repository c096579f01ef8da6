"""Errors the client raises. Every message names what went wrong and what to do about it."""

from __future__ import annotations

__all__ = [
    "ClientError",
    "RequestTimeout",
    "SamplingParamsError",
    "ServerError",
    "ServerStartError",
    "ServerUnavailable",
]


class ClientError(Exception):
    """Base of every error raised by :mod:`berth.client`."""


class SamplingParamsError(ClientError, ValueError):
    """A sampling parameter cannot be sent to an OpenAI-compatible vLLM server."""


class ServerUnavailable(ClientError, ConnectionError):
    """The server could not be reached, even after the retries allowed."""


class RequestTimeout(ClientError, TimeoutError):
    """A request took longer than the client's timeout."""


class ServerError(ClientError):
    """The server answered with an HTTP error status; ``status`` and ``message`` carry it."""

    def __init__(self, url: str, status: int, message: str) -> None:
        super().__init__(f"{url} answered HTTP {status}: {message}")
        self.url = url
        self.status = status
        self.message = message


class ServerStartError(ClientError, RuntimeError):
    """A vLLM server did not become ready (it exited, or the startup timeout passed)."""
