"""docs/configuration.md carries the settings table generated from the settings model."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "configuration.md"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("settings_table", ROOT / "scripts" / "settings_table.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_doc_is_current() -> None:
    assert _script().main(["--check", str(DOC)]) == 0, "run: python scripts/settings_table.py --write docs/configuration.md"


def test_every_setting_is_documented() -> None:
    from berth.worker.settings import ENV_PREFIX, Settings

    text = DOC.read_text(encoding="utf-8")
    for name in Settings.model_fields:
        assert f"`{ENV_PREFIX}{name.upper()}`" in text


def test_write_replaces_only_the_marked_region(tmp_path: Path) -> None:
    script = _script()
    doc = tmp_path / "doc.md"
    doc.write_text(f"intro\n{script.BEGIN}\nstale\n{script.END}\noutro\n")
    assert script.main(["--check", str(doc)]) == 1
    assert script.main(["--write", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("intro\n") and text.endswith(f"{script.END}\noutro\n")
    assert "stale" not in text and "| `port` |" in text


def test_missing_markers_name_the_fix(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("no markers\n")
    with pytest.raises(SystemExit, match="settings-table:begin"):
        _script().main(["--check", str(doc)])
