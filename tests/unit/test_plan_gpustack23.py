"""What a GPUStack 2.3 scheduler sends, planned as 2.3 plans it: LoRA adapters mounted at start,
the extended KV cache in its modes and vendors, placeholders, vGPU pools, CUDA minor-version
compatibility and the length cap of rope-scaled configs. Literal argv and env throughout."""

from __future__ import annotations

import json

import pytest

from berth.backends import PlanError
from berth.backends.serving_script import serving_script
from berth.backends.vllm_args import derive_max_model_len
from tests.support.specs import DEFAULT_ENV as LOADING
from tests.support.specs import make_plan

GIB = 1 << 30
HOST = ["--host", "10.0.0.1", "--port", "40000", "--served-model-name", "m"]
LMCACHE = '{"kv_connector":"LMCacheConnectorV1","kv_role":"kv_both"}'
ASCEND_910B = [{"index": i, "vendor": "ascend", "arch_family": "Ascend910B3"} for i in range(4)]


def claim(*gib: int) -> dict:
    return {"computed_resource_claim": {"vram": {i: g * GIB for i, g in enumerate(gib)}}}


def adapter(tmp_path, name: str, config: dict | None) -> dict:
    path = tmp_path / name
    path.mkdir()
    if config is not None:
        (path / "adapter_config.json").write_text(json.dumps(config))
    return {"lora_name": f"m:{name}", "path": str(path)}


# -- LoRA ------------------------------------------------------------------------------


def test_mounted_loras_are_served_from_the_start(tmp_path):
    loras = [adapter(tmp_path, "a", {"r": 16}), adapter(tmp_path, "b", {"r": 8, "rank_pattern": {"q": 100}})]
    plan = make_plan(instance={"mounted_loras": loras})
    modules = [json.dumps({"name": l["lora_name"], "path": l["path"], "base_model_name": "m"}) for l in loras]
    assert plan.args == [
        "/models/org/m", "--enable-prompt-tokens-details",
        "--enable-lora", "--max-loras", "2", "--lora-modules", *modules, "--max-lora-rank", "128",
        *HOST,
    ]


@pytest.mark.parametrize(("rank", "allowed"), [(8, 8), (9, 16), (300, 320), (512, 512), (1024, 1024)])
def test_lora_rank_rounds_up_to_what_vllm_accepts(tmp_path, rank, allowed):
    plan = make_plan(instance={"mounted_loras": [adapter(tmp_path, "a", {"r": rank})]})
    assert plan.args[plan.args.index("--max-lora-rank") + 1] == str(allowed)


def test_the_users_lora_flags_win(tmp_path):
    loras = [adapter(tmp_path, "a", {"r": 16})]
    own_modules = make_plan(instance={"mounted_loras": loras}, model={"backend_parameters": ["--lora-modules", "x=/x"]})
    assert own_modules.args == ["/models/org/m", "--enable-prompt-tokens-details", "--lora-modules", "x=/x", *HOST]
    own_rank = make_plan(instance={"mounted_loras": loras}, model={"backend_parameters": ["--max-lora-rank=64"]})
    assert "--max-lora-rank" not in own_rank.args and own_rank.args[-7] == "--max-lora-rank=64"


def test_an_unreadable_adapter_config_is_a_warning_not_a_rank(tmp_path):
    plan = make_plan(instance={"mounted_loras": [adapter(tmp_path, "a", None)]})
    assert "--max-lora-rank" not in plan.args and "--lora-modules" in plan.args
    assert any("LoRA rank not read" in w for w in plan.warnings)


# -- extended KV cache -------------------------------------------------------------------


def test_local_cache_sizes_are_whole_numbers_when_whole():
    plan = make_plan(model={"extended_kv_cache": {"enabled": True, "chunk_size": 256}}, instance=claim(40))
    assert plan.args == ["/models/org/m", "--enable-prompt-tokens-details", "--kv-transfer-config", LMCACHE, *HOST]
    assert plan.env == {**LOADING, "LMCACHE_CHUNK_SIZE": "256", "LMCACHE_MAX_LOCAL_CPU_SIZE": "48"}
    fraction = make_plan(model={"extended_kv_cache": {"enabled": True, "ram_ratio": 1.15}}, instance=claim(10))
    assert fraction.env["LMCACHE_MAX_LOCAL_CPU_SIZE"] == "11.5"


def test_no_size_without_a_claim():
    plan = make_plan(model={"extended_kv_cache": {"enabled": True}})
    assert "LMCACHE_MAX_LOCAL_CPU_SIZE" not in plan.env


def test_ascend_offloads_with_vllm_ascends_connector_per_rank():
    plan = make_plan(
        model={"backend_version": "0.21.0", "extended_kv_cache": {"enabled": True, "ram_size": 64}},
        instance={"gpu_indexes": [0, 1], **claim(32, 32)},
        worker={"gpu_devices": ASCEND_910B},
    )
    connector = plan.args[plan.args.index("--kv-transfer-config") + 1]
    assert connector == (
        '{"kv_connector":"SimpleCPUOffloadConnector","kv_role":"kv_both",'
        f'"kv_connector_extra_config":{{"cpu_bytes_to_use_per_rank":{32 * GIB}}}}}'
    )
    assert not any(k.startswith("LMCACHE_") for k in plan.env)


@pytest.mark.parametrize(
    ("version", "arch", "reason"),
    [("0.20.0", "Ascend910B3", "0.21.0 or later"), ("0.21.0", "Ascend310P3", "310P")],
)
def test_ascend_without_the_connector_skips_with_a_warning(version, arch, reason):
    plan = make_plan(
        model={"backend_version": version, "extended_kv_cache": {"enabled": True}},
        worker={"gpu_devices": [{"index": 0, "vendor": "ascend", "arch_family": arch}]},
    )
    assert "--kv-transfer-config" not in plan.args
    assert any(reason in w for w in plan.warnings)


SHARED = {
    "cache_service_id": 3,
    "injected": True,
    "env": {"LMCACHE_REMOTE_URL": "lm://cache:65432"},
    "args": ["--kv-transfer-config", LMCACHE],
    "files": {"/etc/lmcache/c.yaml": "remote_url: lm://cache:65432"},
}


def test_shared_cache_applies_the_scheduler_snapshot():
    plan = make_plan(
        model={"extended_kv_cache": {"enabled": True, "mode": "shared", "cache_service_id": 3}},
        instance={"cache_config": SHARED, **claim(40)},
    )
    assert plan.args == ["/models/org/m", "--enable-prompt-tokens-details", "--kv-transfer-config", LMCACHE, *HOST]
    assert plan.env == {**LOADING, "LMCACHE_REMOTE_URL": "lm://cache:65432"}
    assert plan.workload.host_ipc is True
    run = plan.workload.containers[0].execution
    assert run.command is None and run.args[:2] == ["vllm", "serve"]
    assert run.command_script == serving_script(SHARED["files"], disable_cuda_compat=False)
    assert "cat > '/etc/lmcache/c.yaml' <<'GPUSTACK_CACHE_FILE_EOF'\nremote_url: lm://cache:65432\n" in run.command_script


def test_shared_cache_not_injected_starts_without_it_and_says_why():
    snapshot = {"cache_service_id": 3, "injected": False, "reason": "no endpoint"}
    plan = make_plan(
        model={"extended_kv_cache": {"enabled": True, "mode": "shared"}}, instance={"cache_config": snapshot}
    )
    assert plan.args == ["/models/org/m", "--enable-prompt-tokens-details", *HOST]
    assert plan.env == LOADING and plan.workload.host_ipc is False
    assert "starting without the shared KV cache: no endpoint" in plan.warnings


def test_host_ipc_follows_the_models_switch():
    model = {"extended_kv_cache": {"enabled": True, "mode": "shared"}, "env": {"GPUSTACK_HOST_IPC": "off"}}
    assert make_plan(model=model, instance={"cache_config": SHARED}).workload.host_ipc is False


def test_a_users_connector_and_the_cache_become_one_multi_connector():
    nixl = '{"kv_connector":"NixlConnector","kv_role":"kv_both","kv_load_failure_policy":"recompute"}'
    plan = make_plan(
        model={"extended_kv_cache": {"enabled": True}, "backend_parameters": [f"--kv-transfer-config={nixl}"]},
        instance={"role": "prefill", **claim(8)},
    )
    assert plan.args == [
        "/models/org/m", "--enable-prompt-tokens-details",
        "--kv-transfer-config",
        '{"kv_connector":"MultiConnector","kv_role":"kv_producer","kv_connector_extra_config":{"connectors":['
        f'{nixl},{LMCACHE}]}},"kv_load_failure_policy":"recompute"}}',
        *HOST,
    ]


def test_cache_file_paths_are_checked():
    bad = dict(SHARED, files={"/etc/x' ; rm -rf / ; '": "x"})
    with pytest.raises(ValueError, match="absolute path without"):
        make_plan(instance={"cache_config": bad})


# -- placeholders, run command -----------------------------------------------------------


def test_placeholders_in_env_and_parameters():
    plan = make_plan(
        model={
            "env": {"SIDE": "tcp://{{worker_ip}}:{{port}}", "RAW": "{{ worker_ip }}", "ODD": "{{nope}}"},
            "backend_parameters": ["--alias={{model_name}}-{{gpu_count}}", "--devices", "{{gpu_ids}}"],
        },
        instance={"port": 40000, "gpu_indexes": [3, 2]},
    )
    assert plan.env["SIDE"] == "tcp://10.0.0.1:40000"
    assert plan.env["RAW"] == "{{ worker_ip }}" and plan.env["ODD"] == "{{nope}}"
    assert plan.args[-8:-6] == ["--devices", "2,3"] and "--alias=m-2" in plan.args
    assert "model.env['ODD']: no value for {{nope}}; left as written" in plan.warnings


def test_port_placeholder_reads_the_plans_http_port():
    """Bug 11: ports given only as a list (no ``port``) fill ``{{port}}`` with the same HTTP
    port the plan serves on, in env, backend parameters and the run command alike."""
    plan = make_plan(
        model={"env": {"SIDE": "tcp://{{worker_ip}}:{{port}}"}, "backend_parameters": ["--side-port={{port}}"]},
        instance={"ports": [40000, 40001]},
    )
    assert plan.ports.http == 40000
    assert plan.env["SIDE"] == "tcp://10.0.0.1:40000"
    assert "--side-port=40000" in plan.args
    assert plan.args[plan.args.index("--port") + 1] == "40000"
    run = make_plan(model={"run_command": "{{model_path}} --port {{port}}"}, instance={"ports": [40500]})
    assert run.args[:3] == ["/models/org/m", "--port", "40500"]
    assert run.base_url == "http://10.0.0.1:40500"


def test_run_command_replaces_the_model_path():
    plan = make_plan(
        model={"run_command": "{{model_path}} --port {{port}} --trust-remote-code"},
        instance={"ports": [], "port": 41000},
    )
    assert plan.args == [
        "/models/org/m", "--port", "41000", "--trust-remote-code", "--enable-prompt-tokens-details",
        "--host", "10.0.0.1", "--served-model-name", "m",
    ]


# -- vGPU pools ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "extra", "resources"),
    [
        ({"accelerator_sliced_memory_percentage": 30}, {},
         {"nvidia.com/gpu.sliced": "1", "nvidia.com/gpu.sliced.memory-percentage": "30",
          "nvidia.com/gpu.sliced.cores-percentage": "100"}),
        ({"accelerator_partitioned_profile": "1g.5gb"}, {},
         {"nvidia.com/gpu.partitioned": "1", "nvidia.com/gpu.partitioned.mig-1g.5gb": "1"}),
        ({}, claim(80, 80), {"nvidia.com/gpu": "2"}),
    ],
)
def test_gpu_pools_ask_the_operator_for_their_resources(selector, extra, resources):
    plan = make_plan(model={"gpu_type_selector": {"type": "pool", **selector}}, instance=extra)
    assert dict(plan.workload.containers[0].resources) == resources
    assert plan.workload.instance_type == "pool"


def test_a_slice_needs_a_memory_percentage():
    with pytest.raises(ValueError, match="accelerator_sliced_memory_percentage"):
        make_plan(model={"gpu_type_selector": {"type": "pool", "accelerator_sliced_cores_percentage": 50}})


# -- CUDA minor-version compatibility -----------------------------------------------------

RUNNER = "gpustack/runner:cuda12.9-vllm0.11.0"


def cuda(host: str) -> dict:
    return {"gpu_devices": [{"index": 0, "vendor": "nvidia", "runtime_version": host}]}


def test_newer_image_cuda_runs_on_the_host_driver():
    plan = make_plan(
        model={"image_name": RUNNER, "env": {"GPUSTACK_ENABLE_CUDA_MINOR_VERSION_COMPATIBILITY": "true"}},
        worker=cuda("12.4"),
    )
    assert list(plan.env)[:2] == ["GPUSTACK_ENABLE_CUDA_MINOR_VERSION_COMPATIBILITY", "NVIDIA_DISABLE_REQUIRE"]
    assert plan.env["NVIDIA_DISABLE_REQUIRE"] == "1"
    assert "rm -rf /usr/local/cuda/compat" in plan.workload.containers[0].execution.command_script


@pytest.mark.parametrize(("host", "config"), [("13.0", True), ("12.9", True), ("12.4", False)])
def test_no_compat_step_when_not_needed_or_not_enabled(host, config):
    plan = make_plan(model={"image_name": RUNNER}, worker=cuda(host),
                     config={"cuda_minor_version_compatibility": config})
    assert "NVIDIA_DISABLE_REQUIRE" not in plan.env
    assert plan.workload.containers[0].execution.command_script is None


# -- rope scaling ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "length"),
    [
        ({"max_position_embeddings": 4096, "rope_scaling": {"factor": 4.0}}, 16384),
        ({"max_position_embeddings": 4096, "rope_parameters": {
            "full_attention": {"rope_type": "default"}, "sliding_attention": {"factor": 8.0}}}, 4096),
        ({"max_position_embeddings": 4096, "rope_scaling": {"type": "yarn", "factor": 4.0}}, 16384),
        ({"max_position_embeddings": 4096, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, 4096),
        ({"max_position_embeddings": 4096, "rope_scaling": {"type": "linear", "factor": "4"}}, 4096),
        ({"max_position_embeddings": 4096, "text_config": {"max_position_embeddings": 9}}, 4096),
    ],
)
def test_rope_scaling_as_transformers_reads_it(config, length):
    assert derive_max_model_len(config) == length


def test_an_untyped_rope_scaling_still_caps_the_length(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 4096, "rope_scaling": {"factor": 4.0}}))
    plan = make_plan(model_path=str(tmp_path))
    assert plan.args[1:3] == ["--max-model-len", "8192"]


def test_gpu_type_selects_devices_of_that_type():
    worker = {"gpu_devices": [{"index": 0, "vendor": "nvidia", "type": "cuda"}, {"index": 0, "vendor": "amd", "type": "rocm"}]}
    with pytest.raises(PlanError, match="of type 'rocm'"):
        make_plan(instance={"gpu_type": "rocm", "gpu_indexes": [1]}, worker=worker)


def test_run_command_also_reads_the_models_env_names():
    plan = make_plan(model={"run_command": "{{model_path}} --tag {{TAG}}", "env": {"TAG": "v1"}})
    assert plan.args[:3] == ["/models/org/m", "--tag", "v1"]


def test_a_parameter_that_would_render_empty_stays_as_written():
    plan = make_plan(
        model={"image_name": "cpu:1", "backend_parameters": ["--devices", "{{gpu_ids}}", "--ids={{gpu_ids}}"]},
        instance={"gpu_indexes": []},
        worker={"gpu_devices": []},
    )
    assert plan.args[2:5] == ["--devices", "{{gpu_ids}}", "--ids="]


def test_container_user_and_shm_from_the_env_win_over_config():
    plan = make_plan(
        model={"env": {"GPUSTACK_MODEL_RUNTIME_UID": "1000", "GPUSTACK_MODEL_RUNTIME_GID": "x",
                       "GPUSTACK_MODEL_RUNTIME_SHM_SIZE_GIB": "2.5"}},
        config={"runtime_gid": 7},
    )
    workload = plan.workload
    assert (workload.run_as_user, workload.run_as_group, workload.shm_size) == (1000, 7, int(2.5 * GIB))
    assert workload.containers[0].execution.run_as_user == 1000
    assert "env GPUSTACK_MODEL_RUNTIME_GID='x' is not a number; using 7" in plan.warnings
