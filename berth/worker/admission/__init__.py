"""What a request may run on this worker: launcher bodies and specs checked, env policy, ports
and GPUs allocated by the one :class:`Allocator` (instances and durable port reservations)."""

from __future__ import annotations

from berth.worker.admission._admission import (
    Admitted,
    Holdings,
    admit_launcher,
    admit_spec,
)
from berth.worker.admission._allocation import PortAllocator
from berth.worker.admission._allocator import Allocator, Placement
from berth.worker.admission._ids import MAX_ID_LENGTH, check_instance_id
from berth.worker.admission._launcher_spec import LauncherRequest, parse_options

__all__ = [
    "MAX_ID_LENGTH",
    "Admitted",
    "Allocator",
    "Holdings",
    "LauncherRequest",
    "Placement",
    "PortAllocator",
    "admit_launcher",
    "admit_spec",
    "check_instance_id",
    "parse_options",
]
