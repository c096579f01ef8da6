"""VLLMServer's argument rules, in the seed's order."""

import json

import pytest

from berth.backends import PlanError
from tests.support.specs import distributed, make_plan

TAIL = ["--host", "10.0.0.1", "--port", "40000", "--served-model-name", "m"]


def write_config(tmp_path, **config):
    model_dir = tmp_path / "org" / "m"
    model_dir.mkdir(parents=True)
    (model_dir / "config.json").write_text(json.dumps(config))
    return str(model_dir)


def test_minimal_single_gpu_old_version():
    plan = make_plan(model={"backend_version": "0.9.0"})
    assert plan.command == ["vllm", "serve"]
    assert plan.args == ["/models/org/m", *TAIL]
    assert plan.injected == TAIL


def test_unknown_version_injects_no_gated_flags():
    plan = make_plan(model={"backend_version": None})
    assert plan.args == ["/models/org/m", *TAIL]


def test_version_gates():
    assert "--enable-prompt-tokens-details" in make_plan(model={"backend_version": "0.9.0.1"}).args
    assert "--enable-prompt-tokens-details" not in make_plan(model={"backend_version": "0.9.0"}).args
    plan = make_plan(model={"backend_version": "0.16.0"})
    assert plan.args == [
        "/models/org/m", "--disable-access-log-for-endpoints", "/metrics",
        "--enable-prompt-tokens-details", *TAIL,
    ]
    assert "--disable-access-log-for-endpoints" not in make_plan(model={"backend_version": "0.15.9"}).args


@pytest.mark.parametrize(
    "params",
    [
        ["--disable-access-log-for-endpoints", "/health"],
        ["--disable-access-log-for-endpoints=/health,/metrics"],
    ],
)
def test_user_access_log_filter_wins(params):
    plan = make_plan(model={"backend_version": "0.16.0", "backend_parameters": params})
    assert plan.args.count("--disable-access-log-for-endpoints") + sum(
        a.startswith("--disable-access-log-for-endpoints=") for a in plan.args
    ) == 1
    assert "/metrics" not in plan.injected


@pytest.mark.parametrize(
    "params",
    [["--enable-prompt-tokens-details"], ["--no-enable-prompt-tokens-details"], ["--enable-prompt-tokens-details=false"]],
)
def test_user_prompt_tokens_details_wins(params):
    plan = make_plan(model={"backend_version": "0.11.0", "backend_parameters": params})
    assert "--enable-prompt-tokens-details" not in plan.injected


def test_max_model_len_capped_when_derived_longer(tmp_path):
    path = write_config(tmp_path, max_position_embeddings=32768)
    plan = make_plan(model={"backend_version": "0.9.0"}, model_path=path)
    assert plan.args == [path, "--max-model-len", "8192", *TAIL]


def test_max_model_len_not_capped_when_short_or_unknown(tmp_path):
    path = write_config(tmp_path, max_position_embeddings=8192)
    assert "--max-model-len" not in make_plan(model_path=path).args
    assert "--max-model-len" not in make_plan().args  # no config.json to read


def test_max_model_len_smallest_key_and_rope(tmp_path):
    path = write_config(
        tmp_path, max_position_embeddings=4096, seq_length=2048, rope_scaling={"type": "linear", "factor": 8.0}
    )
    # min(4096, 2048) * 8 = 16384 > 8192
    assert "--max-model-len" in make_plan(model_path=path).args


def test_max_model_len_user_value_wins(tmp_path):
    path = write_config(tmp_path, max_position_embeddings=131072)
    plan = make_plan(model={"backend_parameters": ["--max-model-len 65536"]}, model_path=path)
    assert plan.args.count("--max-model-len") == 1 and "65536" in plan.args
    assert "--max-model-len" not in plan.injected


@pytest.mark.parametrize("categories", [["speech_to_text"], ["text_to_speech"], ["image"]])
def test_max_model_len_skipped_for_audio_and_omni(tmp_path, categories):
    path = write_config(tmp_path, max_position_embeddings=131072)
    plan = make_plan(model={"categories": categories}, model_path=path)
    assert "--max-model-len" not in plan.args


def test_omni_flag():
    assert make_plan(model={"categories": ["image"], "backend_version": "0.9.0"}).args[:2] == ["/models/org/m", "--omni"]
    assert make_plan(model={"categories": ["text_to_speech"]}).args[1] == "--omni"
    plan = make_plan(model={"categories": ["llm"], "backend_parameters": ["--omni"]})
    assert plan.args.count("--omni") == 1 and "--omni" not in plan.injected
    assert "--omni" not in make_plan(model={"categories": ["speech_to_text"]}).args


def test_single_worker_multi_gpu_tensor_parallel():
    plan = make_plan(model={"backend_version": "0.9.0"}, instance={"gpu_indexes": [0, 1, 2, 3]})
    assert plan.args == ["/models/org/m", "--tensor-parallel-size", "4", *TAIL]


@pytest.mark.parametrize(
    "params", [["--tp", "2"], ["-tp=2"], ["--pipeline-parallel-size 2"], ["--pp=4"], ["--dp", "2"], ["--data-parallel-size=2"]]
)
def test_user_parallelism_disables_auto(params):
    plan = make_plan(instance={"gpu_indexes": [0, 1, 2, 3]}, model={"backend_parameters": params})
    assert "--tensor-parallel-size" not in plan.injected and "--pipeline-parallel-size" not in plan.injected


def test_distributed_equal_gpus():
    plan = distributed(model={"backend_version": "0.9.0"})
    assert plan.args == [
        "/models/org/m", "--tensor-parallel-size", "2", "--pipeline-parallel-size", "2",
        "--distributed-executor-backend", "ray", *TAIL,
    ]
    assert plan.role == "leader"


def test_distributed_unequal_gpus_falls_back_to_pipeline():
    plan = distributed(follower_gpus=[0, 1, 2, 3], model={"backend_version": "0.9.0"})
    assert plan.args[1:5] == ["--tensor-parallel-size", "1", "--pipeline-parallel-size", "6"]


def test_data_parallel_over_ray_with_rpc_port():
    plan = distributed(model={"backend_version": "0.9.0", "backend_parameters": ["--data-parallel-size", "2"]})
    assert plan.args == [
        "/models/org/m", "--distributed-executor-backend", "ray",
        "--data-parallel-backend", "ray", "--data-parallel-rpc-port", "40001",
        "--data-parallel-size", "2", *TAIL,
    ]
    assert plan.ports.dp_rpc == 40001 and plan.ports.distributed == 40002


def test_data_parallel_user_backend_kept():
    plan = distributed(model={"backend_parameters": ["--dp 2", "--dpb mp"]})
    assert "--data-parallel-backend" not in plan.injected
    assert plan.injected[plan.injected.index("--data-parallel-rpc-port") + 1] == "40001"


def test_data_parallel_single_worker_is_left_to_vllm():
    plan = make_plan(model={"backend_parameters": ["--dp", "2"]})
    assert "--data-parallel-rpc-port" not in plan.args


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"algorithm": "eagle3", "num_draft_tokens": 3, "draft_model": "d"},
         '{"method": "eagle3", "num_speculative_tokens": 3, "model": "/models/d/draft"}'),
        ({"algorithm": "mtp", "num_draft_tokens": 1}, '{"method": "mtp", "num_speculative_tokens": 1}'),
        ({"algorithm": "ngram", "num_draft_tokens": 5, "ngram_min_match_length": 2, "ngram_max_match_length": 4},
         '{"method": "ngram", "num_speculative_tokens": 5, "prompt_lookup_max": 4, "prompt_lookup_min": 2}'),
        ({"algorithm": "ngram"}, '{"method": "ngram"}'),
    ],
)
def test_speculative_config_json(config, expected):
    plan = make_plan(
        model={"backend_version": "0.9.0", "speculative_config": {"enabled": True, **config}},
        draft_model_path="/models/d/draft",
    )
    assert plan.args == ["/models/org/m", "--speculative-config", expected, *TAIL]


def test_speculative_disabled_or_without_draft_path():
    assert "--speculative-config" not in make_plan(model={"speculative_config": {"enabled": False, "algorithm": "mtp"}}).args
    plan = make_plan(model={"speculative_config": {"enabled": True, "algorithm": "eagle3", "draft_model": "d"}})
    assert plan.args[plan.args.index("--speculative-config") + 1] == '{"method": "eagle3"}'


def test_lmcache_kv_transfer_on_nvidia_and_amd_only():
    kv = {"extended_kv_cache": {"enabled": True}, "backend_version": "0.9.0"}
    expected = '{"kv_connector":"LMCacheConnectorV1","kv_role":"kv_both"}'
    assert make_plan(model=kv).args == ["/models/org/m", "--kv-transfer-config", expected, *TAIL]
    amd = {"gpu_devices": [{"index": 0, "vendor": "amd"}]}
    assert expected in make_plan(model=kv, worker=amd).args
    ascend = {"gpu_devices": [{"index": 0, "vendor": "ascend", "arch_family": "Ascend910B"}]}
    assert "--kv-transfer-config" not in make_plan(model=kv, worker=ascend).args


def test_ascend_310p_eager_and_float16():
    worker = {"gpu_devices": [{"index": 0, "vendor": "ascend", "arch_family": "Ascend310P3"}]}
    plan = make_plan(model={"backend_version": "0.9.0"}, worker=worker)
    assert plan.args == ["/models/org/m", "--enforce-eager", "--dtype", "float16", *TAIL]
    worker910 = {"gpu_devices": [{"index": 0, "vendor": "ascend", "arch_family": "Ascend910B3"}]}
    assert "--enforce-eager" not in make_plan(worker=worker910).args


def test_user_parameters_after_injected_and_host_port_name_only_when_absent():
    params = ["--host 0.0.0.0", "--port=9000", "--served-model-name", "alias", "--enable-prefix-caching"]
    plan = make_plan(model={"backend_version": "0.9.0", "backend_parameters": params})
    assert plan.args == ["/models/org/m", "--host", "0.0.0.0", "--port=9000", "--served-model-name", "alias",
                         "--enable-prefix-caching"]
    assert plan.injected == []


def test_full_order_of_rules(tmp_path):
    path = write_config(tmp_path, max_position_embeddings=40960)
    plan = make_plan(
        model={
            "backend_version": "0.16.0",
            "backend_parameters": ["--enable-prefix-caching"],
            "speculative_config": {"enabled": True, "algorithm": "mtp", "num_draft_tokens": 2},
            "extended_kv_cache": {"enabled": True},
        },
        instance={"gpu_indexes": [0, 1]},
        model_path=path,
    )
    assert plan.args == [
        path,
        "--max-model-len", "8192",
        "--tensor-parallel-size", "2",
        "--speculative-config", '{"method": "mtp", "num_speculative_tokens": 2}',
        "--disable-access-log-for-endpoints", "/metrics",
        "--enable-prompt-tokens-details",
        "--kv-transfer-config", '{"kv_connector":"LMCacheConnectorV1","kv_role":"kv_both"}',
        "--enable-prefix-caching",
        *TAIL,
    ]
    assert "--enable-prefix-caching" not in plan.injected
    assert plan.injected[-6:] == TAIL


def test_user_parameters_flattened_from_pasted_lines():
    pasted = '--max-num-seqs 8 \\\n --speculative-config {"method": "ngram", "num_speculative_tokens": 3}'
    plan = make_plan(model={"backend_version": "0.9.0", "backend_parameters": [pasted]})
    assert plan.args[1:5] == ["--max-num-seqs", "8", "--speculative-config",
                              '{"method": "ngram", "num_speculative_tokens": 3}']


def test_ports_are_required():
    with pytest.raises(PlanError, match="instance.ports"):
        make_plan(instance={"ports": []})
    with pytest.raises(PlanError, match="at least 2 ports"):
        distributed(instance={"ports": [40000]})


def test_unknown_gpu_index_is_named():
    with pytest.raises(PlanError, match=r"GPU indexes \[9\]"):
        make_plan(instance={"gpu_indexes": [9]})


def test_plan_is_pure_and_repeatable():
    a, b = make_plan(), make_plan()
    assert a.to_dict() == b.to_dict()
