"""`berth run / ps / logs / stop` with the process deployer and a fast stand-in for vLLM."""

import subprocess
import sys

import pytest
import yaml

from tests.support.ports import free_port
from tests.support.serve_process import FAKE_VLLM

pytestmark = pytest.mark.subprocess  # starts processes: not in make test-unit


@pytest.fixture
def env(tmp_path):
    import os

    return {**os.environ, "BERTH_DATA_DIR": str(tmp_path / "data")}


def berth(env, *args, timeout=60):
    return subprocess.run([sys.executable, "-m", "berth", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def write_spec(tmp_path, port, name="cli-1", entry=None):
    spec = {
        "model": {"name": "fake", "image_name": "local/none", "env": {"HF_TOKEN": "hf_secret_value"}},
        "instance": {"name": name, "model_name": "fake", "ports": [port]},
        "worker": {"ip": "127.0.0.1"},
        "config": {"entrypoint": entry or [sys.executable, FAKE_VLLM]},
        "model_path": str(tmp_path / "model"),
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_run_ps_logs_stop(tmp_path, env):
    spec = write_spec(tmp_path, free_port())
    result = berth(env, "run", str(spec), "--deployer", "process", "--timeout", "30")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ready" in result.stdout and "/v1" in result.stdout
    try:
        listing = berth(env, "ps", "--deployer", "process")
        assert "cli-1" in listing.stdout
        log = berth(env, "logs", "cli-1", "--deployer", "process")
        assert "fake-vllm: serving on 127.0.0.1" in log.stdout
        tail = berth(env, "logs", "cli-1", "--tail", "1", "--deployer", "process")
        assert tail.stdout.count("\n") == 1
    finally:
        stopped = berth(env, "stop", "cli-1", "--deployer", "process", "--timeout", "5")
    assert stopped.returncode == 0, stopped.stderr
    assert "cli-1" not in berth(env, "ps", "--deployer", "process").stdout
    gone = berth(env, "stop", "cli-1", "--deployer", "process")
    assert gone.returncode == 1 and "no workload named" in gone.stderr


def test_run_reports_a_crash_with_its_log(tmp_path, env):
    spec = write_spec(tmp_path, free_port(), name="cli-crash", entry=[sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"])
    result = berth(env, "run", str(spec), "--deployer", "process", "--timeout", "30")
    try:
        assert result.returncode == 1
        assert "boom" in result.stderr and "Traceback" not in result.stderr
    finally:
        berth(env, "stop", "cli-crash", "--deployer", "process")
