"""Errors the worker raises; each carries the HTTP status the API answers with."""

from __future__ import annotations

__all__ = [
    "DeployFailed",
    "DeployerDown",
    "Forbidden",
    "InstanceConflict",
    "InstanceNotFound",
    "InvalidRequest",
    "RegistryUnavailable",
    "ResourceExhausted",
    "Unauthorized",
    "WorkerError",
    "retry_after_header",
]


class WorkerError(Exception):
    """Base of the worker's errors. The message is for a person and names the field."""

    status_code: int = 500

    def headers(self) -> dict[str, str]:
        """Headers the ``{"detail": ...}`` answer carries (none but for a few errors)."""
        return {}


def retry_after_header(seconds: float) -> dict[str, str]:
    """``Retry-After`` for a wait of ``seconds``: whole seconds, at least one."""
    return {"Retry-After": str(max(1, round(seconds)))}


class InvalidRequest(WorkerError):
    """A body, option, id or spec that cannot be accepted (the message names the field)."""

    status_code = 422


class Unauthorized(WorkerError):
    """No token, or not the one this endpoint wants."""

    status_code = 401


class Forbidden(WorkerError):
    """The caller may not read what it asked for."""

    status_code = 403


class InstanceNotFound(WorkerError):
    status_code = 404


class InstanceConflict(WorkerError):
    """The id, a port or a GPU is already taken by another instance."""

    status_code = 409


class ResourceExhausted(WorkerError):
    """No free port or GPU is left to allocate."""

    status_code = 409


class DeployFailed(WorkerError):
    """The deployer could not create the workload for a reason that is not the request's."""

    status_code = 500


class RegistryUnavailable(WorkerError):
    """The registry could not be read or written (locked too long, disk full...)."""

    status_code = 503


class DeployerDown(WorkerError):
    """The deployer's engine (Docker, the launcher daemon...) cannot be reached right now."""

    status_code = 503
