"""Which environment variables a request may set for an instance, and how values are read.

Variables that make a process load foreign code (``LD_PRELOAD``, ``LD_LIBRARY_PATH``,
``PYTHONPATH``, ``PYTHONSTARTUP``, ``BASH_ENV``...) are refused unless the worker's
``allowed_env`` setting names them. Names must be portable variable names; values are strings
(numbers and booleans are converted) without NUL bytes.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from berth.utils.env import valid_env_name
from berth.worker.errors import InvalidRequest

DENIED_NAMES = frozenset({
    "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONINSPECT", "PYTHONUSERBASE", "PYTHONEXECUTABLE",
    "PYTHONBREAKPOINT", "PYTHONWARNINGS", "BASH_ENV", "ENV", "PATH", "IFS", "PS4", "SHELLOPTS",
    "BASHOPTS", "PERL5OPT", "PERL5LIB", "RUBYOPT", "NODE_OPTIONS", "GCONV_PATH", "HOSTALIASES",
    "LOCPATH", "NLSPATH", "MALLOC_CHECK_", "OPENSSL_CONF", "GIT_SSH_COMMAND",
})
DENIED_PREFIXES = ("LD_", "DYLD_")
MAX_ENV_VARS = 256
MAX_ENV_VALUE = 32768


def is_denied(name: str) -> bool:
    """True for variables that can inject code into the engine's processes."""
    upper = name.upper()
    return upper in DENIED_NAMES or upper.startswith(DENIED_PREFIXES)


def _value(name: str, value: object, field: str) -> str:
    if isinstance(value, bool):
        text = "1" if value else "0"
    elif isinstance(value, (str, int, float)):
        text = str(value)
    else:
        raise InvalidRequest(f"{field}.{name}: must be a string, number or boolean")
    if "\x00" in text:
        raise InvalidRequest(f"{field}.{name}: must not contain NUL bytes")
    if len(text) > MAX_ENV_VALUE:
        raise InvalidRequest(f"{field}.{name}: longer than {MAX_ENV_VALUE} characters")
    return text


def check_env(env: Mapping[str, object] | None, *, allowed: Collection[str], field: str) -> dict[str, str]:
    """The accepted env as strings; :class:`InvalidRequest` naming the first bad variable."""
    if not env:
        return {}
    if len(env) > MAX_ENV_VARS:
        raise InvalidRequest(f"{field}: at most {MAX_ENV_VARS} variables")
    accepted: dict[str, str] = {}
    for name, value in env.items():
        if not valid_env_name(name):
            raise InvalidRequest(f"{field}: {name!r} is not a valid variable name (letters, digits, '_')")
        if is_denied(name) and name not in allowed:
            raise InvalidRequest(
                f"{field}.{name}: refused, it can inject code into the engine; "
                f"allow it on this worker with BERTH_ALLOWED_ENV={name}"
            )
        accepted[name] = _value(name, value, field)
    return accepted
