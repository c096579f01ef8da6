"""A batched server started with a LoRA adapter (real vLLM, CPU, the tiny model and a random
rank-8 adapter): gserve's ``--lora_path`` reaches the server, which loads the adapter and
answers every request through it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from berth.client import LLMConfig, ServeConfig, VLLMServer
from tests.support.lora import write_lora_adapter

pytestmark = pytest.mark.vllm


def test_a_batched_server_with_a_lora_adapter(tiny_model: Path, tmp_path: Path):
    adapter = write_lora_adapter(tmp_path / "adapter", tiny_model)
    llm = LLMConfig(str(tiny_model), enforce_eager=True, max_model_len=512, dtype="float32",
                    lora_path=str(adapter), llm_kwargs={"max_lora_rank": 8})
    serve = ServeConfig(env={"VLLM_CPU_KVCACHE_SPACE": "1"}, startup_timeout=300,
                        client_timeout=120, server="batched")
    with VLLMServer(llm, serve_config=serve) as server, server.client() as client:
        pid = server.status().containers[0].pid
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
        assert argv[-2:] == ["--lora_path", str(adapter)]
        assert json.loads(argv[argv.index("--llm_kwargs") + 1])["max_lora_rank"] == 8
        answers = client.generate(["the model", "a prompt"], {"max_tokens": 3, "temperature": 0})
        assert [len(a) for a in answers] == [1, 1]
        [[chat]] = client.chat([[{"role": "user", "content": "hi"}]], {"max_tokens": 2})
        assert isinstance(chat, str)
    assert not server.is_running()
