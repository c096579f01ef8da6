"""Backend parameters as users write them, turned into argv tokens and queried.

Users paste parameters in every shape: ``["--tp", "2"]``, ``["--tp=2"]``, ``["-tp 2"]``,
``["--max-model-len 65536 --enforce-eager"]``, JSON values with spaces
(``--speculative-config {"method": "ngram"}``), and commands copied from a shell with
backslash-newline continuations. :func:`flatten_to_argv` recovers the token stream; every
query here works on that stream, so all shapes are treated alike.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable, Iterator, Sequence

__all__ = [
    "FALSY_VALUES",
    "extend_args_no_exist",
    "find_bool_parameter",
    "find_int_parameter",
    "find_parameter",
    "flatten_to_argv",
    "format_backend_parameters",
    "has_parameter",
    "is_parameter_key",
    "iter_parameters",
    "served_names",
    "split_command_line",
]

FALSY_VALUES = frozenset({"0", "false", "no", "off", "f", "n"})

_CONTINUATION = re.compile(r"\\\r?\n")
_KEY_SPACED_EQUALS = re.compile(r"(-{1,2}[A-Za-z0-9][\w.-]*)[ \t]*=[ \t]*")
_PLACEHOLDER = "\x1fjson{}\x1f"


def is_parameter_key(token: str) -> bool:
    """True for ``--foo``/``-tp``/``--foo=bar``; false for values such as ``-1``, ``-0.5``, ``--``."""
    if len(token) < 2 or not token.startswith("-") or token == "--":
        return False
    try:
        float(token)
    except ValueError:
        return True
    return False


def _json_end(text: str, start: int) -> int:
    """Index just past the JSON object/array starting at ``text[start]`` (bracket balance)."""
    try:
        _, end = json.JSONDecoder().raw_decode(text, start)
        return end
    except ValueError:
        pass
    depth, in_string, escaped = 0, False, False
    for index in range(start, len(text)):
        char = text[index]
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            in_string = not in_string
        elif not in_string and char in "{[":
            depth += 1
        elif not in_string and char in "}]":
            depth -= 1
            if depth == 0:
                return index + 1
    return len(text)


def _mask_json(text: str) -> tuple[str, dict[str, str]]:
    """Replace JSON values (after ``=`` or whitespace) by placeholders shlex leaves alone."""
    out: list[str] = []
    found: dict[str, str] = {}
    index = 0
    while index < len(text):
        char = text[index]
        if char in "{[" and (index == 0 or text[index - 1] in "= \t\n"):
            end = _json_end(text, index)
            key = _PLACEHOLDER.format(len(found))
            found[key] = text[index:end]
            out.append(key)
            index = end
            continue
        out.append(char)
        index += 1
    return "".join(out), found


def _drop_trailing_backslash(text: str) -> str:
    stripped = text.rstrip()
    run = len(stripped) - len(stripped.rstrip("\\"))
    return stripped[:-1] if run % 2 == 1 else text


def split_command_line(text: str) -> list[str]:
    """Split one pasted command-line fragment into tokens, keeping JSON values whole."""
    text = _drop_trailing_backslash(_CONTINUATION.sub(" ", text))
    masked, found = _mask_json(_join_spaced_equals(text))
    try:
        tokens = shlex.split(masked)
    except ValueError as exc:
        raise ValueError(f"cannot split parameter {text!r}: {exc}") from None
    for key, value in found.items():
        tokens = [token.replace(key, value) for token in tokens]
    return tokens


def _join_spaced_equals(text: str) -> str:
    """``--key = value`` -> ``--key=value`` for every unquoted key, so that the equals sign
    is a separator (as users mean it) and never a value of its own. Quoted text is untouched."""
    out: list[str] = []
    index, quote = 0, ""
    while index < len(text):
        char = text[index]
        if quote:
            out.append(char)
            if char == quote:
                quote = ""
            elif char == "\\" and quote == '"' and index + 1 < len(text):
                index += 1
                out.append(text[index])
            index += 1
            continue
        at_word_start = index == 0 or text[index - 1].isspace()
        match = _KEY_SPACED_EQUALS.match(text, index) if at_word_start and char == "-" else None
        if match:
            out.append(f"{match.group(1)}=")
            index = match.end()
            continue
        if char in "'\"":
            quote = char
        elif char == "\\" and index + 1 < len(text):
            out.append(char)
            index += 1
            char = text[index]
        out.append(char)
        index += 1
    return "".join(out)


def _flatten_entry(entry: str) -> list[str]:
    stripped = entry.strip()
    if not stripped:
        return []
    first_word = stripped.split(None, 1)[0]
    if not is_parameter_key(first_word):
        return [stripped]  # an opaque value token: a path with spaces, a JSON blob, -0.5
    return split_command_line(stripped)


def flatten_to_argv(parameters: Iterable[str] | None) -> list[str]:
    """Reduce a backend-parameter list to the argv tokens it stands for.

    An element whose first word is an option key is re-tokenized with shell semantics (shlex:
    quotes removed, ``--k="a b"`` -> ``--k=a b``, ``--k="ab"`` -> ``--k=ab``), JSON values kept
    whole, ``--key = value`` joined to ``--key=value`` and continuations dropped; any other
    element is one token as is.
    """
    tokens: list[str] = []
    for entry in parameters or []:
        if entry is not None:
            tokens.extend(_flatten_entry(str(entry)))
    return tokens


def iter_parameters(parameters: Iterable[str] | None) -> Iterator[tuple[str, str | None]]:
    """Yield ``(key without dashes, value or None)`` for each option in the token stream.

    A bare ``--key`` takes the next token as its value unless that token is itself a key.
    Multi-value options yield their first value only.
    """
    tokens = flatten_to_argv(parameters)
    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if not is_parameter_key(token):
            continue
        if "=" in token:
            key, _, value = token.partition("=")
            yield key.lstrip("-"), value
        elif index < len(tokens) and not is_parameter_key(tokens[index]):
            yield token.lstrip("-"), tokens[index]
            index += 1
        else:
            yield token.lstrip("-"), None


def find_parameter(parameters: Iterable[str] | None, names: Sequence[str]) -> str | None:
    """Value of the first option named in ``names`` (aliases allowed); None if absent or bare."""
    for key, value in iter_parameters(parameters):
        if key in names and value is not None:
            return value
    return None


def has_parameter(parameters: Iterable[str] | None, names: Sequence[str]) -> bool:
    """True when any option named in ``names`` is present, with or without a value."""
    return any(key in names for key, _ in iter_parameters(parameters))


def find_int_parameter(parameters: Iterable[str] | None, names: Sequence[str]) -> int | None:
    """Integer value of the first option named in ``names``; None if absent or not an integer."""
    value = find_parameter(parameters, names)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def find_bool_parameter(parameters: Iterable[str] | None, names: Sequence[str]) -> bool:
    """Whether the first option named in ``names`` is enabled.

    A bare flag is enabled; ``false``/``0``/``no``/``off`` (any case) disable it; any other
    value counts as enabled (the engine validates it). List ``no-x`` among ``names`` to treat
    the negative form as "the user decided".
    """
    for key, value in iter_parameters(parameters):
        if key in names:
            return value is None or value.strip().lower() not in FALSY_VALUES
    return False


def extend_args_no_exist(arguments: list[str], *items: str | tuple[str, str]) -> None:
    """Append ``(key, value)`` pairs or bare flags to ``arguments`` unless the key is present.

    A key counts as present as ``--key`` or ``--key=...``. Modifies ``arguments`` in place.
    """
    for item in items:
        if isinstance(item, tuple):
            key, value = item
            if not any(arg == key or arg.startswith(f"{key}=") for arg in arguments):
                arguments.extend([key, value])
        elif item not in arguments:
            arguments.append(item)


def served_names(args: Sequence[str]) -> list[str]:
    """The values of ``--served-model-name`` in an argv (its ``=`` form, or every value up to
    the next option); empty when absent."""
    for index, token in enumerate(args):
        if token.startswith("--served-model-name="):
            return [token.partition("=")[2]]
        if token == "--served-model-name":
            names: list[str] = []
            for value in args[index + 1 :]:
                if is_parameter_key(value):
                    break
                names.append(value)
            return names
    return []


def format_backend_parameters(tokens: Sequence[str] | None) -> list[str]:
    """Format argv tokens as backend-parameter entries: ``--key=value`` or a bare ``--flag``.

    Options with several values keep the space form: ``["--lora-modules", "a", "b"]``.
    """
    formatted: list[str] = []
    index = 0
    tokens = list(tokens or [])
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if not is_parameter_key(token) or "=" in token:
            formatted.append(token)
            continue
        values: list[str] = []
        while index < len(tokens) and not is_parameter_key(tokens[index]):
            values.append(tokens[index])
            index += 1
        if len(values) == 1:
            formatted.append(f"{token}={values[0]}")
        else:
            formatted.extend([token, *values])
    return formatted
