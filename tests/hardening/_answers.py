"""What every answer of the worker must look like, whatever it was sent: no 5xx, no traceback,
and every refusal a JSON body whose ``detail`` names what is wrong."""

from __future__ import annotations

import json
import re

__all__ = ["FIELD_DETAIL", "assert_clean_answer", "problem"]

#: A refusal's detail names what it is about: a field path followed by ':' or a space
#: (``options: ...``, ``model.backend 'x' is not supported``), a body field, the header or limit
#: it hit, or the instance.
FIELD_DETAIL = re.compile(
    r"^(?:'[^']*'|\"[^\"]*\"|\S)+?: "  # a field path, odd keys quoted: model.env['A B']: ...
    r"|^[a-z_][\w.\[\]-]* "  # model.backend 'x' is not supported
    r"|instance '[^']*'|\bRange\b|Content-Length|bearer token|max_body_bytes"
    r"|^Not Found$|^Method Not Allowed$"
)
_TRACEBACK = re.compile(rb"Traceback \(most recent call last\)|File \"[^\"]+\", line \d+")


def problem(status: int, content_type: str, body: bytes, *, unavailable_ok: bool = False) -> str | None:
    """Why an answer breaks the rules, or None when it is clean (with ``unavailable_ok``, a 503
    saying what is unavailable is clean too: the answer to a fault the client cannot fix)."""
    if status >= 500 and not (unavailable_ok and status == 503):
        return f"server error {status}: {body[:300]!r}"
    if _TRACEBACK.search(body):
        return f"traceback in a {status} answer: {body[:300]!r}"
    if status < 400 or status == 416:  # 416 is the seed's empty body with Content-Range
        return None
    if not content_type.startswith("application/json"):
        return f"{status} answer is {content_type!r}, not JSON: {body[:200]!r}"
    try:
        detail = json.loads(body).get("detail")
    except (ValueError, AttributeError):
        return f"{status} answer is not a JSON object: {body[:200]!r}"
    if not isinstance(detail, str) or not detail.strip():
        return f"{status} answer has no detail message: {body[:200]!r}"
    if not FIELD_DETAIL.search(detail):
        return f"{status} detail names no field: {detail[:200]!r}"
    return None


def assert_clean_answer(status: int, content_type: str, body: bytes, *, unavailable_ok: bool = False) -> None:
    found = problem(status, content_type, body, unavailable_ok=unavailable_ok)
    assert found is None, found
