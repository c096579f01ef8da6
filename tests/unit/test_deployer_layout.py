"""The deployers' layout: one folder per implementation, one registry line, nothing reaching in.

* no module of berth outside ``berth/deployers/<name>/`` names a private module of ``<name>``;
* every registry line names a :class:`Deployer` exported by its sub-package (or ``memory.py``);
* the lists of deployer names elsewhere (the worker's settings, the CLI's ``--deployer``, the
  client's ``deployer``) are the registry's.
"""

from __future__ import annotations

import importlib
import re
import typing
from pathlib import Path

import pytest

import berth
from berth.deployers import AUTO, REGISTRY, Deployer, LocalDeployer, deployer_names

BERTH = Path(berth.__file__).parent
IMPLEMENTATIONS = sorted(p.name for p in (BERTH / "deployers").iterdir()
                         if p.is_dir() and (p / "__init__.py").exists() and not p.name.startswith("_"))


def test_the_three_implementations_are_folders() -> None:
    assert IMPLEMENTATIONS == ["container", "launcher", "process"]


@pytest.mark.parametrize("name", IMPLEMENTATIONS)
def test_no_module_outside_a_deployer_names_its_private_modules(name: str) -> None:
    private = re.compile(rf"berth\.deployers\.{name}\._\w+|from berth\.deployers\.{name} import _\w+")
    inside = BERTH / "deployers" / name
    offenders = [str(path.relative_to(BERTH)) for path in BERTH.rglob("*.py")
                 if not path.is_relative_to(inside) and private.search(path.read_text(encoding="utf-8"))]
    assert offenders == []


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_registry_line_is_a_deployer(name: str) -> None:
    module_name, _, class_name = REGISTRY[name].target.partition(":")
    module = importlib.import_module(module_name)
    cls = getattr(module, class_name)
    assert issubclass(cls, Deployer) and cls.name == name and class_name in module.__all__
    assert issubclass(cls, LocalDeployer) == REGISTRY[name].local


def test_names_elsewhere_come_from_the_registry() -> None:
    from berth.cli._local import DeployerKind
    from berth.client.config import DeployerChoice as ClientChoice
    from berth.worker.settings import DeployerChoice as WorkerChoice

    assert typing.get_args(WorkerChoice) == (AUTO, *REGISTRY)
    assert typing.get_args(ClientChoice) == (AUTO, *deployer_names(local=True))
    assert [kind.value for kind in DeployerKind] == [AUTO, *deployer_names(durable=True)]
