"""Environment variables: recognising secrets and masking them for display."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

__all__ = ["MASK", "is_secret_name", "is_secret_option", "mask_env", "mask_secrets_in_args", "valid_env_name"]

MASK = "******"

#: Words of an env var name (split on ``_``) that mark a credential. Whole words only, so
#: ``VLLM_MAX_TOKENS`` or ``KEYBOARD`` are not secrets; a name ending in ``KEY`` is.
_SECRET_WORDS = frozenset({
    "TOKEN", "SECRET", "PASSWORD", "PASSWD", "PASSPHRASE", "APIKEY", "CREDENTIAL", "CREDENTIALS",
    "AUTH", "SESSION", "COOKIE",
})
#: Option names (without dashes) that carry a credential: the last word decides, so
#: ``--api-key`` and ``--hf-token`` are secret, ``--max-num-batched-tokens`` and
#: ``--enable-prompt-tokens-details`` are not.
_SECRET_OPTION = re.compile(
    r"(^|[-_])(api[-_]?key|access[-_]?key|secret[-_]?key|private[-_]?key|token|password|passwd|secret)$",
    re.IGNORECASE,
)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def is_secret_name(name: str) -> bool:
    """True when an env var name looks like it holds a credential (``HF_TOKEN``, ``AWS_SECRET_ACCESS_KEY``...)."""
    words = name.upper().split("_")
    if _SECRET_WORDS.intersection(words) or words[-1] == "KEY":
        return True
    return "KEY" in words and bool({"ACCESS", "PRIVATE", "API", "SIGNING"}.intersection(words))


def is_secret_option(key: str) -> bool:
    """True for option names that carry a credential (``--api-key``, ``hf-token``, ``--password``)."""
    return bool(_SECRET_OPTION.search(key.lstrip("-")))


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
        if key.startswith("-") and is_secret_option(key):
            if eq:
                out.append(f"{key}={MASK}")
                continue
            hide_next = True
        out.append(token)
    return out
