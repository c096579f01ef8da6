"""Keeping an instance's secrets out of what the worker shows: views, reasons, events, logs.

An instance's secrets are the values of its secret-looking env vars (``HF_TOKEN``,
``*_API_KEY``...) and of secret-looking options (``--api-key``...). They are kept in the
registry's spec (a restart needs them) and replaced everywhere else: by :data:`MASK` in
structured answers, and byte for byte by ``*`` in logs, so log offsets and sizes stay true.
Which values are secrets, and hiding them in text, is :mod:`berth.utils.secrets` (the client
follows the same rule); the spec- and plan-shaped views are here.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from berth.utils.env import MASK, is_secret_name, mask_env, mask_secrets_in_args
from berth.utils.secrets import MIN_SECRET, redact_bytes, redact_text, secret_values

__all__ = ["MIN_SECRET", "masked_plan", "masked_spec", "redact_bytes", "redact_text", "secret_values"]


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
