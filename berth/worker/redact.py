"""Keeping an instance's secrets out of what the worker shows: views, reasons, events, logs.

An instance's secrets are the values of its secret-looking env vars (``HF_TOKEN``,
``*_API_KEY``...) and of secret-looking options (``--api-key``...). They are kept in the
registry's spec (a restart needs them) and replaced everywhere else: by :data:`MASK` in
structured answers, and byte for byte by ``*`` in logs, so log offsets and sizes stay true.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from berth.utils.args import iter_parameters
from berth.utils.env import MASK, is_secret_name, is_secret_option, mask_env, mask_secrets_in_args

__all__ = ["MIN_SECRET", "masked_plan", "masked_spec", "redact_bytes", "redact_text", "secret_values"]

#: Shorter values are not treated as secrets to hide (they would mask ordinary text).
MIN_SECRET = 4


def _secret_options(parameters: Iterable[str]) -> list[str]:
    found = []
    for key, value in iter_parameters(parameters):
        if value and is_secret_option(key):
            found.append(value)
    return found


def secret_values(spec: Mapping[str, Any]) -> list[str]:
    """Secret values of a stored spec (dict form), longest first."""
    model = spec.get("model") or {}
    env = model.get("env") or {}
    values = [str(v) for k, v in env.items() if is_secret_name(str(k)) and v]
    values += _secret_options(model.get("backend_parameters") or [])
    return sorted({v for v in values if len(v) >= MIN_SECRET}, key=len, reverse=True)


def redact_text(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_bytes(data: bytes, secrets: Iterable[str]) -> bytes:
    """``data`` with each secret overwritten by as many ``*`` (same length, same offsets)."""
    for secret in secrets:
        raw = secret.encode()
        if raw in data:
            data = data.replace(raw, b"*" * len(raw))
    return data


def masked_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A stored spec for display: secret env values and option values masked."""
    shown = copy.deepcopy(dict(spec))
    model = shown.get("model") or {}
    if model.get("env"):
        model["env"] = mask_env(model["env"])
    if model.get("backend_parameters"):
        model["backend_parameters"] = mask_secrets_in_args(model["backend_parameters"])
    return shown


def _mask_container(container: dict[str, Any]) -> None:
    for item in container.get("envs") or []:
        if is_secret_name(str(item.get("name", ""))) and item.get("value"):
            item["value"] = MASK
    execution = container.get("execution") or {}
    if execution.get("args"):
        execution["args"] = mask_secrets_in_args(execution["args"])


def masked_plan(plan: Mapping[str, Any]) -> dict[str, Any]:
    """A plan's JSON form (``ServePlan.to_dict()``) for display, secrets masked everywhere."""
    shown = copy.deepcopy(dict(plan))
    shown["env"] = mask_env(shown.get("env") or {})
    shown["args"] = mask_secrets_in_args(shown.get("args") or [])
    shown["injected"] = mask_secrets_in_args(shown.get("injected") or [])
    for container in (shown.get("workload") or {}).get("containers") or []:
        _mask_container(container)
    return shown
