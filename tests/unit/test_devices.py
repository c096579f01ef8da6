"""Plan GPU resources -> visible-devices variables for local processes."""

from __future__ import annotations

import pytest

from berth.deployers import _devices
from berth.deployers._devices import visible_devices_env, visible_devices_map
from berth.deployers.base import InvalidWorkload


def test_nvidia_indexes() -> None:
    assert visible_devices_env({"nvidia.com/devices": "0,1"}) == {"CUDA_VISIBLE_DEVICES": "0,1"}


def test_nvidia_uuids_pass_through() -> None:
    uuids = "GPU-8f6c2a1e-0000-1111-2222-333344445555,MIG-1a2b3c4d-5e6f"
    assert visible_devices_env({"nvidia.com/devices": uuids}) == {"CUDA_VISIBLE_DEVICES": uuids}


def test_amd_sets_hip_and_rocr() -> None:
    env = visible_devices_env({"amd.com/devices": "2"})
    assert env == {"HIP_VISIBLE_DEVICES": "2", "ROCR_VISIBLE_DEVICES": "2"}


def test_ascend_sets_rt_visible_devices() -> None:
    env = visible_devices_env({"huawei.com/devices": "4,5"})
    assert env["ASCEND_RT_VISIBLE_DEVICES"] == "4,5"


def test_whitespace_is_normalised() -> None:
    assert visible_devices_env({"nvidia.com/devices": " 0 , 3 "}) == {"CUDA_VISIBLE_DEVICES": "0,3"}


def test_all_and_non_device_keys_set_nothing() -> None:
    assert visible_devices_env({"nvidia.com/devices": "all", "cpu": "4", "memory": "1Gi"}) == {}
    assert visible_devices_env(None) == {}
    assert visible_devices_env({}) == {}


def test_unknown_device_key_is_named() -> None:
    with pytest.raises(InvalidWorkload, match="example.com/devices"):
        visible_devices_env({"example.com/devices": "0"})


@pytest.mark.parametrize("value", ["", "0,,1", "0;rm -rf /", "$(id)"])
def test_malformed_value_is_rejected(value: str) -> None:
    with pytest.raises(InvalidWorkload, match="nvidia.com/devices"):
        visible_devices_env({"nvidia.com/devices": value})


def test_conflicting_keys_for_one_variable() -> None:
    with pytest.raises(InvalidWorkload, match="CUDA_VISIBLE_DEVICES"):
        visible_devices_env({"nvidia.com/devices": "0", "metax-tech.com/devices": "1"})


def test_map_follows_gpustack_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    custom = {"nvidia.com/devices": ["CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"]}
    monkeypatch.setattr(
        _devices.runtime_envs, "GPUSTACK_RUNTIME_DEPLOY_RESOURCE_KEY_MAP_BACKEND_VISIBLE_DEVICES", custom
    )
    assert visible_devices_map()["nvidia.com/devices"] == ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES")
    assert visible_devices_map()["amd.com/devices"] == ("ROCR_VISIBLE_DEVICES",)
    env = visible_devices_env({"nvidia.com/devices": "1"})
    assert env == {"CUDA_VISIBLE_DEVICES": "1", "NVIDIA_VISIBLE_DEVICES": "1"}


def test_public_names() -> None:
    assert set(_devices.__all__) == {
        "ALL_DEVICES",
        "EXTRA_VISIBLE_DEVICES",
        "normalize_devices",
        "visible_devices_env",
        "visible_devices_map",
    }
