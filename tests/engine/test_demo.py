"""`berth demo` end to end: real model, real worker, real vLLM; exit codes and no process left."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.engines import unavailable

ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = re.compile(r"\(data (/\S+berth-demo-\w+),")


@pytest.fixture(scope="module")
def cache_dir() -> Path:
    """The demo model's cache: shared with the tiny test model's ($BERTH_TEST_CACHE or .cache)."""
    if importlib.util.find_spec("gguf") is None or importlib.util.find_spec("accelerate") is None:
        unavailable("vllm", f"the demo model's converters are missing from {sys.executable} (run make demo-deps)")
    configured = os.environ.get("BERTH_TEST_CACHE")
    return Path(configured) if configured else ROOT / ".cache"


def _demo(cache_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "berth", "demo", "--cache-dir", str(cache_dir), *args]


def _env() -> dict[str, str]:
    return {**os.environ, "COLUMNS": "200"}


def _processes_naming(marker: str) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
            environ = Path(f"/proc/{name}/environ").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline or marker.encode() in environ:
            found.append(int(name))
    return found


def _data_dir(output: str) -> str:
    match = DATA_DIR.search(output)
    assert match, f"the demo did not print its worker's data dir:\n{output[-3000:]}"
    return match.group(1)


@pytest.mark.vllm
def test_demo_answers_and_leaves_nothing(cache_dir: Path) -> None:
    done = subprocess.run(_demo(cache_dir), capture_output=True, text=True, timeout=1500, env=_env())
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-5000:]
    assert "Paris" in done.stdout, output[-3000:]
    assert "generate  4 prompts in one call" in done.stdout
    assert "ready" in done.stdout and "no process is left" in done.stdout
    data_dir = _data_dir(output)
    assert _processes_naming(data_dir) == []
    assert not Path(data_dir).exists()
    assert (cache_dir / "demo" / "logs" / "instance.log").stat().st_size > 0


def _as_in_a_terminal() -> None:
    """In the child before exec: SIGINT back to its default action, as a terminal's foreground job has.

    A command started in the background by a non-interactive shell (``make test &``, a CI step run
    that way) inherits SIGINT *ignored*, and Python then installs no KeyboardInterrupt handler: the
    demo would never see the Ctrl-C this test sends, as happened in issue 12 (the demo went on to
    answer and exited 0). The Ctrl-C the test means is a terminal's, so the demo starts as from one.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.vllm
@pytest.mark.parametrize("deployer", ["process", "launcher"])
def test_ctrl_c_while_waiting_stops_everything(cache_dir: Path, deployer: str) -> None:
    proc = subprocess.Popen(_demo(cache_dir, "--deployer", deployer), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_env(), start_new_session=True, preexec_fn=_as_in_a_terminal)
    assert proc.stdout is not None
    seen = []
    try:
        for line in proc.stdout:  # wait until the instance is being started
            seen.append(line)
            if line.startswith("deployed PUT"):
                break
        time.sleep(3.0)
        os.kill(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = "".join(seen) + rest
    assert proc.returncode == 130, output[-3000:]
    assert "interrupted" in output
    data_dir = _data_dir(output)
    assert _processes_naming(data_dir) == []
    assert not Path(data_dir).exists()
