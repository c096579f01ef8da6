"""The batched server over a real ``vllm.LLM`` (CPU backend, the tiny random-weight model):
started by ``VLLMServer`` with ``verbose=True``, reached by berth's client with a real
``SamplingParams`` and by a request shaped as gserve's own client sends it. One server for
the module (a start costs a minute on two CPU cores)."""

from __future__ import annotations

import io
import json
import os
import sys
import urllib.request
from pathlib import Path

import msgspec
import pytest

from berth.client import LLMConfig, ResponseOutput, ServeConfig, VLLMServer

pytestmark = pytest.mark.vllm

SERVER_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}


@pytest.fixture(scope="module")
def started(tiny_model: Path):
    """(server, what its verbose log forwarding wrote). No LoRA adapter here: vLLM 0.32 on CPU
    fails prompt_logprobs with one (an einsum shape error inside vLLM); the adapter has its own
    server in test_client_batched_lora_vllm.py."""
    llm = LLMConfig(str(tiny_model), enforce_eager=True, max_model_len=512, dtype="float32")
    serve = ServeConfig(env=SERVER_ENV, startup_timeout=300, client_timeout=120, verbose=True,
                        server="batched")
    forwarded = io.StringIO()
    stderr, sys.stderr = sys.stderr, forwarded  # the forwarder writes to sys.stderr as it is at start
    try:
        server = VLLMServer(llm, serve_config=serve).start()
    finally:
        sys.stderr = stderr
    try:
        yield server, forwarded
    finally:
        server.shutdown()


def test_generate_with_real_sampling_params_and_logprobs(started):
    from vllm import SamplingParams

    server, _ = started
    params = SamplingParams(max_tokens=4, temperature=0.0, logprobs=1, prompt_logprobs=1,
                            ignore_eos=True)
    with server.client() as client:
        answers = client.generate([f"prompt {i}" for i in range(6)], params, return_extra=True)
        assert len(answers) == 6 and all(isinstance(a[0], ResponseOutput) for a in answers)
        assert [len(a[0].logprobs) for a in answers] == [4] * 6
        assert all(item.logprob <= 0 and item.token in item.top for item in answers[0][0].logprobs)
        [pair] = client.generate(["x"], SamplingParams(n=2, max_tokens=2, seed=1))
        assert len(pair) == 2
        [[chat]] = client.chat([[{"role": "user", "content": "hello"}]], {"max_tokens": 3})
        assert isinstance(chat, str)


def test_a_request_shaped_as_gserves_client_sends_it(started):
    from vllm import SamplingParams

    class GenerateRequest(msgspec.Struct, array_like=True, omit_defaults=True):
        prompts: list[str]
        params: SamplingParams | None = None

    server, _ = started
    body = msgspec.json.encode(GenerateRequest(["a", "b"], SamplingParams(max_tokens=2, logprobs=0)))
    request = urllib.request.Request(f"{server.base_url}/generate", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=120) as answer:
        rows = json.loads(answer.read())
    assert len(rows) == 2 and [len(row) for row in rows] == [1, 1]
    text, logprobs = rows[0][0]
    assert isinstance(text, str) and len(logprobs) == 2
    with urllib.request.urlopen(f"{server.base_url}/health", timeout=10) as answer:
        assert json.loads(answer.read()) == {"status": "ok"}


def test_the_process_runs_gserves_options_and_nothing_else(started):
    server, forwarded = started
    pid = server.status().containers[0].pid
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    assert argv[1:3] == ["-m", "berth.client.batched_server"]
    assert argv[3:13] == ["--serve", "--model", str(server.llm_config.model_name), "--host",
                          "127.0.0.1", "--port", str(server.port), "--gpus", "", "--llm_kwargs"]
    assert json.loads(argv[13])["max_model_len"] == 512 and len(argv) == 14
    environ = dict(item.split("=", 1) for item in
                   Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0") if "=" in item)
    added = {k for k in environ if k not in os.environ}
    assert added <= {"VLLM_CPU_KVCACHE_SPACE", "VLLM_LOGGING_LEVEL", "GSERVE_LOG_LEVEL",
                     "BERTH_PROCESS_TAG", "CUDA_VISIBLE_DEVICES"}
    assert f"[{server.name}]" in forwarded.getvalue()  # verbose=True forwarded the server's log


def test_shutdown_stops_the_server(started):
    server, _ = started
    pid = server.status().containers[0].pid
    server.shutdown()
    assert not server.is_running()
    assert not Path(f"/proc/{pid}").exists() or b"zombie" in Path(f"/proc/{pid}/status").read_bytes()
