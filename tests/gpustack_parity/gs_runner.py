"""Runs GPUStack 2.3.0's vLLM planner on berth-shaped cases (inside GPUStack's own venv).

Reads a JSON list of cases on stdin, writes a JSON list of results on stdout. Each case is
``{"spec": <berth DeploymentSpec dict>, "image": <resolved image>, "gpustack_env": {...}}``.
Only the boundary is stubbed: no server, no clientset, no image catalog, no container engine.
GPUStack's own code decides every argument, env value and workload field.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from types import SimpleNamespace


def _load(case: dict) -> dict:
    for key in [k for k in os.environ if k.startswith("GPUSTACK_")]:
        del os.environ[key]
    for key, value in (case.get("gpustack_env") or {}).items():
        os.environ[key] = value
    import importlib

    import gpustack.envs as gs_envs

    importlib.reload(gs_envs)
    from gpustack.schemas.models import ModelCreate as Model, ModelInstanceCreate as ModelInstance
    from gpustack.schemas.workers import GPUDeviceStatus
    from gpustack.worker.backends import base as gs_base
    from gpustack.worker.backends import vllm as gs_vllm

    gs_base.envs = gs_envs
    spec = case["spec"]
    captured: dict = {}

    def create_workload(plan):
        captured["plan"] = plan

    gs_vllm.create_workload = create_workload
    gs_base.transform_workload_plan = lambda cfg, workload, fallback=None: workload

    model_data = dict(spec["model"])
    model_data.setdefault("source", "local_path")
    model_data.setdefault("local_path", spec["model_path"])
    model = Model.model_validate(model_data)
    instance_data = dict(spec["instance"])
    instance_data.setdefault("source", "local_path")
    instance_data.setdefault("local_path", spec["model_path"])
    instance = ModelInstance.model_validate(instance_data)
    worker_spec = spec["worker"]
    devices = [GPUDeviceStatus.model_validate(d) for d in worker_spec.get("gpu_devices", [])]
    worker = SimpleNamespace(
        id=worker_spec.get("id"),
        ip=worker_spec["ip"],
        ifname=worker_spec.get("ifname", "eth0"),
        status=SimpleNamespace(gpu_devices=devices),
    )
    config = spec.get("config") or {}
    cfg = SimpleNamespace(
        cache_dir=config.get("cache_dir"),
        ray_port_range=config.get("ray_port_range", "41000-41999"),
    )

    class Backend:
        parameter_format = None
        version_configs = SimpleNamespace(root={})

        def get_container_entrypoint(self, version=None):
            return None

        def get_version_config(self, version):
            raise KeyError(version)

        def get_run_command(self, version=None):
            return None

        def replace_command_param(self, **kwargs):
            from gpustack.schemas.inference_backend import InferenceBackend

            return InferenceBackend.replace_command_param(self, **kwargs)

    server = gs_vllm.VLLMServer.__new__(gs_vllm.VLLMServer)
    server._model = model
    server._model_spec = None
    server._model_instance = instance
    server._worker = worker
    server._config = cfg
    server._model_path = spec["model_path"]
    server._draft_model_path = spec.get("draft_model_path")
    server._clientset = None
    server._fallback_registry = None
    server.inference_backend = Backend()
    server._pd_injection_cache = None
    server._pd_injection_resolved = True
    server._update_model_instance = lambda *a, **k: None
    server._get_configured_image = lambda backend=None: case["image"]
    server._resolve_image = lambda backend=None: (case["image"], None)
    for inherited in ("LC_CTYPE", "TRANSFORMERS_NO_ADVISORY_WARNINGS"):
        os.environ.pop(inherited, None)  # set by the imports above, not by planning
    server._start()
    plan = captured["plan"]
    return {"workload": json.loads(json.dumps(plan.to_dict(), default=_plain))}


def _plain(value):
    if hasattr(value, "value"):
        return value.value
    return str(value)


def main() -> None:
    import logging

    logging.disable(logging.CRITICAL)
    cases = json.load(sys.stdin)
    results = []
    for case in cases:
        try:
            results.append(_load(case))
        except BaseException as exc:  # noqa: BLE001 - reported, compared as an error
            results.append({"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()})
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
