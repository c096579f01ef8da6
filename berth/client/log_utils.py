"""Logging for client programs, named as gserve names it: :func:`setup_logging` and the
``GSERVE_LOG_LEVEL`` variable, which carries the level to the servers the client starts.

A gserve user's ``export GSERVE_LOG_LEVEL=DEBUG`` or ``setup_logging(logging.DEBUG)`` keeps
working: the root logger gets that level, and every server started afterwards logs at it
(``VLLM_LOGGING_LEVEL`` follows it unless ``ServeConfig.log_level`` says otherwise).
"""

from __future__ import annotations

import logging
import os

__all__ = ["LOG_LEVEL_ENV", "env_log_level", "setup_logging"]

#: The variable that carries the log level to server subprocesses (gserve's name).
LOG_LEVEL_ENV = "GSERVE_LOG_LEVEL"
LOG_FORMAT = "%(levelname)s %(asctime)s [%(name)s] %(message)s"
LOG_DATEFMT = "%m-%d %H:%M:%S"
_DEFAULT = logging.INFO


def env_log_level() -> int | None:
    """The level ``GSERVE_LOG_LEVEL`` names (``DEBUG`` or ``10``), or None when unset/invalid."""
    text = os.environ.get(LOG_LEVEL_ENV, "").strip()
    if not text:
        return None
    if text.isdigit():
        return int(text)
    level = logging.getLevelName(text.upper())
    return level if isinstance(level, int) else None


def setup_logging(level: int | str | None = None) -> None:
    """Configure the root logger and record its level in ``GSERVE_LOG_LEVEL``.

    ``level`` is a ``logging`` level (``logging.DEBUG``, ``"DEBUG"``); without one the variable
    decides, else INFO (an invalid value is warned about and read as INFO). Existing root
    handlers get the level and format; with none, one stderr handler is added.
    """
    resolved = _resolve(level)
    root = logging.getLogger()
    root.setLevel(resolved)
    formatter = logging.Formatter(LOG_FORMAT, datefmt=LOG_DATEFMT)
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    for handler in root.handlers:
        handler.setFormatter(formatter)
        handler.setLevel(resolved)
    os.environ[LOG_LEVEL_ENV] = logging.getLevelName(resolved)


def _resolve(level: int | str | None) -> int:
    if isinstance(level, int):
        return level
    if isinstance(level, str):
        named = logging.getLevelName(level.strip().upper())
        if not isinstance(named, int):
            raise ValueError(f"log level {level!r} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return named
    from_env = env_log_level()
    if from_env is None and os.environ.get(LOG_LEVEL_ENV, "").strip():
        logging.getLogger(__name__).warning(
            "%s=%r is not a log level; using INFO", LOG_LEVEL_ENV, os.environ[LOG_LEVEL_ENV])
    return _DEFAULT if from_env is None else from_env
