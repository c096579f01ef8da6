"""Turning pydantic validation errors into short messages that name the field."""

from __future__ import annotations

from pydantic import ValidationError

__all__ = ["field_path", "validation_messages"]


def field_path(loc: tuple[int | str, ...]) -> str:
    """``("model", "env", 0)`` -> ``model.env[0]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
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
