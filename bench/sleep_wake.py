"""vLLM's sleep mode, measured: how long ``POST /sleep?level=1`` and ``POST /wake_up`` take, the
first answer after a wake, and the accelerator memory a sleeping engine gives back.

    .venv/bin/python bench/sleep_wake.py --rounds 5 [--model PATH] [--json]

Sleep mode needs CUDA, ROCm or XPU (vLLM refuses it on CPU). Without a GPU this script says so
and exits 0 without a figure: nothing is simulated. With one it starts ``vllm serve MODEL
--enable-sleep-mode`` with ``VLLM_SERVER_DEV_MODE=1`` on a free loopback port, waits for it,
then for each round: sleeps it (level 1: weights to host memory, KV cache dropped), reads the
GPU memory in use, wakes it and times one chat request. Prints medians; the server is stopped at
the end. Uses the tiny local model (no hub) unless ``--model`` names another.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from berth.testing import free_port, serve_argv, tiny_model_path, wait_http_ok
from berth.testing.serve_process import stop_group

NO_GPU = "no GPU on this machine: vLLM's sleep mode needs CUDA, ROCm or XPU, so sleep and wake are unmeasured here"


def gpu_missing() -> str | None:
    """Why sleep mode cannot be measured here, or None when an accelerator is visible."""
    try:
        import torch  # noqa: PLC0415 - heavy; only when asked
    except ImportError:
        torch = None
    if torch is not None:
        if torch.cuda.is_available():
            return None
        xpu = getattr(torch, "xpu", None)
        if xpu is not None and xpu.is_available():
            return None
        return NO_GPU
    return None if shutil.which("nvidia-smi") or shutil.which("rocm-smi") else NO_GPU


def gpu_memory_used_mib() -> float | None:
    """GPU memory in use on device 0 (MiB), from nvidia-smi; None when it cannot be read."""
    if shutil.which("nvidia-smi") is None:
        return None
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                         capture_output=True, text=True, timeout=30, check=False)
    try:
        return float(out.stdout.strip().splitlines()[0])
    except (ValueError, IndexError):
        return None


def _post(url: str, body: dict | None = None, timeout: float = 600.0) -> bytes:
    data = json.dumps(body).encode() if body is not None else b""
    request = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as reply:  # noqa: S310 - loopback only
        return reply.read()


def _timed(action) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    action()
    return time.monotonic() - started


def measure(model: str, rounds: int, timeout: float, workdir: Path) -> dict[str, object]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    argv = [str(Path(sys.executable).with_name("vllm")), "serve", *serve_argv(model, port),
            "--enable-sleep-mode", "--served-model-name", "bench"]
    env = {**os.environ, "VLLM_SERVER_DEV_MODE": "1"}
    chat = {"model": "bench", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 1}
    with open(workdir / "vllm.log", "wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        started = time.monotonic()
        wait_http_ok(f"{base}/health", timeout=timeout,
                     give_up=lambda: None if proc.poll() is None else f"vllm exited with {proc.returncode}")
        ready = time.monotonic() - started
        awake_mib = gpu_memory_used_mib()
        sleeps, wakes, firsts, asleep_mib = [], [], [], []
        for _ in range(rounds):
            sleeps.append(_timed(lambda: _post(f"{base}/sleep?level=1")))
            asleep_mib.append(gpu_memory_used_mib())
            wakes.append(_timed(lambda: _post(f"{base}/wake_up")))
            firsts.append(_timed(lambda: _post(f"{base}/v1/chat/completions", chat)))
    finally:
        stop_group(proc, timeout=60)
    freed = [awake_mib - m for m in asleep_mib if m is not None and awake_mib is not None]
    return {
        "model": model, "rounds": rounds, "cold_start_s": round(ready, 2),
        "sleep_level1_s": round(statistics.median(sleeps), 3),
        "wake_s": round(statistics.median(wakes), 3),
        "first_answer_after_wake_s": round(statistics.median(firsts), 3),
        "gpu_mib_freed_by_sleep": round(statistics.median(freed)) if freed else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--model", default=None, help="model directory (default: the tiny local model)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds vLLM may take to start")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    reason = gpu_missing()
    if reason is not None:
        print(reason)
        return 0
    model = args.model or str(tiny_model_path())
    with tempfile.TemporaryDirectory(prefix="berth-sleep-") as workdir:
        result = measure(model, args.rounds, args.timeout, Path(workdir))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
