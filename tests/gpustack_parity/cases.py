"""Planning cases run through both GPUStack 2.3.0's planner and berth's (see compare.py).

Each case is a berth deployment spec; ``fixtures(root)`` writes the model configs and LoRA
adapters the cases point at, so both planners read the same files.
"""

from __future__ import annotations

import json
import os
from typing import Any

from tests.support.specs import deep_merge

CUDA = [{"index": i, "vendor": "nvidia", "type": "cuda", "runtime_version": "12.4"} for i in range(8)]
ROCM = [{"index": i, "vendor": "amd", "type": "rocm"} for i in range(4)]
ASCEND_910B = [{"index": i, "vendor": "ascend", "type": "cann", "arch_family": "Ascend910B3"} for i in range(8)]
ASCEND_310P = [{"index": i, "vendor": "ascend", "type": "cann", "arch_family": "Ascend310P3"} for i in range(4)]
GIB = 1 << 30

#: Cases where berth differs from GPUStack 2.3 on purpose (ARCHITECTURE.md, deviations): the
#: Ray head pins its client server and metrics ports inside the band.
DELIBERATE = {
    "argv-json-after-space": "a JSON value after a space stays whole (2.3.0 strips its quotes)",
    "ray-leader": "the Ray head's ports stay inside the band",
    "ray-custom-old-version": "the Ray head's ports stay inside the band",
    "ray-leader-dp": "the Ray head's ports stay inside the band",
}


def fixtures(root: str) -> dict[str, str]:
    """Model directories and LoRA adapters under ``root``; returns their paths by name."""
    configs: dict[str, dict[str, Any]] = {
        "short": {"max_position_embeddings": 4096},
        "long": {"max_position_embeddings": 131072},
        "rope_untyped": {"max_position_embeddings": 4096, "rope_scaling": {"factor": 4.0}},
        "rope_yarn": {
            "max_position_embeddings": 131072,
            "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768},
        },
        "rope_linear": {"max_position_embeddings": 4096, "rope_scaling": {"rope_type": "linear", "factor": 4.0}},
        "rope_default": {"max_position_embeddings": 4096, "rope_scaling": {"rope_type": "default", "factor": 3.0}},
        "rope_mrope": {"max_position_embeddings": 4096, "rope_scaling": {"type": "mrope", "mrope_section": [16, 24]}},
        "rope_nested": {"max_position_embeddings": 4096, "rope_parameters": {
            "full_attention": {"rope_type": "default"}, "sliding_attention": {"rope_type": "linear", "factor": 8.0}}},
        "rope_parameters_linear": {"max_position_embeddings": 4096, "rope_parameters": {"rope_type": "linear", "factor": 4.0}},
        "rope_yarn_no_original": {"max_position_embeddings": 4096, "rope_scaling": {"type": "yarn", "factor": 4.0}},
        "text_config": {"max_position_embeddings": 4096,
                        "text_config": {"max_position_embeddings": 40960, "num_attention_heads": 8}},
    }
    adapters: dict[str, dict[str, Any] | None] = {
        "lora_r16": {"r": 16},
        "lora_pattern": {"r": 8, "rank_pattern": {"q_proj": 100}},
        "lora_r300": {"r": 300},
        "lora_r1024": {"r": 1024},
        "lora_unreadable": None,
    }
    paths: dict[str, str] = {}
    for name, config in configs.items():
        path = os.path.join(root, "models", name)
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as handle:
            json.dump(config, handle)
        paths[name] = path
    for name, adapter in adapters.items():
        path = os.path.join(root, "loras", name)
        os.makedirs(path, exist_ok=True)
        if adapter is not None:
            with open(os.path.join(path, "adapter_config.json"), "w", encoding="utf-8") as handle:
                json.dump(adapter, handle)
        paths[name] = path
    return paths


def _spec(paths: dict[str, str], weights: str = "short", **over: Any) -> dict[str, Any]:
    base = {
        "model": {"name": "m", "backend_version": "0.11.0"},
        "instance": {
            "name": "m-1", "model_id": 1, "model_name": "m", "worker_id": 1, "worker_ip": "10.0.0.1",
            "gpu_indexes": [0], "ports": [40000], "port": 40000,
        },
        "worker": {"id": 1, "ip": "10.0.0.1", "ifname": "eth0", "gpu_devices": CUDA},
        "model_path": paths[weights],
    }
    return deep_merge(base, over)


def _multi(paths: dict[str, str], counts: list[int], node: int, params: list[str] | None, **over: Any) -> dict[str, Any]:
    """A distributed instance over ``len(counts)`` workers seen from ``node`` (0 = leader)."""
    followers = [
        {"worker_id": i + 2, "worker_ip": f"10.0.0.{i + 2}", "gpu_indexes": list(range(count))}
        for i, count in enumerate(counts[1:])
    ]
    instance = {
        "gpu_indexes": list(range(counts[0])),
        "ports": over.pop("ports", [40000, 40001, 40002]),
        "distributed_servers": {"subordinate_workers": followers},
    }
    worker = {"id": node + 1, "ip": f"10.0.0.{node + 1}"}
    model = {"backend_parameters": params} if params is not None else {}
    return deep_merge(_spec(paths, instance=instance, worker=worker, model=model), over)


def _kv(**fields: Any) -> dict[str, Any]:
    return {"extended_kv_cache": {"enabled": True, **fields}}


def _claim(*gib: int) -> dict[str, Any]:
    return {"computed_resource_claim": {"vram": {i: g * GIB for i, g in enumerate(gib)}}}


def _single(paths: dict[str, str]) -> dict[str, dict[str, Any]]:
    s = lambda weights="short", **over: _spec(paths, weights, **over)  # noqa: E731
    return {
        "single-gpu": s(),
        "tp4": s(instance={"gpu_indexes": [0, 1, 2, 3]}),
        "vllm-0.16-access-log": s(model={"backend_version": "0.16.0"}),
        "long-context-capped": s("long"),
        "user-max-model-len": s("long", model={"backend_parameters": ["--max-model-len=32768"]}),
        "rope-without-type": s("rope_untyped"),
        "rope-yarn": s("rope_yarn"),
        "rope-linear": s("rope_linear"),
        "rope-default-factor": s("rope_default"),
        "rope-mrope-no-factor": s("rope_mrope"),
        "rope-per-attention-type": s("rope_nested"),
        "rope-parameters-linear": s("rope_parameters_linear"),
        "rope-yarn-no-original": s("rope_yarn_no_original"),
        "multimodal-text-config": s("text_config"),
        "speculative-ngram": s(model={"speculative_config": {
            "enabled": True, "algorithm": "ngram", "num_draft_tokens": 4, "ngram_max_match_length": 3}}),
        "omni-image": s("long", model={"categories": ["image"]}),
        "audio": s("long", model={"categories": ["speech_to_text"]}),
        "ascend-310p": s(worker={"gpu_devices": ASCEND_310P}),
        "ascend-910b": s(instance={"gpu_indexes": [0, 1]}, worker={"gpu_devices": ASCEND_910B}),
        "rocm": s(worker={"gpu_devices": ROCM}),
        "argv-pasted-line": s(model={"backend_parameters": [
            "--max-model-len 65536 --enforce-eager \\\n --gpu-memory-utilization 0.8"]}),
        "argv-quoted-value": s(model={"backend_parameters": ['--chat-template="a b"', "--dtype", "half"]}),
        "argv-json-equals": s(model={"backend_parameters": ['--speculative-config={"method": "ngram"}']}),
        "argv-user-host-port": s(model={"backend_parameters": ["--host=0.0.0.0", "--port", "9000"]}),
        "argv-served-name": s(model={"backend_parameters": ["--served-model-name", "alias"]}),
        "instance-port-only": s(instance={"ports": [], "port": 40100}),
        "argv-pairs-and-flags": s(instance={"gpu_indexes": [0, 1, 2, 3]}, model={"backend_parameters": [
            "--tensor-parallel-size=2", "--enable-prefix-caching", "--max-num-seqs", "4", "--temperature", "-0.5"]}),
        "argv-short-key": s(instance={"gpu_indexes": [0, 1]}, model={"backend_parameters": ["-tp 2", "--trust-remote-code"]}),
        "argv-multi-value": s(model={"backend_parameters": ["--lora-modules a=/a b=/b", "--chat-template",
                                                            "/path with space/t.jinja"]}),
        "argv-json-token": s(model={"backend_parameters": ["--speculative-config", '{"method": "ngram"}',
                                                           "--hf-overrides '{\"a\": {\"b\": 1}}'"]}),
        "argv-json-after-space": s(model={"backend_parameters": ['--override-generation-config {"temperature": 0.6}']}),
        "argv-empty-entries": s(model={"backend_parameters": ["", "   ", "--dtype half  "]}),
        "gpu-type-filter": s(instance={"gpu_type": "cuda", "gpu_indexes": [1, 0]}),
    }


def _lora(paths: dict[str, str]) -> dict[str, dict[str, Any]]:
    def loras(*names: str) -> list[dict[str, str]]:
        return [{"lora_name": f"m:{n}", "path": paths[n]} for n in names]

    s = lambda **over: _spec(paths, **over)  # noqa: E731
    return {
        "lora-two-adapters": s(instance={"mounted_loras": loras("lora_r16", "lora_pattern")}),
        "lora-user-modules": s(instance={"mounted_loras": loras("lora_r16")},
                               model={"backend_parameters": ["--lora-modules", "x=/x"]}),
        "lora-user-rank": s(instance={"mounted_loras": loras("lora_r16")},
                            model={"backend_parameters": ["--max-lora-rank=64"]}),
        "lora-unreadable": s(instance={"mounted_loras": loras("lora_unreadable")}),
        "lora-rank-rounded": s(instance={"mounted_loras": loras("lora_r300")}),
        "lora-rank-beyond": s(instance={"mounted_loras": loras("lora_r1024")}),
        "lora-user-enable": s(instance={"mounted_loras": loras("lora_r16")},
                              model={"backend_parameters": ["--enable-lora", "--max-loras", "4"]}),
    }


def _kv_cases(paths: dict[str, str]) -> dict[str, dict[str, Any]]:
    s = lambda **over: _spec(paths, **over)  # noqa: E731
    shared = {"cache_service_id": 3, "injected": True, "env": {"LMCACHE_REMOTE_URL": "lm://cache:65432"},
              "args": ["--kv-transfer-config", '{"kv_connector":"LMCacheConnectorV1","kv_role":"kv_both"}'],
              "files": {"/etc/lmcache/config.yaml": "chunk_size: 256\nremote_url: lm://cache:65432"}}
    pd = '{"kv_connector":"NixlConnector","kv_role":"kv_both","kv_load_failure_policy":"recompute"}'
    return {
        "kv-local-ratio": s(model=_kv(), instance=_claim(32)),
        "kv-local-ratio-fraction": s(model=_kv(ram_ratio=1.1), instance=_claim(10)),
        "kv-local-ram-size": s(model=_kv(ram_size=64, chunk_size=512), instance=_claim(32)),
        "kv-local-no-claim": s(model=_kv()),
        "kv-rocm": s(model=_kv(), instance=_claim(16), worker={"gpu_devices": ROCM}),
        "kv-ascend-per-rank": s(model=_kv(chunk_size=256, **{}) | {"backend_version": "0.21.0"},
                                instance={"gpu_indexes": [0, 1], **_claim(32, 32)},
                                worker={"gpu_devices": ASCEND_910B}),
        "kv-ascend-too-old": s(model=_kv() | {"backend_version": "0.20.0"}, instance=_claim(32),
                               worker={"gpu_devices": ASCEND_910B}),
        "kv-ascend-310p": s(model=_kv(), instance=_claim(16), worker={"gpu_devices": ASCEND_310P}),
        "kv-shared-injected": s(model=_kv(mode="shared", cache_service_id=3), instance={"cache_config": shared}),
        "kv-shared-degraded": s(model=_kv(mode="shared", cache_service_id=3),
                                instance={"cache_config": {"cache_service_id": 3, "injected": False,
                                                           "reason": "no endpoint"}}),
        "kv-shared-host-ipc-off": s(model=_kv(mode="shared", cache_service_id=3) | {"env": {"GPUSTACK_HOST_IPC": "0"}},
                                    instance={"cache_config": shared}),
        "kv-user-connector-composed": s(model=_kv() | {"backend_parameters": ["--kv-transfer-config", pd]},
                                        instance=_claim(32)),
        "kv-prefill-role-pd-first": s(model=_kv() | {"backend_parameters": [f"--kv-transfer-config={pd}"]},
                                      instance={"role": "prefill", **_claim(32)}),
        "kv-cpu-instance": s(model=_kv() | {"image_name": "vllm-cpu:local"}, instance={"gpu_indexes": []},
                             worker={"gpu_devices": []}),
    }


def _mp(paths: dict[str, str]) -> dict[str, dict[str, Any]]:
    mp = ["--distributed-executor-backend", "mp"]
    m = lambda counts, node, params=mp, **over: _multi(paths, counts, node, params, **over)  # noqa: E731
    return {
        "mp-dp-only-leader": m([2, 2], 0),
        "mp-dp-only-follower": m([2, 2], 1),
        "mp-dp-only-uneven-follower": m([4, 2], 1),
        "mp-dp-only-vllm-port": m([2, 2], 1, ports=[40000, 40001, 40002, 40003, 40004]),
        "mp-only-leader": m([2, 2], 0, [*mp, "--tp", "4"]),
        "mp-only-follower": m([2, 2], 1, [*mp, "--tp", "4"]),
        "mp-nested-follower": m([2, 2, 2, 2], 2, [*mp, "--tensor-parallel-size=4"]),
        "mp-nested-leader": m([2, 2, 2, 2], 0, [*mp, "--tensor-parallel-size=4"]),
        "mp-from-image-name": m([2, 2], 1, None, model={"image_name": "my/vllm:cuda12.8"}),
        "mp-from-custom-version": m([2, 2], 0, None, model={"backend_version": "0.19.0-custom"}),
        "mp-hybrid-lb-follower": m([2, 2], 1, [*mp, "--data-parallel-hybrid-lb"]),
        "mp-user-dp": m([4, 4], 1, [*mp, "--data-parallel-size", "4"]),
        "mp-refused-uneven-span": m([4, 2], 0, [*mp, "--tp", "4", "--pp", "2"]),
        "mp-refused-dp-mismatch": m([2, 2], 0, [*mp, "--dp", "3"]),
        "mp-refused-two-ports": m([2, 2], 0, ports=[40000, 40001]),
        "mp-ascend-follower": m([2, 2], 1, worker={"gpu_devices": ASCEND_910B}),
        "mp-user-dpl": m([4, 4], 1, [*mp, "--dpl", "2"]),
        "mp-user-pp": m([2, 2], 0, [*mp, "--pp", "2"]),
        "mp-prefill-context-parallel": m([4, 4], 1, [*mp, "--prefill-context-parallel-size", "2"]),
        "mp-with-kv-cache": m([2, 2], 1, model={"extended_kv_cache": {"enabled": True}}, instance=_claim(20, 20)),
        "ray-leader": m([2, 2], 0, None),
        "ray-follower-dp": m([2, 2], 1, ["--dp", "2"]),
        "ray-leader-dp": m([2, 2], 0, ["--dp", "2"]),
        "ray-follower": m([2, 2], 1, None),
        "ray-custom-old-version": m([2, 2], 0, None, model={"backend_version": "0.11.0-custom"}),
    }


def _templates(paths: dict[str, str]) -> dict[str, dict[str, Any]]:
    s = lambda **over: _spec(paths, **over)  # noqa: E731
    return {
        "placeholder-env": s(model={"env": {"SIDE_CHANNEL": "tcp://{{worker_ip}}:{{port}}", "PLAIN": "x"}}),
        "placeholder-parameters": s(instance={"gpu_indexes": [2, 3]}, model={"backend_parameters": [
            "--alias={{model_name}}-{{gpu_count}}", "--devices", "{{gpu_ids}}"]}),
        "placeholder-unknown": s(model={"env": {"X": "{{nope}}", "Y": "{{ worker_ip }}"}}),
        "placeholder-role": s(instance={"role": "decode", "group_id": "g1"},
                              model={"env": {"R": "{{role}}/{{group_id}}"}}),
        "run-command": s(model={"run_command": "{{model_path}} --port {{port}} --trust-remote-code"}),
        "run-command-env-names": s(model={"run_command": "{{model_path}} --tag {{TAG}} {{role}}", "env": {"TAG": "v1"}}),
        "placeholder-empty-token": s(instance={"gpu_indexes": []}, worker={"gpu_devices": []},
                                     model={"image_name": "vllm-cpu:local",
                                            "backend_parameters": ["--devices", "{{gpu_ids}}", "--ids={{gpu_ids}}"]}),
        "runtime-user-from-env": s(model={"env": {"GPUSTACK_MODEL_RUNTIME_UID": "1000",
                                                  "GPUSTACK_MODEL_RUNTIME_GID": "x",
                                                  "GPUSTACK_MODEL_RUNTIME_SHM_SIZE_GIB": "2.5"}}),
    }


def _vgpu_and_compat(paths: dict[str, str]) -> dict[str, dict[str, Any]]:
    s = lambda **over: _spec(paths, **over)  # noqa: E731
    runner = {"image_name": "gpustack/runner:cuda12.9-vllm0.11.0"}
    return {
        "vgpu-sliced": s(model={"gpu_type_selector": {"type": "a100-pool", "accelerator_sliced_memory_percentage": 40}}),
        "vgpu-partitioned": s(model={"gpu_type_selector": {"type": "mig", "accelerator_partitioned_profile": "1g.5gb"}}),
        "vgpu-whole-cards": s(model={"gpu_type_selector": {"type": "h100"}}, instance=_claim(80, 80)),
        "cuda-compat-model-env": s(model=runner | {"env": {"GPUSTACK_ENABLE_CUDA_MINOR_VERSION_COMPATIBILITY": "true"}}),
        "cuda-compat-config": s(model=runner, config={"cuda_minor_version_compatibility": True}),
        "cuda-compat-newer-host": s(model=runner | {"env": {"GPUSTACK_ENABLE_CUDA_MINOR_VERSION_COMPATIBILITY": "1"}},
                                    worker={"gpu_devices": [dict(d, runtime_version="13.0") for d in CUDA]}),
        "pypi-packages": s(model={"env": {"PYPI_PACKAGES_INSTALL": "lmcache==0.3"}}),
        "script-disabled": s(model={"env": {"PYPI_PACKAGES_INSTALL": "x",
                                            "GPUSTACK_MODEL_SERVING_COMMAND_SCRIPT_DISABLED": "1"}}),
    }


def all_cases(paths: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Every case by name."""
    out: dict[str, dict[str, Any]] = {}
    for group in (_single, _lora, _kv_cases, _mp, _templates, _vgpu_and_compat):
        out.update(group(paths))
    return out


def gpustack_env(spec: dict[str, Any]) -> dict[str, str]:
    """The GPUStack worker environment standing for berth's config switches."""
    config = spec.get("config") or {}
    env: dict[str, str] = {}
    if config.get("cuda_minor_version_compatibility"):
        env["GPUSTACK_ENABLE_CUDA_MINOR_VERSION_COMPATIBILITY"] = "true"
    if config.get("host_ipc") is not None:
        env["GPUSTACK_HOST_IPC"] = "true" if config["host_ipc"] else "false"
    return env
