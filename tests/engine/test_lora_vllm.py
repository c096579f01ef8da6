"""Runtime LoRA adapters with real vLLM (CPU), the tiny model and an adapter made here.

One `berth serve` process, one engine: load an adapter through the worker's API, use it by name
through the worker's ``/v1`` router, ``kill -9`` the worker while the engine forgets the adapter,
start the worker again and see the adapter loaded again on re-adoption, then unload it.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from berth.testing import CPU_ENV, free_port
from berth.testing.tiny_lora import build_tiny_lora
from berth.worker.loras._rules import RUNTIME_ENV
from tests.support.ports import free_range
from tests.support.serve_process import spawn_serve, stop_group, wait_healthy

pytestmark = [pytest.mark.vllm, pytest.mark.subprocess]

READY_TIMEOUT = 300.0
ADAPTER = "tiny-lora"


class Worker:
    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.data_dir, self.log = tmp / "data", tmp / "serve.log"
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
        self.env = {**inherited, "BERTH_DATA_DIR": str(self.data_dir), "BERTH_POLL_INTERVAL": "0.25",
                    "BERTH_STOP_TIMEOUT": "10", "BERTH_INSTANCE_PORT_RANGE": free_range()}
        self.proc = None
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", trust_env=False, timeout=120)

    def start(self) -> None:
        self.proc = spawn_serve(["--port", str(self.port)], self.env, self.log)
        wait_healthy(self.proc, self.http, self.log, timeout=120, poll=0.2)

    def kill9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def chat(self, model: str) -> httpx.Response:
        return self.http.post("/v1/chat/completions", json={
            "model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4})


def until(check, timeout: float, what: str, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (value := check()):
            return value
        time.sleep(0.25)
    raise AssertionError(f"{what} not within {timeout} s\n{log.read_text()[-4000:]}")


def engine_adapters(base_url: str) -> set[str]:
    models = httpx.get(f"{base_url}/v1/models", trust_env=False, timeout=30).json()["data"]
    return {m["id"] for m in models if m.get("parent")}


@pytest.fixture
def worker(tmp_path):
    serve = Worker(tmp_path)
    serve.start()
    yield serve
    if serve.proc.poll() is not None:  # a failed test may leave it killed: bring it back to clean up
        serve.start()
    serve.http.delete("/v2/vllm/instances", timeout=120)
    stop_group(serve.proc, timeout=60)
    serve.http.close()


def test_runtime_lora_load_route_readopt_unload(worker, tiny_model, tmp_path):
    adapter = build_tiny_lora(tmp_path / "adapter", tiny_model)
    options = (f"--model {tiny_model} --enforce-eager --max-model-len 256 --served-model-name tiny "
               "--enable-lora --max-loras 2 --max-lora-rank 8")
    created = worker.http.put("/v2/vllm/instances/lora-a", json={"options": options, "env_vars": {**CPU_ENV, RUNTIME_ENV: "1"}})
    assert created.status_code == 201, created.text
    status = until(lambda: (b := worker.http.get("/v2/vllm/instances/lora-a").json()).get("ready") and b,
                   READY_TIMEOUT, "instance ready", worker.log)
    base_url = status["base_url"]

    # bad input: named field, 4xx, nothing loaded
    bad = worker.http.post("/v2/vllm/instances/lora-a/loras", json={"name": ADAPTER, "path": str(tmp_path)})
    assert bad.status_code == 422 and "adapter_config.json" in bad.json()["detail"]
    assert worker.http.post("/v2/instances/nope/loras", json={"name": ADAPTER, "path": str(adapter)}).status_code == 404

    loaded = worker.http.post("/v2/vllm/instances/lora-a/loras", json={"name": ADAPTER, "path": str(adapter)})
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["loras"] == [{"name": ADAPTER, "path": str(adapter.resolve())}]
    answer = worker.chat(ADAPTER)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == ADAPTER
    assert ADAPTER in {m["id"] for m in worker.http.get("/v1/models").json()["data"]}

    # the worker dies; meanwhile the engine loses the adapter; the new worker loads it again
    worker.kill9()
    assert httpx.post(f"{base_url}/v1/unload_lora_adapter", json={"lora_name": ADAPTER}, trust_env=False).status_code == 200
    assert ADAPTER not in engine_adapters(base_url)
    worker.start()
    until(lambda: ADAPTER in engine_adapters(base_url), 60, "adapter loaded again after re-adoption", worker.log)
    answer = worker.chat(ADAPTER)
    assert answer.status_code == 200 and answer.json()["model"] == ADAPTER, answer.text

    gone = worker.http.delete(f"/v2/instances/lora-a/loras/{ADAPTER}")
    assert gone.status_code == 200 and gone.json()["loras"] == []
    assert ADAPTER not in engine_adapters(base_url)
    missing = worker.chat(ADAPTER)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    assert worker.chat("tiny").status_code == 200
