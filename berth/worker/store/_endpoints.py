"""What an instance answers at, typed: the record's ``endpoints`` column.

Stored as one JSON object with the keys ``base_url``, ``readiness_url``, ``served_names``,
``ray_join`` (a Ray leader's join check) and ``loras`` (adapters loaded at run time). Rows
written by any earlier berth read back: a missing key is its default, malformed entries of a
list are dropped, unknown keys are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class RuntimeLora:
    """An adapter loaded into the engine at run time."""

    name: str
    path: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "path": self.path}


@dataclass(frozen=True, slots=True)
class RayJoin:
    """What the watcher checks before a Ray leader can be ready: who must be in its head."""

    head: str
    dashboard: str
    leader_ip: str
    followers: Mapping[str, str]  # follower address -> how to name it

    def to_json(self) -> dict[str, Any]:
        return {"head": self.head, "dashboard": self.dashboard, "leader_ip": self.leader_ip,
                "followers": dict(self.followers)}

    @classmethod
    def from_json(cls, data: Any) -> RayJoin | None:
        if not isinstance(data, Mapping):
            return None
        try:
            followers = {str(k): str(v) for k, v in dict(data.get("followers") or {}).items()}
            return cls(str(data["head"]), str(data["dashboard"]), str(data["leader_ip"]), followers)
        except (KeyError, TypeError, ValueError):
            return None


def _loras(entries: Any) -> tuple[RuntimeLora, ...]:
    if not isinstance(entries, list):
        return ()
    return tuple(RuntimeLora(e["name"], e["path"]) for e in entries
                 if isinstance(e, Mapping) and isinstance(e.get("name"), str) and isinstance(e.get("path"), str))


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where a planned instance answers, what it serves, and what the worker keeps checking."""

    base_url: str | None = None
    readiness_url: str | None = None
    served_names: tuple[str, ...] = ()
    ray_join: RayJoin | None = None
    loras: tuple[RuntimeLora, ...] = ()

    @classmethod
    def from_json(cls, data: Any) -> Endpoints:
        """From the stored JSON (or an ``Endpoints``); tolerant of rows of older berths."""
        if isinstance(data, Endpoints):
            return data
        if not isinstance(data, Mapping):
            return cls()
        names = data.get("served_names")
        return cls(
            base_url=str(data["base_url"]) if data.get("base_url") else None,
            readiness_url=str(data["readiness_url"]) if data.get("readiness_url") else None,
            served_names=tuple(str(n) for n in names) if isinstance(names, list | tuple) else (),
            ray_join=RayJoin.from_json(data.get("ray_join")),
            loras=_loras(data.get("loras")),
        )

    def to_json(self) -> dict[str, Any]:
        """The stored shape: the three addresses always, ``ray_join`` and ``loras`` when set."""
        data: dict[str, Any] = {"base_url": self.base_url, "readiness_url": self.readiness_url,
                                "served_names": list(self.served_names)}
        if self.ray_join is not None:
            data["ray_join"] = self.ray_join.to_json()
        if self.loras:
            data["loras"] = [lora.to_json() for lora in self.loras]
        return data

    def lora_names(self) -> list[str]:
        return [lora.name for lora in self.loras]

    def with_lora(self, name: str, path: str) -> Endpoints:
        """These endpoints with adapter ``name`` (re)pointed at ``path``, loaded last."""
        kept = tuple(lora for lora in self.loras if lora.name != name)
        return replace(self, loras=(*kept, RuntimeLora(name, path)))

    def without_lora(self, name: str) -> Endpoints:
        return replace(self, loras=tuple(lora for lora in self.loras if lora.name != name))
