"""The demo model's cache rules, without converting anything (the conversion is in tests/engine)."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

from berth.demo import model as demo_model
from berth.demo.model import (
    DEMO_MODEL_NAME,
    DemoModelError,
    default_cache_dir,
    demo_model_dir,
    find_gguf,
    is_prepared,
    prepare_demo_model,
)


def _fake_checkpoint(path: Path) -> Path:
    path.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (path / name).write_text("{}")
    return path


def test_cache_dir_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BERTH_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("BERTH_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x" / "berth"


def test_prepared_model_is_reused_without_converting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = _fake_checkpoint(demo_model_dir(tmp_path))
    monkeypatch.setattr(demo_model, "convert_gguf", _must_not_run)
    lines: list[str] = []
    assert prepare_demo_model(tmp_path, lines.append) == dest
    assert dest.name == DEMO_MODEL_NAME
    assert any("ready" in line for line in lines)


def _must_not_run(*_args: object) -> None:
    raise AssertionError("converted although the cache held the model")


def test_partial_directory_is_not_prepared(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert not is_prepared(tmp_path)


def test_conversion_is_published_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo_model, "find_gguf", lambda: tmp_path / "m.gguf")
    monkeypatch.setattr(demo_model, "convert_gguf", lambda _gguf, out, _say: _fake_checkpoint(out))
    dest = prepare_demo_model(tmp_path / "cache")
    assert is_prepared(dest)
    assert [p.name for p in dest.parent.iterdir()] == [DEMO_MODEL_NAME]  # no scratch left


def test_interrupted_conversion_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(_gguf: Path, out: Path, _say: object) -> None:
        _fake_checkpoint(out)
        raise KeyboardInterrupt

    monkeypatch.setattr(demo_model, "find_gguf", lambda: tmp_path / "m.gguf")
    monkeypatch.setattr(demo_model, "convert_gguf", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_demo_model(tmp_path / "cache")
    assert list((tmp_path / "cache" / "models").iterdir()) == []


def test_losing_a_race_keeps_the_winner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = demo_model_dir(tmp_path)

    def racing(_gguf: Path, out: Path, _say: object) -> None:
        _fake_checkpoint(dest)  # another process publishes first
        _fake_checkpoint(out)

    monkeypatch.setattr(demo_model, "find_gguf", lambda: tmp_path / "m.gguf")
    monkeypatch.setattr(demo_model, "convert_gguf", racing)
    assert prepare_demo_model(tmp_path) == dest
    assert is_prepared(dest)


def test_missing_package_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    def absent(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(demo_model.importlib.metadata, "distribution", absent)
    with pytest.raises(DemoModelError, match="setup_demo.sh"):
        find_gguf()
