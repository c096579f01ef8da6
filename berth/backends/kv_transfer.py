"""One ``--kv-transfer-config`` per engine: several connector descriptors folded into one
``MultiConnector``.

vLLM keeps the last of two ``--kv-transfer-config`` flags, so a user's own connector next to the
extended KV cache's would silently drop one. Folded, the engine loads from the first child that
has the tokens and saves to all. Disaggregated roles (prefill, decode) put their transfer
connector first and the cache second; any other role keeps the cache first. Settings vLLM reads
only at the top (``kv_load_failure_policy``) are copied up from the children.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["FLAG", "compose_kv_transfer_config", "descriptor_in"]

FLAG = "--kv-transfer-config"
_ROLE_KV = {"prefill": "kv_producer", "decode": "kv_consumer"}
#: vLLM reads these only off the top-level descriptor.
TOP_LEVEL_ONLY = ("kv_load_failure_policy",)

Descriptor = dict[str, Any]


def _occurrences(arguments: list[str]) -> list[tuple[int, int, str]]:
    """(position, tokens taken, value) of every ``--kv-transfer-config`` (spaced or ``=``)."""
    found: list[tuple[int, int, str]] = []
    index = 0
    while index < len(arguments):
        token = arguments[index]
        if token == FLAG and index + 1 < len(arguments):
            found.append((index, 2, arguments[index + 1]))
            index += 2
            continue
        if token.startswith(f"{FLAG}="):
            found.append((index, 1, token[len(FLAG) + 1 :]))
        index += 1
    return found


def _parse(value: str) -> Descriptor | None:
    try:
        parsed = json.loads(value)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def descriptor_in(arguments: list[str]) -> Descriptor | None:
    """The descriptor ``arguments`` carry when they carry exactly one."""
    found = _occurrences(arguments)
    return _parse(found[0][2]) if len(found) == 1 else None


def _composite(descriptors: list[Descriptor], role: str | None) -> Descriptor:
    ordered = list(reversed(descriptors)) if role in _ROLE_KV else list(descriptors)
    composed: Descriptor = {
        "kv_connector": "MultiConnector",
        "kv_role": _ROLE_KV.get(role or "", "kv_both"),
        "kv_connector_extra_config": {"connectors": ordered},
    }
    for key in TOP_LEVEL_ONLY:
        holders = [d[key] for d in ordered if key in d]
        if holders:
            composed[key] = holders[0]
    return composed


def compose_kv_transfer_config(
    arguments: list[str], role: str | None, cache: Descriptor | None
) -> tuple[list[str], str | None]:
    """(``arguments`` with every ``--kv-transfer-config`` folded into one at the first's place,
    a warning or None). Fewer than two: unchanged. One that is not a JSON object: all left as
    they are, with a warning (the engine then reports the duplicate itself)."""
    found = _occurrences(arguments)
    if len(found) < 2:
        return arguments, None
    descriptors = [_parse(value) for _, _, value in found]
    if any(d is None for d in descriptors):
        return arguments, f"{len(found)} {FLAG} options left unmerged: one is not a JSON object"
    parsed = [d for d in descriptors if d is not None]
    if cache is not None:
        parsed = [cache] + [d for d in parsed if d != cache]
    encoded = json.dumps(_composite(parsed, role), separators=(",", ":"))
    dropped = {i for position, width, _ in found for i in range(position, position + width)}
    first = found[0][0]
    out: list[str] = []
    for index, token in enumerate(arguments):
        if index == first:
            out += [FLAG, encoded]
        elif index not in dropped:
            out.append(token)
    return out, None
