"""``{{name}}`` placeholders in backend parameters, env values and run commands.

A name is letters, digits, ``_`` and ``.``, with no spaces inside the braces (``{{ port }}`` is
text, not a placeholder). An unknown name is left as written and reported, never blanked: a
value that failed to render must look different from one that rendered to something.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

__all__ = ["deployment_variables", "render"]

_PLACEHOLDER = re.compile(r"\{\{([A-Za-z_][A-Za-z0-9_.]*)\}\}")


def render(text: str, variables: Mapping[str, object]) -> tuple[str, list[str]]:
    """(``text`` with known placeholders filled, the unknown names in order of appearance).

    A known name whose value is None renders as the empty string.
    """
    missing: list[str] = []

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in variables:
            if name not in missing:
                missing.append(name)
            return match.group(0)
        value = variables[name]
        return "" if value is None else str(value)

    return _PLACEHOLDER.sub(fill, text), missing


def deployment_variables(
    *,
    model_path: str | None,
    port: int | None,
    worker_ip: str | None,
    model_name: str | None,
    gpu_count: int | None,
    gpu_ids: Iterable[int] | None,
    role: str | None = None,
    group_id: str | None = None,
) -> dict[str, object]:
    """The six names every instance resolves (an unknown value renders empty), plus ``role``
    and ``group_id`` when the instance has them (else they stay unresolved, and reported)."""
    ids = list(gpu_ids or [])
    variables: dict[str, object] = {
        "model_path": model_path or "",
        "port": port,
        "worker_ip": worker_ip or "",
        "model_name": model_name or "",
        "gpu_count": "" if gpu_count is None else gpu_count,
        "gpu_ids": ",".join(str(i) for i in ids),
    }
    if role is not None:
        variables["role"] = role
    if group_id is not None:
        variables["group_id"] = group_id
    return variables
