"""Spec loading: strict where berth owns the shape, tolerant (but reporting) for GPUStack's."""

import pytest
from pydantic import ValidationError

from berth.schemas import DeploymentSpec, InstancePorts
from berth.schemas.errors import validation_messages
from tests.support.specs import BASE, make_spec


def messages(**over):
    with pytest.raises(ValidationError) as info:
        make_spec(**over)
    return validation_messages(info.value)


def test_named_ports_from_scheduler_list():
    assert InstancePorts.from_list([8000]) == InstancePorts(http=8000)
    assert InstancePorts.from_list([8000, 8001, 8002, 8003]) == InstancePorts(
        http=8000, dp_rpc=8001, master=8002, vllm_base=8003, distributed=8003
    )  # every port kept (issue 12)
    assert InstancePorts.from_list([8000, 8001, 8002]).vllm_base is None
    assert InstancePorts.from_list([], fallback=9000) == InstancePorts(http=9000)
    assert InstancePorts.from_list([8000, 8001, 8002, 8003, 8004, 8005]).extra == (8004,)
    assert InstancePorts.from_list(None) == InstancePorts()


def test_invalid_values_name_the_field():
    assert any(m.startswith("instance.gpu_indexes[0]") for m in messages(instance={"gpu_indexes": ["x"]}))
    assert any(m.startswith("model.backend_parameters") for m in messages(model={"backend_parameters": "--tp 2"}))
    assert any(m.startswith("instance.ports") for m in messages(instance={"ports": [70000]}))
    assert any(m.startswith("model.speculative_config.algorithm") for m in messages(
        model={"speculative_config": {"enabled": True, "algorithm": "medusa"}}))


def test_typo_in_berth_owned_section_is_an_error():
    found = messages(config={"cache_dri": "/x"})
    assert found == ["config.cache_dri: unknown field (check the spelling; see the documented fields)"]
    assert "modl_path" in messages(modl_path="/x")[0] or any("modl_path" in m for m in messages(modl_path="/x"))


def test_gpustack_extra_fields_are_kept_and_reported():
    spec = make_spec(model={"replicas": 2, "source": "huggingface"}, worker={"status": {"x": 1}})
    assert set(spec.unknown_fields()) == {"model.replicas", "model.source", "worker.status"}


@pytest.mark.parametrize("path", ["relative/../x", "/models/../etc", "/models/a\x00b", "a b"])
def test_model_path_checked(path):
    assert any(m.startswith("model_path") for m in messages(model_path=path))


def test_model_path_normalised_and_hub_ids():
    assert make_spec(model_path="/models//org/./m/").model_path == "/models/org/m"
    assert make_spec(model_path="facebook/opt-125m").model_path == "facebook/opt-125m"


def test_config_ray_range_and_shm_fallback():
    assert any("ray_port_range" in m for m in messages(config={"ray_port_range": "41000-41005"}))
    assert make_spec(config={"shm_size_gib": "lots"}).config.shm_size_gib == 10.0
    assert make_spec(config={"shm_size_gib": -1}).config.shm_size_gib == 10.0


def test_env_values_coerced_to_strings():
    spec = make_spec(model={"env": {"A": 1, "B": True, "C": "x"}})
    assert spec.model.env == {"A": "1", "B": "1", "C": "x"}


def test_from_text_yaml_and_json():
    import json

    spec = DeploymentSpec.from_text(json.dumps(BASE))
    assert spec.instance.name == "m-1"
    with pytest.raises(ValueError, match="mapping"):
        DeploymentSpec.from_text("- a\n- b")
    with pytest.raises(ValueError, match="not valid YAML"):
        DeploymentSpec.from_text("model: [")
