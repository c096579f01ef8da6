"""The worker image: the Dockerfile builds offline on a local base, and berth runs inside it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "build_image_test.sh"


@pytest.mark.docker
def test_dockerfile_builds_offline_and_runs_berth() -> None:
    venv = Path(sys.prefix)
    done = subprocess.run(["bash", str(SCRIPT), str(venv)], capture_output=True, text=True, timeout=900)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "berth 0.1.0" in done.stdout
    assert "vllm serve /models/Qwen/Qwen3-8B" in done.stdout.replace("\n", " ")
    assert "build_image_test: ok in" in done.stderr  # the script's own lines go to stderr
