"""Every package lists its public names in ``__all__``, and each of them exists."""

import importlib

import pytest

PACKAGES = ["berth.utils", "berth.schemas", "berth.backends", "berth.deployers", "berth.cli"]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_names_exist(name):
    module = importlib.import_module(name)
    assert module.__all__, f"{name} must list its public names"
    missing = [attr for attr in module.__all__ if not hasattr(module, attr)]
    assert missing == []
    assert len(set(module.__all__)) == len(module.__all__)
