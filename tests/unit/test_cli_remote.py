"""`berth --worker URL run / ps / logs / stop` against a real `berth serve` (process deployer,
fast vLLM stand-in)."""

import json
import os
import subprocess
import sys

import httpx
import pytest

from tests.support.ports import free_port
from tests.support.serve_process import FAKE_VLLM, spawn_serve, stop_group, wait_healthy
from tests.unit.test_cli_local import write_spec

pytestmark = pytest.mark.subprocess  # starts processes: not in make test-unit


def berth(env, *args, timeout=90):
    return subprocess.run([sys.executable, "-m", "berth", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def worker(tmp_path):
    port = free_port()
    env = {**os.environ, "BERTH_DATA_DIR": str(tmp_path / "cli-data")}
    # the worker decides what runs: a spec may only repeat its entrypoint (see spec_overrides)
    serve_env = {**env, "BERTH_ENTRYPOINT": json.dumps([sys.executable, FAKE_VLLM])}
    log = tmp_path / "serve.log"
    proc = spawn_serve(["--port", str(port), "--data-dir", str(tmp_path / "worker"), "--deployer", "process"],
                       serve_env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, trust_env=False, timeout=1) as http:
            wait_healthy(proc, http, log, timeout=60, poll=0.3)
        yield url, {**env, "BERTH_WORKER": url}
    finally:
        stop_group(proc, timeout=30)


def test_remote_run_ps_logs_stop(tmp_path, worker):
    url, env = worker
    spec = write_spec(tmp_path, free_port(), name="remote-1")
    result = berth(env, "run", str(spec), "--timeout", "60")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ready" in result.stdout
    listing = berth(env, "ps", "--json")
    assert listing.returncode == 0, listing.stderr
    [view] = [v for v in json.loads(listing.stdout) if v["instance_id"] == "remote-1"]
    assert view["ready"] is True
    table = berth(env, "ps")
    assert "remote-1" in table.stdout
    log = berth(env, "logs", "remote-1")
    assert "fake-vllm: serving on" in log.stdout
    assert berth(env, "logs", "remote-1", "--tail", "1").stdout.count("\n") == 1
    assert berth(env, "stop", "remote-1").returncode == 0
    missing = berth(env, "stop", "remote-1")
    assert missing.returncode == 1 and "404" in missing.stderr and "Traceback" not in missing.stderr


def test_no_worker_is_one_clear_line(tmp_path):
    env = {**os.environ, "BERTH_WORKER": f"http://127.0.0.1:{free_port()}"}
    result = berth(env, "ps")
    assert result.returncode == 1
    assert "no berth worker answering" in result.stderr and "Traceback" not in result.stderr
