"""What a gserve user relied on: dataclass configs with gserve's fields, order and defaults,
positional arguments, GSERVE_LOG_LEVEL and setup_logging, local model paths, the LoRA adapter
as the default model, and the server kinds and planning profile the client picks."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys

import pytest
from pydantic import ValidationError

from berth.client import (
    LOG_LEVEL_ENV,
    LLMConfig,
    ServeConfig,
    VLLMClient,
    VLLMServer,
    setup_logging,
)
from berth.client.planning import batched_args, model_location
from berth.client.serve_args import llm_kwargs
from berth.client.transport import pick_model
from berth.testing.stub_server import StubServer

GSERVE_LLM_FIELDS = [
    "model_name", "tokenizer", "tokenizer_mode", "trust_remote_code", "dtype", "quantization",
    "revision", "tokenizer_revision", "seed", "gpu_memory_utilization", "enforce_eager",
    "max_model_len", "download_dir", "lora_path", "llm_kwargs",
]
GSERVE_SERVE_FIELDS = ["gpu_ids", "host", "port", "startup_timeout", "client_timeout", "verbose"]


def test_configs_are_dataclasses_with_gserves_fields_first():
    assert [f.name for f in dataclasses.fields(LLMConfig)][:15] == GSERVE_LLM_FIELDS
    assert [f.name for f in dataclasses.fields(ServeConfig)][:6] == GSERVE_SERVE_FIELDS
    llm = LLMConfig("m")
    assert (llm.model_name, llm.dtype, llm.seed, llm.tokenizer_mode) == ("m", "bfloat16", 0, "auto")
    serve = ServeConfig([0, 1], "0.0.0.0", 9000, None, 60.0, True)
    assert (serve.gpu_ids, serve.port, serve.startup_timeout, serve.verbose) == ([0, 1], 9000, None, True)
    assert (ServeConfig().startup_timeout, ServeConfig().client_timeout) == (180.0, 30.0)


def test_replace_and_asdict_work_and_still_validate():
    serve = ServeConfig([0], port=9000)
    moved = dataclasses.replace(serve, port=9001)
    assert (moved.port, serve.port, moved.gpu_ids) == (9001, 9000, [0])
    assert dataclasses.asdict(LLMConfig("m"))["dtype"] == "bfloat16"
    with pytest.raises(ValidationError, match="port"):
        dataclasses.replace(serve, port=0)
    with pytest.raises(ValidationError, match="max_model_len"):
        LLMConfig("m").max_model_len = 0
    assert ServeConfig.model_validate({"gpu_ids": [0], "server": "openai"}).server == "openai"


def test_server_kind_and_profile_are_checked():
    assert (ServeConfig().server, ServeConfig().profile) == ("batched", "exact")
    with pytest.raises(ValidationError, match="server"):
        ServeConfig(server="grpc")
    with pytest.raises(ValidationError, match="profile"):
        ServeConfig(profile="strict")
    assert ServeConfig(server="batched", deployer="launcher").deployer_choice() == "process"
    assert ServeConfig(server="openai", deployer="launcher").deployer_choice() == "launcher"


def test_vllm_client_takes_gserves_positional_arguments():
    client = VLLMClient("127.0.0.1", 8123, 60)
    assert (client.host, client.port, client._transport.timeout) == ("127.0.0.1", 8123, 60)
    assert VLLMClient("h", 1, None)._transport.timeout is None


def test_vllm_server_takes_gserves_positional_arguments_and_no_timeout():
    server = VLLMServer(LLMConfig("m"), [0], "127.0.0.1", 9100, None, True)
    assert (server.gpu_ids, server.port, server.serve_config.verbose) == ([0], 9100, True)
    assert server.serve_config.startup_timeout is None
    kept = VLLMServer(LLMConfig("m"), serve_config=ServeConfig(startup_timeout=5))
    assert kept.serve_config.startup_timeout == 5


def test_local_model_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path))
    assert model_location("./m") == str(tmp_path / "m")
    assert model_location("~/m") == str(tmp_path / "m")
    assert model_location("m") == str(tmp_path / "m")  # exists here: a path, as vLLM reads it
    assert model_location("org/name") == "org/name"
    assert model_location("/abs/m") == "/abs/m"


def test_batched_server_argv_is_gserves(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    llm = LLMConfig("./m", max_model_len=512, llm_kwargs={"max_num_seqs": 8, "dtype": "half"},
                    lora_path="./lora")
    args = batched_args(llm, "127.0.0.1", 8123, [0, 1])
    assert args[:10] == ["--serve", "--model", str(tmp_path / "m"), "--host", "127.0.0.1",
                         "--port", "8123", "--gpus", "0,1", "--llm_kwargs"]
    assert json.loads(args[10]) == {"tokenizer_mode": "auto", "trust_remote_code": False, "dtype": "half",
                                    "seed": 0, "enforce_eager": False, "max_model_len": 512,
                                    "max_num_seqs": 8}
    assert args[11:] == ["--lora_path", str(tmp_path / "lora")]
    assert llm_kwargs(LLMConfig("m", seed=None))["dtype"] == "bfloat16"


def test_batched_server_workload_runs_the_module_with_only_the_given_env():
    server = VLLMServer(LLMConfig("/models/m"), port=8123,
                        serve_config=ServeConfig(env={"HF_HOME": "/h"}, log_level="DEBUG"))
    run = server.workload().containers[0]
    command = run.execution.command
    assert command[:3] == [sys.executable, "-m", "berth.client.batched_server"]
    assert command[3:8] == ["--serve", "--model", "/models/m", "--host", "127.0.0.1"]
    assert {e.name: e.value for e in run.envs} == {
        "HF_HOME": "/h", "VLLM_LOGGING_LEVEL": "DEBUG", LOG_LEVEL_ENV: "DEBUG"}
    assert server.plan is None


def test_setup_logging_and_the_gserve_variable(monkeypatch):
    root = logging.getLogger()
    monkeypatch.setattr(root, "level", root.level)
    monkeypatch.setattr(root, "handlers", [logging.NullHandler()])
    monkeypatch.setenv(LOG_LEVEL_ENV, "INFO")  # recorded, so that teardown restores the original
    monkeypatch.delenv(LOG_LEVEL_ENV)
    setup_logging(logging.DEBUG)
    assert root.level == logging.DEBUG and os.environ[LOG_LEVEL_ENV] == "DEBUG"
    assert ServeConfig().server_log_level() == "DEBUG"  # servers follow the variable
    monkeypatch.setenv(LOG_LEVEL_ENV, "warning")
    setup_logging()
    assert root.level == logging.WARNING and root.handlers[0].level == logging.WARNING
    monkeypatch.setenv(LOG_LEVEL_ENV, "LOUD")
    setup_logging()
    assert root.level == logging.INFO
    with pytest.raises(ValueError, match="LOUD"):
        setup_logging("LOUD")
    assert ServeConfig(log_level="error").server_log_level() == "ERROR"


def test_the_only_lora_adapter_is_the_default_model():
    def cards(*ids: str, parents: int = 0) -> dict:
        return {"data": [{"id": i, "parent": "base" if n and n <= parents else None}
                         for n, i in enumerate(ids)]}

    assert pick_model(cards("base", "ad", parents=1), "u") == "ad"
    assert pick_model(cards("base", "a1", "a2", parents=2), "u") == "base"
    assert pick_model(cards("base"), "u") == "base"
    with StubServer(lora=["my-adapter"], record=True) as stub, \
            VLLMClient(base_url=stub.base_url) as client:
        client.generate(["x"])
        assert stub.requests[-1][1]["model"] == "my-adapter"
