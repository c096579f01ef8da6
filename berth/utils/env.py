"""Environment variables: recognising secrets and masking them for display."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

__all__ = ["MASK", "is_secret_name", "mask_env", "mask_secrets_in_args", "valid_env_name"]

MASK = "******"

_SECRET_WORDS = re.compile(
    r"(TOKEN|SECRET|PASSWORD|PASSWD|PASSPHRASE|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL|AUTH|SESSION|COOKIE|_KEY$|^KEY$)",
    re.IGNORECASE,
)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_OPTIONS = ("api-key", "token", "password", "secret", "hf-token")


def is_secret_name(name: str) -> bool:
    """True when an env var name looks like it holds a credential (``HF_TOKEN``, ``AWS_SECRET_ACCESS_KEY``...)."""
    return bool(_SECRET_WORDS.search(name))


def valid_env_name(name: str) -> bool:
    """POSIX-portable variable name: letters, digits and ``_``, not starting with a digit."""
    return bool(_ENV_NAME.match(name))


def mask_env(env: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``env`` whose secret-looking values are replaced by :data:`MASK`."""
    return {k: (MASK if is_secret_name(k) and v else v) for k, v in env.items()}


def mask_secrets_in_args(args: Iterable[str]) -> list[str]:
    """A copy of argv tokens with the values of secret-looking options masked.

    ``--api-key X`` and ``--api-key=X`` both become ``--api-key ******``-style.
    """
    out: list[str] = []
    hide_next = False
    for token in args:
        if hide_next and not token.startswith("-"):
            out.append(MASK)
            hide_next = False
            continue
        hide_next = False
        key, eq, _ = token.partition("=")
        if key.startswith("-") and any(word in key.lower() for word in _SECRET_OPTIONS):
            if eq:
                out.append(f"{key}={MASK}")
                continue
            hide_next = True
        out.append(token)
    return out
