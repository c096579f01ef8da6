"""GPU resources of a plan container turned into the vendor's visible-devices variables.

A container runtime injects devices from a plan's resources (``nvidia.com/devices: "0,1"``).
A local process has no runtime in between, so the deployer sets the variables the vendor's
device runtime reads (``CUDA_VISIBLE_DEVICES``, ``HIP_VISIBLE_DEVICES`` ...) itself. The
resource-key to variable map is gpustack-runtime's own
(``GPUSTACK_RUNTIME_DEPLOY_RESOURCE_KEY_MAP_BACKEND_VISIBLE_DEVICES``, overridable by that
environment variable), plus ``ROCR_VISIBLE_DEVICES`` for AMD, which ROCm honours below HIP.

Values are device indexes or UUIDs, passed through as given: a local process sees the host's
device numbering, so the realignment a container runtime applies is not needed here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from gpustack_runtime import envs as runtime_envs

from berth.deployers.base import InvalidWorkload

#: Variables berth sets besides gpustack-runtime's map, by resource key.
EXTRA_VISIBLE_DEVICES: dict[str, tuple[str, ...]] = {
    "amd.com/devices": ("ROCR_VISIBLE_DEVICES",),
}
#: A resource value meaning "every device": no variable is set, the process sees them all.
ALL_DEVICES = "all"

_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")


def visible_devices_map() -> dict[str, tuple[str, ...]]:
    """Resource key (``nvidia.com/devices``) -> the variables that select its devices."""
    base = runtime_envs.GPUSTACK_RUNTIME_DEPLOY_RESOURCE_KEY_MAP_BACKEND_VISIBLE_DEVICES or {}
    merged: dict[str, tuple[str, ...]] = {}
    for key, names in base.items():
        listed = (names,) if isinstance(names, str) else tuple(names)
        merged[key] = listed + tuple(n for n in EXTRA_VISIBLE_DEVICES.get(key, ()) if n not in listed)
    for key, names in EXTRA_VISIBLE_DEVICES.items():
        merged.setdefault(key, names)
    return merged


def visible_devices_env(resources: Mapping[str, str] | None) -> dict[str, str]:
    """The visible-devices variables for a container's ``resources``.

    Keys that name no devices (``cpu``, ``memory``) are ignored; a ``.../devices`` key that
    gpustack-runtime does not know, a malformed value, or two keys that set one variable to
    different values raise :class:`InvalidWorkload` naming the key.
    """
    known = visible_devices_map()
    env: dict[str, str] = {}
    for key, raw in (resources or {}).items():
        names = known.get(key)
        if names is None:
            _reject_unknown_device_key(key, known)
            continue
        value = normalize_devices(key, raw)
        if value is None:
            continue
        for name in names:
            _set_once(env, name, value, key)
    return env


def normalize_devices(key: str, raw: object) -> str | None:
    """``" 0, 1"`` -> ``"0,1"``; ``"all"`` -> ``None`` (leave every device visible)."""
    text = str(raw).strip()
    if text.lower() == ALL_DEVICES:
        return None
    items = [item.strip() for item in text.split(",")]
    bad = [item for item in items if not _DEVICE_ID.match(item)]
    if bad or not text:
        raise InvalidWorkload(
            f"resource {key!r} has device list {text!r}; give device indexes or UUIDs "
            f"separated by commas (e.g. '0,1' or 'GPU-8f6c...'), or 'all'"
        )
    return ",".join(items)


def _reject_unknown_device_key(key: str, known: Mapping[str, object]) -> None:
    if key.endswith("/devices"):
        choices = ", ".join(sorted(known))
        raise InvalidWorkload(
            f"resource {key!r} names devices this deployer cannot map to a visible-devices "
            f"variable; use one of: {choices}"
        )


def _set_once(env: dict[str, str], name: str, value: str, key: str) -> None:
    previous = env.get(name)
    if previous is not None and previous != value:
        raise InvalidWorkload(
            f"resource {key!r} sets {name}={value!r} but another resource already set "
            f"{previous!r}; give each device family once"
        )
    env[name] = value


__all__ = [
    "ALL_DEVICES",
    "EXTRA_VISIBLE_DEVICES",
    "normalize_devices",
    "visible_devices_env",
    "visible_devices_map",
]
