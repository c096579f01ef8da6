"""The swap controller's own error (the router's ``ModelUnavailable`` and ``UnknownModel`` aside)."""

from __future__ import annotations

from berth.worker.errors import WorkerError


class ModelStateConflict(WorkerError):
    """The model is not in a state the operation applies to (the message says which it is in)."""

    status_code = 409
