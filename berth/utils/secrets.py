"""Which values are secrets, and hiding them in text: the one rule for the worker and the client.

A secret is the value of a secret-looking env var (``HF_TOKEN``, ``*_API_KEY``...,
:func:`berth.utils.env.is_secret_name`) or of a secret-looking option (``--api-key``,
``--hf-token``..., :func:`berth.utils.env.is_secret_option`), at least :data:`MIN_SECRET`
characters long. Text shown to people gets :data:`~berth.utils.env.MASK` in their place
(:func:`redact_text`); bytes whose offsets must stay true (logs served by range) get as many
``*`` (:func:`redact_bytes`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from berth.utils.args import iter_parameters
from berth.utils.env import MASK, is_secret_name, is_secret_option

__all__ = ["MIN_SECRET", "redact_bytes", "redact_text", "secret_values"]

#: Shorter values are not treated as secrets to hide (they would mask ordinary text).
MIN_SECRET = 4


def secret_values(spec: Mapping[str, Any] | None = None, *, envs: Iterable[Mapping[str, Any]] = (),
                  args: Iterable[str] | None = None) -> list[str]:
    """The secret values, longest first, of a stored spec (dict form: ``model.env`` and
    ``model.backend_parameters``), of more ``envs`` and of more argv-style ``args``."""
    model = (spec or {}).get("model") or {}
    every_env = [model.get("env") or {}, *envs]
    values = [str(v) for env in every_env for k, v in env.items() if v and is_secret_name(str(k))]
    for parameters in (model.get("backend_parameters"), args):
        values += [value for key, value in iter_parameters(parameters or []) if value and is_secret_option(key)]
    return sorted({v for v in values if len(v) >= MIN_SECRET}, key=len, reverse=True)


def redact_text(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each secret replaced by :data:`~berth.utils.env.MASK` (pass them longest first)."""
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
