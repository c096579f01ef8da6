"""`berth --worker URL run / ps / logs / stop` against a real `berth serve` (process deployer,
fast vLLM stand-in)."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.unit.test_cli_local import FAKE, free_port, write_spec

pytestmark = pytest.mark.subprocess  # starts processes: not in make test-unit


def berth(env, *args, timeout=90):
    return subprocess.run([sys.executable, "-m", "berth", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def worker(tmp_path):
    port = free_port()
    env = {**os.environ, "BERTH_DATA_DIR": str(tmp_path / "cli-data")}
    # the worker decides what runs: a spec may only repeat its entrypoint (see spec_overrides)
    serve_env = {**env, "BERTH_ENTRYPOINT": json.dumps([sys.executable, FAKE])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "berth", "serve", "--port", str(port), "--data-dir", str(tmp_path / "worker"),
         "--deployer", "process"],
        env=serve_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=1).read()
            break
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(proc.stdout.read().decode())
            time.sleep(0.3)
    yield url, {**env, "BERTH_WORKER": url}
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


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
