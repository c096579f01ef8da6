"""Model bases: strict for berth's own documents, tolerant (but reporting) for GPUStack's."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class StrictModel(BaseModel):
    """berth's own documents: an unknown key is an error that names it."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class GPUStackModel(BaseModel):
    """A GPUStack-shaped document. Fields berth does not use are kept, not refused, so a
    scheduler can send its objects unchanged; :meth:`unknown_fields` lists them for warnings."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def unknown_fields(self, prefix: str) -> list[str]:
        found = [f"{prefix}.{key}" for key in (self.model_extra or {})]
        for name in type(self).model_fields:
            value = getattr(self, name)
            items = value if isinstance(value, list) else [value]
            for i, item in enumerate(items):
                if isinstance(item, GPUStackModel):
                    where = f"{prefix}.{name}[{i}]" if isinstance(value, list) else f"{prefix}.{name}"
                    found.extend(item.unknown_fields(where))
        return found


def port_field(description: str) -> Any:
    """An optional TCP port: None, or 1..65535."""
    return Field(default=None, ge=1, le=65535, description=description)


def check_ports(ports: Iterable[int]) -> None:
    """Raise ``ValueError`` naming the first port outside 1..65535."""
    for port in ports:
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} is outside 1..65535")
