"""Every public package's ``__all__`` is pinned name by name, and private modules define none.

A change to a public surface must show up here as a deliberate edit. ``berth.deployers._devices``
is the one private module that keeps an ``__all__``: ``test_devices`` pins it.
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import berth

PINNED: dict[str, set[str]] = {
    "berth": {"__version__"},
    "berth.client": {
        "ClientError", "LLMConfig", "LOG_LEVEL_ENV", "RequestTimeout", "ResponseOutput",
        "SamplingParamsError", "ServeConfig", "ServerError", "ServerStartError", "ServerUnavailable",
        "TokenLogprob", "VLLMClient", "VLLMServer", "VLLMService", "instance_base_url",
        "request_fields", "setup_logging",
    },
    "berth.worker": {
        "DeployFailed", "DeployerDown", "Event", "InstanceConflict", "InstanceNotFound",
        "InstanceRecord", "InstanceState", "InvalidRequest", "LauncherRequest", "Readiness",
        "ReadinessProbe", "Registry", "RegistryUnavailable", "ResourceExhausted", "ServeManager",
        "Settings", "WorkerError", "WorkerMetrics", "create_app", "launcher_status", "settings_table",
    },
    "berth.schemas": {
        "BerthConfig", "CacheConfigSnapshot", "ComputedResourceClaim", "ContainerStatus",
        "DeploymentSpec", "DistributedServers", "ExtendedKVCacheConfig", "GPUDevice",
        "GPUTypeSelector", "InstancePorts", "LogChunk", "Model", "ModelInstance", "MountedLoRA",
        "SpeculativeAlgorithm", "SpeculativeConfig", "SubordinateWorker", "Worker", "WorkloadState",
        "WorkloadStatus", "is_audio_model", "is_omni_model",
    },
    "berth.backends": {
        "InferenceServer", "NamedPorts", "PlanError", "RayPorts", "ServePlan", "VLLMServer",
        "get_backend", "plan_spec",
    },
    "berth.deployers": {
        "AUTO", "AutoDeployer", "Deployer", "DeployerError", "DeployerUnavailable", "INSTANCE_LABEL",
        "InvalidWorkload", "LocalDeployer", "MANAGED_LABEL", "MAX_NAME_LENGTH", "NAME_PATTERN",
        "RAY_HEAD_CONTAINER", "REGISTRY", "RUN_CONTAINER", "Registered", "STOPPED_BY_BERTH",
        "WorkloadExists", "WorkloadNotFound", "auto_members", "deployer_names", "get_deployer",
        "name_problem", "open_deployer", "run_dir_options",
    },
    "berth.utils": {
        "byte_to_gib", "compare_versions", "extend_args_no_exist", "find_bool_parameter",
        "find_int_parameter", "find_parameter", "flatten_to_argv", "format_backend_parameters",
        "has_parameter", "is_port_free", "is_secret_name", "mask_env", "parse_port_range",
    },
    "berth.testing": {
        "CPU_ENV", "build_tiny_model", "free_port", "serve_argv", "serve_plan", "tiny_model_path",
        "wait_http_ok",
    },
}
#: Private modules allowed an ``__all__``, with the test that pins it.
PRIVATE_WITH_ALL = {"berth.deployers._devices"}  # tests/unit/test_devices.py


@pytest.mark.parametrize("name", sorted(PINNED))
def test_public_all_is_pinned(name):
    module = importlib.import_module(name)
    assert len(module.__all__) == len(set(module.__all__)), f"{name}.__all__ repeats a name"
    assert set(module.__all__) == PINNED[name]
    assert [n for n in module.__all__ if not hasattr(module, n)] == []


def _private_modules() -> list[str]:
    found = []
    for info in pkgutil.walk_packages(berth.__path__, "berth."):
        if any(part.startswith("_") and not part.startswith("__") for part in info.name.split(".")):
            found.append(info.name)
    return found


def test_private_modules_define_no_all():
    private = _private_modules()
    assert "berth.deployers._stdlib.files" in private  # the walk reaches into private packages
    defining = [n for n in private if "__all__" in vars(importlib.import_module(n))]
    assert sorted(set(defining) - PRIVATE_WITH_ALL) == []
