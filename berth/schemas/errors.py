"""Turning pydantic validation errors into short messages that name the field."""

from __future__ import annotations

import re

from pydantic import ValidationError

__all__ = ["field_path", "validation_messages"]


_PLAIN_KEY = re.compile(r"^[\w-]{1,80}$")


def _key(part: str) -> str:
    """A key as is when it is a plain name, else quoted and escaped (control characters, dots, very long)."""
    return part if _PLAIN_KEY.match(part) else repr(part[:80] + ("..." if len(part) > 80 else ""))


def field_path(loc: tuple[int | str, ...]) -> str:
    """``("model", "env", 0)`` -> ``model.env[0]``; odd keys quoted: ``model.env['A B']``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{_key(str(part))}" if out else _key(str(part))
    return out or "(root)"


def validation_messages(exc: ValidationError) -> list[str]:
    """One line per problem: ``field: what is wrong``."""
    lines = []
    for error in exc.errors():
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown field (check the spelling; see the documented fields)"
        elif error["type"] == "missing":
            message = "required field is missing"
        message = message.removeprefix("Value error, ")
        lines.append(f"{field_path(tuple(error['loc']))}: {message}")
    return lines
