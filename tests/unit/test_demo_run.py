"""The demo's orchestration against a real worker with the memory deployer (no vLLM)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from berth.demo import run as demo_run
from berth.demo.run import (
    DemoError,
    DemoOptions,
    run_demo,
    state_file,
    stop_kept_worker,
)
from berth.demo.worker import LocalWorker
from tests.support.processes import exists


class _Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def line(self, text: str) -> None:
        self.lines.append(text)

    def status(self, text: str) -> None:
        self.lines.append(f"~{text}")


@pytest.fixture
def fake_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    model = tmp_path / "model"
    model.mkdir()
    monkeypatch.setattr(demo_run, "prepare_demo_model", lambda _cache, _say: model)
    monkeypatch.setattr(demo_run, "_require_vllm", lambda: None)  # the memory deployer runs nothing
    return model


def test_missing_vllm_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo_run.importlib.util, "find_spec", lambda _name: None)
    with pytest.raises(DemoError, match="make demo"):
        run_demo(DemoOptions(cache_dir=tmp_path), _Lines())


@pytest.mark.subprocess
def test_instance_never_ready_fails_and_leaves_nothing(tmp_path: Path, fake_model: Path) -> None:
    """The memory deployer runs no server, so readiness never comes: the demo must time out,
    save the logs, and stop everything it started."""
    created: list[LocalWorker] = []
    original = LocalWorker.create

    def tracking(port: int | None = None, deployer: str = "process") -> LocalWorker:
        created.append(original(port, "memory"))
        return created[-1]

    reporter = _Lines()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LocalWorker, "create", tracking)
        with pytest.raises(DemoError, match="not ready after 3 s"):
            run_demo(DemoOptions(cache_dir=tmp_path / "cache", timeout=3.0), reporter)
    worker = created[0]
    assert worker.pid is not None and not exists(worker.pid)
    assert not worker.data_dir.exists()
    assert (tmp_path / "cache" / "demo" / "logs" / "worker.log").is_file()
    assert any(line.startswith("deployed PUT") for line in reporter.lines)


def test_stop_without_kept_worker_says_so(tmp_path: Path) -> None:
    assert "nothing to stop" in stop_kept_worker(tmp_path)


@pytest.mark.subprocess
def test_kept_worker_is_stopped_by_stop(tmp_path: Path) -> None:
    worker = LocalWorker.create(deployer="memory")
    worker.start(timeout=60)
    state_file(tmp_path).parent.mkdir(parents=True)
    state_file(tmp_path).write_text(json.dumps(worker.to_state()))
    try:
        with pytest.raises(DemoError, match="berth demo --stop"):
            run_demo(DemoOptions(cache_dir=tmp_path), _Lines())
        assert "stopped the demo worker" in stop_kept_worker(tmp_path)
    finally:
        worker.stop()
    assert worker.pid is not None and not exists(worker.pid)
    assert not state_file(tmp_path).exists()
    assert not worker.data_dir.exists()
