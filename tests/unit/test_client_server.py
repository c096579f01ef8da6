"""LLMConfig/ServeConfig, the planned server, and VLLMServer's lifecycle over a fake deployer.

The in-memory deployer runs nothing, so a stub listening on the server's port stands in for
vLLM: the readiness check, the client and the shutdown path are the real ones.
"""

from __future__ import annotations

import io
import logging

import pytest
from pydantic import ValidationError

from berth.client import LLMConfig, ServeConfig, ServerStartError, VLLMServer
from berth.client._logs import LogForwarder, secret_values
from berth.client.planning import plan_server
from berth.client.serve_args import kwarg_options, serve_options
from berth.deployers.memory import MemoryDeployer
from berth.schemas.workload import WorkloadState
from berth.testing.stub_server import StubServer
from berth.utils.secrets import redact_text as mask


def test_configs_are_strict_and_name_the_field():
    with pytest.raises(ValidationError, match="modle_name"):
        LLMConfig(modle_name="x")
    with pytest.raises(ValidationError, match="gpu_memory_utilization"):
        LLMConfig(model_name="x", gpu_memory_utilization=1.5)
    with pytest.raises(ValidationError, match="num_servers=3 contradicts gpu_ids"):
        ServeConfig(gpu_ids=[0, 1], num_servers=3)
    with pytest.raises(ValidationError, match="log_level"):
        ServeConfig(log_level="LOUD")


def test_configs_from_file(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text("gpu_ids: [0, [1, 2]]\nport: 9000\n")
    config = ServeConfig.from_file(path)
    assert config.gpu_groups() == [[0], [1, 2]]
    assert ServeConfig(num_servers=2).gpu_groups() == [[], []]
    assert ServeConfig().gpu_groups() == [[]]


def test_log_level_defaults_to_the_berth_logger(monkeypatch):
    assert ServeConfig(log_level="debug").server_log_level() == "DEBUG"
    monkeypatch.setattr(logging.getLogger("berth"), "level", logging.WARNING)
    assert ServeConfig().server_log_level() == "WARNING"


def test_serve_options_cover_the_config():
    llm = LLMConfig(model_name="/m", tokenizer="/t", dtype="float16", quantization="awq",
                    revision="r1", seed=3, gpu_memory_utilization=0.5, enforce_eager=True,
                    max_model_len=512, download_dir="/d", trust_remote_code=True,
                    lora_path="/lora", lora_name="ad", llm_kwargs={"max_num_seqs": 4})
    options = serve_options(llm)
    for pair in (["--tokenizer", "/t"], ["--dtype", "float16"], ["--seed", "3"],
                 ["--max-model-len", "512"], ["--lora-modules", "ad=/lora"],
                 ["--max-num-seqs", "4"], ["--gpu-memory-utilization", "0.5"]):
        at = options.index(pair[0])
        assert options[at:at + 2] == pair
    assert {"--enforce-eager", "--trust-remote-code", "--enable-lora"} <= set(options)
    assert llm.request_model == "ad"


def test_kwarg_options_shapes():
    assert kwarg_options({"enable_prefix_caching": True, "enable_chunked_prefill": False,
                          "skip": None, "allowed_local_media_path": ["/a", "/b"],
                          "override_generation_config": {"temperature": 0.1}}) == [
        "--enable-prefix-caching", "--no-enable-chunked-prefill",
        "--allowed-local-media-path", "/a", "/b",
        "--override-generation-config", '{"temperature": 0.1}']


def test_plan_uses_berths_planner_with_gpus_and_log_level():
    plan = plan_server(LLMConfig(model_name="/models/m", served_model_name="m"), name="c-0",
                       host="127.0.0.1", port=8123, gpus=[0, 1],
                       env={"VLLM_LOGGING_LEVEL": "DEBUG"})
    run = plan.workload.containers[0]
    env = {e.name: e.value for e in run.envs}
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1" and env["VLLM_LOGGING_LEVEL"] == "DEBUG"
    assert dict(run.resources) == {"nvidia.com/devices": "0,1"}
    args = run.execution.args
    assert args[0] == "/models/m" and args[args.index("--port") + 1] == "8123"
    assert args[args.index("--served-model-name") + 1] == "m"
    assert plan.readiness_url == "http://127.0.0.1:8123/health"


def start_fake(stub: StubServer, deployer: MemoryDeployer, **serve: object) -> VLLMServer:
    config = ServeConfig(port=stub.port, startup_timeout=5, server="openai", **serve)
    return VLLMServer(LLMConfig(model_name=stub.models[0]), serve_config=config, deployer=deployer)


def test_server_lifecycle_with_a_fake_deployer():
    deployer = MemoryDeployer()
    with StubServer() as stub, start_fake(stub, deployer) as server:
        assert server.is_running() and server.base_url == stub.base_url
        with server.client() as client:
            assert client.generate(["hi"]) == [["hi"]]
        [plan] = deployer.created
        assert plan.name == server.name
    assert not server.is_running() and deployer.list() == []


def test_no_startup_timeout_waits_until_ready():
    deployer = MemoryDeployer()
    with StubServer() as stub:
        server = VLLMServer(LLMConfig(stub.models[0]), [], "127.0.0.1", stub.port, None,
                            serve_config=ServeConfig(server="openai"), deployer=deployer)
        with server:
            assert server.serve_config.startup_timeout is None and server.is_running()


def test_overrides_win_over_serve_config():
    server = VLLMServer({"model_name": "m"}, [0], port=9100, startup_timeout=3,
                        serve_config=ServeConfig(port=9000, startup_timeout=100))
    assert (server.port, server.serve_config.startup_timeout, server.gpu_ids) == (9100, 3, [0])


def test_readiness_waits_for_the_model_name():
    with StubServer(model="other") as stub:
        server = VLLMServer(LLMConfig(model_name="wanted"), deployer=MemoryDeployer(),
                            serve_config=ServeConfig(port=stub.port, startup_timeout=1, server="openai"))
        with pytest.raises(ServerStartError, match="not ready within startup_timeout=1 s"):
            server.start()
        assert not server.is_running()


def test_exited_server_fails_fast_with_its_reason():
    deployer = MemoryDeployer(initial=WorkloadState.FAILED)
    server = VLLMServer(LLMConfig(model_name="m"), deployer=deployer,
                        serve_config=ServeConfig(startup_timeout=60))
    with pytest.raises(ServerStartError, match="ended \\(failed"):
        server.start()
    assert deployer.list() == []


def test_secrets_are_masked_in_forwarded_logs():
    values = secret_values({"HF_TOKEN": "hf_abcdef", "PATH": "/bin"})
    assert values == ["hf_abcdef"]
    assert mask("token hf_abcdef used", values) == "token ****** used"
    deployer = MemoryDeployer()
    with StubServer() as stub:
        server = start_fake(stub, deployer).start()
        deployer.write_log(server.name, b"using hf_abcdef\nready\n")
        deployer.set_state(server.name, WorkloadState.STOPPED)
        out = io.StringIO()
        forwarder = LogForwarder(deployer, server.name, "[s]", values, out).start()
        forwarder._thread.join(5)  # the log ends with the workload
        server.shutdown()
    assert "hf_abcdef" not in out.getvalue()
    assert "[s] using ******" in out.getvalue() and "[s] ready" in out.getvalue()


def test_api_key_option_is_masked_in_forwarded_logs(capsys):
    """The client follows the worker's secret rule: option values (``--api-key``), not only env."""
    deployer = MemoryDeployer()
    with StubServer() as stub:
        llm = LLMConfig(model_name=stub.models[0], llm_kwargs={"api_key": "sk-client-secret"})
        config = ServeConfig(port=stub.port, startup_timeout=5, server="openai", verbose=True)
        server = VLLMServer(llm, serve_config=config, deployer=deployer).start()
        deployer.write_log(server.name, b"vllm serve m --api-key sk-client-secret\nready\n")
        deployer.set_state(server.name, WorkloadState.STOPPED)
        forwarder = server._forwarder
        assert forwarder is not None
        forwarder._thread.join(5)  # the log ends with the workload
        server.shutdown()
    err = capsys.readouterr().err
    assert "sk-client-secret" not in err
    assert f"[{server.name}] vllm serve m --api-key ******" in err
