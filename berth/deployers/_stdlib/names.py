"""The one rule for the names of workloads and of the containers in them.

A name becomes a label value (container engines label every container with its workload's
name), a file name (the process and launcher deployers keep a file per workload) and part of
an instance id, so it must suit all three: 1 to 63 letters, digits, ``.``, ``_`` or ``-``,
starting and ending with a letter or digit.
"""

from __future__ import annotations

import re


#: A Kubernetes label value's limit, which Docker and Podman labels then share.
MAX_NAME_LENGTH = 63
NAME_PATTERN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")


def name_problem(kind: str, name: object) -> str | None:
    """Why ``name`` cannot name a ``kind`` (``"workload"``, ``"container"``), or ``None``."""
    if not isinstance(name, str) or not name:
        return f"the {kind} has no name; give it one"
    if len(name) > MAX_NAME_LENGTH:
        return (f"{kind} name {name!r} is {len(name)} characters; at most {MAX_NAME_LENGTH} are "
                f"allowed (it becomes a label value): shorten it")
    if not NAME_PATTERN.match(name):
        return (f"{kind} name {name!r} is not allowed (not a valid label value); use letters, "
                f"digits, '.', '_' and '-', starting and ending with a letter or digit")
    return None


def check_name(kind: str, name: object) -> str:
    """``name`` when it may name a ``kind``, else ``ValueError`` saying what is allowed."""
    problem = name_problem(kind, name)
    if problem is not None:
        raise ValueError(problem)
    return name  # type: ignore[return-value]
