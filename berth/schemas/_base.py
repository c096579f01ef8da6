"""Model bases: strict for berth's own documents, tolerant (but reporting) for GPUStack's."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


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
