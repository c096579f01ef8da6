"""Run a deployer's by-path program: ``python -I -P run.py MODULE [ARGS...]``.

Registers the packages above ``MODULE`` (``berth``, ``berth.deployers``, ...) as bare packages
whose ``__init__`` does not run, then runs ``MODULE`` as ``__main__`` with ``ARGS`` as its
arguments. The program and the siblings it imports use their usual absolute names, and nothing
of berth's upper layers or gpustack-runtime is imported on the way (see :mod:`._stdlib`).
"""

from __future__ import annotations

import os
import runpy
import sys
import types

#: The directory holding the ``berth`` package.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def register_parents(module: str) -> None:
    """Make ``module``'s parent packages importable without running their ``__init__``."""
    parts = module.split(".")[:-1]
    for depth in range(1, len(parts) + 1):
        name = ".".join(parts[:depth])
        if name in sys.modules:
            continue
        package = types.ModuleType(name)
        package.__path__ = [os.path.join(ROOT, *parts[:depth])]
        package.__package__ = name
        sys.modules[name] = package


def argv_for(python: str, module: str, *args: str, flags: tuple[str, ...] = ("-I",)) -> list[str]:
    """The command line that runs ``module`` with ``python`` and its ``flags`` (``-I`` by
    default: no ``PYTHON*`` variables, no user site); ``-P`` always, so that this file's
    directory never shadows a module of the standard library."""
    return [python, *flags, "-P", os.path.abspath(__file__), module, *args]


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit("usage: run.py MODULE [ARGS...]")
    register_parents(argv[0])
    sys.argv = [argv[0], *argv[1:]]
    runpy.run_module(argv[0], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
