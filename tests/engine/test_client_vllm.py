"""VLLMService over two real tiny vLLM servers (CPU backend, random-weight model).

The model's answers are noise, so order is checked with vLLM's ``echo``: every completion
starts with its prompt, and every chat answer with its conversation's final assistant message.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from berth.client import LLMConfig, ResponseOutput, ServeConfig, VLLMServer, VLLMService
from tests.support.lora import write_lora_adapter
from tests.support.processes import group_exists

pytestmark = pytest.mark.vllm

SERVER_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}
CHAT_ECHO = {"echo": True, "add_generation_prompt": False, "continue_final_message": True}


@pytest.fixture(scope="module", params=["launcher", "process"])
def service(request: pytest.FixtureRequest, tiny_model: Path):
    llm = LLMConfig(model_name=str(tiny_model), served_model_name="tiny", enforce_eager=True,
                    max_model_len=512)
    serve = ServeConfig(num_servers=2, env=SERVER_ENV, startup_timeout=300, client_timeout=120,
                        server="openai",
                        deployer=request.param)
    with VLLMService(llm, serve) as started:
        yield started


def tagged_chats(count: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": "say something"},
             {"role": "assistant", "content": f"tag-{i}:"}] for i in range(count)]


def test_two_servers_answer_a_mixed_batch_of_64_in_input_order(service):
    prompts = [f"prompt number {i} is" for i in range(32)]
    params = {"max_tokens": 8, "temperature": 0.8, "seed": 1}

    async def mixed():
        return await asyncio.gather(
            service.achat(tagged_chats(32), params, extra_body=CHAT_ECHO),
            service.agenerate(prompts, params, extra_body={"echo": True}),
        )

    chats, completions = asyncio.run(mixed())
    assert [c[0].startswith(f"tag-{i}:") for i, c in enumerate(chats)] == [True] * 32
    assert [c[0].startswith(p) for c, p in zip(completions, prompts)] == [True] * 32
    assert [e.answered > 0 for e in service.endpoints] == [True, True]
    assert [e.outstanding for e in service.endpoints] == [0, 0]


def test_return_extra_carries_logprobs_and_token_ids(service):
    [[chat]] = service.chat([[{"role": "user", "content": "hello"}]],
                            {"max_tokens": 4, "logprobs": 2}, return_extra=True)
    assert isinstance(chat, ResponseOutput) and chat.finish_reason in ("length", "stop")
    assert len(chat.logprobs) == len(chat.token_ids) > 0
    assert all(len(item.top) <= 2 and item.logprob <= 0 for item in chat.logprobs)
    [[first, second]] = service.generate(["the model"], {"max_tokens": 3, "n": 2, "logprobs": 1},
                                         return_extra=True)
    assert len(first.logprobs) == len(first.token_ids) == 3 and second.token_ids
    [[plain]] = service.generate(["the model"], {"max_tokens": 2}, return_extra=True)
    assert plain.logprobs is None and len(plain.token_ids) == 2


def test_a_client_server_process_runs_exactly_the_config(service):
    if service.serve_config.deployer != "process":
        # a launcher instance is a fork of the daemon: its /proc command line is the daemon's, so
        # the plan the daemon was handed is what it ran
        plan = service.servers[0].plan
        assert plan is not None
        argv, environ = list(plan.args), dict(plan.env)
        assert argv[argv.index("--max-model-len") + 1] == "512" and argv.count("--max-model-len") == 1
        assert "--tensor-parallel-size" not in argv
        assert not {"OMP_NUM_THREADS", "RUNAI_STREAMER_MEMORY_LIMIT"} & set(environ)
        return
    pid = service.servers[0].status().containers[0].pid
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    environ = dict(item.split("=", 1) for item in
                   Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0") if "=" in item)
    assert argv[argv.index("--max-model-len") + 1] == "512" and argv.count("--max-model-len") == 1
    assert "--tensor-parallel-size" not in argv
    added = {k for k in environ if k not in os.environ}
    assert not {"OMP_NUM_THREADS", "RUNAI_STREAMER_MEMORY_LIMIT"} & added


def test_shutdown_leaves_no_process(service):
    ports = [server.port for server in service.servers]
    run_dir = service.run_dir
    groups = [c.pid for s in service.servers for c in s.status().containers if c.pid]
    assert len(groups) == 2 and service.is_running()
    service.shutdown()
    assert not service.is_running()
    assert [group_exists(g) for g in groups] == [False, False]
    assert _processes_with([f"--port\0{p}\0".encode() for p in ports]) == []
    assert _processes_with([run_dir.encode()]) == []  # the launcher's daemon too
    assert not os.path.exists(run_dir)


def _processes_with(wanted: list[bytes]) -> list[int]:
    """Pids whose command line contains one of ``wanted``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if any(w in cmdline for w in wanted):
            found.append(int(entry.name))
    return found


def test_lora_server_serves_and_routes_to_the_adapter(tiny_model: Path, tmp_path: Path):
    adapter = write_lora_adapter(tmp_path / "adapter", tiny_model)
    llm = LLMConfig(model_name=str(tiny_model), served_model_name="tiny", enforce_eager=True,
                    max_model_len=512, lora_path=str(adapter), lora_name="ad",
                    llm_kwargs={"max_lora_rank": 8})
    serve = ServeConfig(env=SERVER_ENV, startup_timeout=300, client_timeout=120, server="openai")
    with VLLMServer(llm, serve_config=serve) as server, server.client() as client:
        assert server.model == client.model == "ad"
        assert set(client.models()) == {"tiny", "ad"}
        [[answer]] = client.generate(["the model"], {"max_tokens": 4}, return_extra=True)
        assert answer.token_ids is not None
    assert not server.is_running()
