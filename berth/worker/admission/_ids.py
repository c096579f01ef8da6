"""The one rule for instance ids: they name workloads, so they follow the deployers' name rule."""

from __future__ import annotations

from berth.deployers import MAX_NAME_LENGTH, name_problem
from berth.worker.errors import InvalidRequest

MAX_ID_LENGTH = MAX_NAME_LENGTH


def check_instance_id(instance_id: str, field: str = "instance_id") -> str:
    """A safe instance id: the deployers' name rule (1-63 letters, digits, '-', '_', '.',
    alphanumeric at both ends), and no '..'."""
    if ".." in instance_id or name_problem("instance", instance_id) is not None:
        raise InvalidRequest(
            f"{field}: {instance_id[:80]!r} is not a safe name; use 1-{MAX_ID_LENGTH} letters, digits, "
            "'-', '_' or '.', starting and ending with a letter or digit, without '..'"
        )
    return instance_id
