"""Launcher-API instances and client servers carry the ``exact`` planning profile: the user's
options as given, plus only host, port and served name. A launcher user can ask for the
cluster rules.
"""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from berth.backends.vllm import VLLMServer as VLLMPlanner
from berth.client import LLMConfig
from berth.client.planning import plan_server
from berth.worker.admission._admission import Holdings, admit_launcher
from berth.worker.admission._launcher_spec import LauncherRequest
from berth.worker.settings import Settings

#: What GPUStack's rules would add, none of which a launcher or gserve user asked for.
CLUSTER_ENV = ("OMP_NUM_THREADS", "RUNAI_STREAMER_MEMORY_LIMIT", "RUNAI_STREAMER_LOG_TO_STDERR")
CLUSTER_ARGS = ("--max-model-len", "--tensor-parallel-size")


@pytest.fixture
def long_context_model(tmp_path):
    """A local model whose config says 131072 tokens (the cluster rules cap it at 8192)."""
    model = tmp_path / "long"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "max_position_embeddings": 131072, "hidden_size": 64, "num_attention_heads": 4,
        "num_hidden_layers": 2, "intermediate_size": 128, "vocab_size": 1000}))
    return model


def _admit(options: str, **fields):
    request = LauncherRequest(options=options, **fields)
    return admit_launcher("i1", request, Settings(worker_ip="127.0.0.1"), Holdings())


def test_launcher_requests_are_exact_unless_they_ask_for_cluster(long_context_model):
    assert LauncherRequest(options="--model /m").profile == "exact"
    assert _admit(f"--model {long_context_model} --port 8123").spec.profile == "exact"
    assert _admit(f"--model {long_context_model}", profile="cluster").spec.profile == "cluster"
    with pytest.raises(ValidationError, match="profile"):
        LauncherRequest(options="--model /m", profile="strict")


def test_client_servers_plan_with_the_configs_profile(long_context_model):
    spec_profiles = []
    original = VLLMPlanner.from_spec

    def recording(spec):
        spec_profiles.append(spec.profile)
        return original(spec)

    try:
        VLLMPlanner.from_spec = recording  # type: ignore[method-assign]
        for profile in ("exact", "cluster"):
            plan_server(LLMConfig(str(long_context_model)), name="c-0", host="127.0.0.1",
                        port=8123, gpus=[], env={}, profile=profile)
    finally:
        VLLMPlanner.from_spec = original  # type: ignore[method-assign]
    assert spec_profiles == ["exact", "cluster"]


def _run_container(plan):
    run = plan.workload.containers[0]
    argv = [*(run.execution.command or []), *(run.execution.args or [])]
    return argv, {e.name: e.value for e in run.envs}


def test_a_launcher_instance_runs_exactly_the_options_given(long_context_model):
    spec = _admit(f"--model {long_context_model} --port 8123 --dtype float16").spec
    argv, env = _run_container(VLLMPlanner.from_spec(spec).plan())
    assert not [a for a in argv if a.split("=")[0] in CLUSTER_ARGS]
    assert not [name for name in CLUSTER_ENV if name in env]
    assert argv[argv.index("--port") + 1] == "8123" and "--host" in argv
    assert argv[argv.index("--dtype") + 1] == "float16"


def test_a_client_server_runs_exactly_the_config(long_context_model):
    plan = plan_server(LLMConfig(str(long_context_model), served_model_name="m"), name="c-0",
                       host="127.0.0.1", port=8123, gpus=[], env={"HF_HOME": "/h"})
    argv, env = _run_container(plan)
    assert not [a for a in argv if a.split("=")[0] in CLUSTER_ARGS]
    assert env == {"HF_HOME": "/h"}
    assert argv[argv.index("--served-model-name") + 1] == "m"


def test_the_cluster_profile_keeps_the_cluster_rules(long_context_model):
    spec = _admit(f"--model {long_context_model} --port 8123", profile="cluster").spec
    argv, env = _run_container(VLLMPlanner.from_spec(spec).plan())
    assert argv[argv.index("--max-model-len") + 1] == "8192"
    assert env["OMP_NUM_THREADS"] == "1"
