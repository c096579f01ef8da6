"""Plan the same cases with GPUStack 2.3.0 and with berth; diff argv, env and workloads.

    PYTHONPATH=. .venv/bin/python -m tests.gpustack_parity.compare [--gpustack-python PATH] [-v] [CASE...]

GPUStack runs in its own venv (``.venv-gpustack`` beside berth's ``.venv`` by default, made by ``make gpustack``, or
``$BERTH_GPUSTACK_PYTHON``) as a subprocess with an empty environment; nothing of it is imported
here. A case matches when both refuse it, or when every compared field is equal, element by
element and in order: per container the name, image, full command line (entrypoint and
arguments: berth keeps the entrypoint in ``command`` and the options in ``args``, GPUStack joins
them; the process is the same), script, env (ordered), resources, mounts and ports; per workload
the name, host IPC, shm size and instance type.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from typing import Any

from berth.backends import PlanError, plan_spec
from berth.backends.plan import workload_to_dict
from berth.schemas import DeploymentSpec
from tests.gpustack_parity.cases import DELIBERATE, all_cases, fixtures, gpustack_env

#: make gpustack (scripts/setup_gpustack.sh) installs GPUStack 2.3.0 here, beside berth's .venv
DEFAULT_PYTHON = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), ".venv-gpustack", "bin", "python")
RUNNER = os.path.join(os.path.dirname(__file__), "gs_runner.py")


def gpustack_python() -> str | None:
    path = os.environ.get("BERTH_GPUSTACK_PYTHON", DEFAULT_PYTHON)
    return path if os.path.exists(path) else None


def _container(container: dict[str, Any]) -> dict[str, Any]:
    execution = container.get("execution") or {}
    return {
        "name": container["name"],
        "image": container["image"],
        "argv": [*(execution.get("command") or []), *(execution.get("args") or [])],
        "run_as": [execution.get("run_as_user"), execution.get("run_as_group")],
        "privileged": execution.get("privileged"),
        "command_script": execution.get("command_script"),
        "envs": [[e["name"], e["value"]] for e in container.get("envs") or []],
        "resources": container.get("resources") or {},
        "mounts": [[m["path"], m.get("volume")] for m in container.get("mounts") or []],
        "ports": [p["internal"] for p in container.get("ports") or []],
        "files": container.get("files") or [],
    }


def normalise(workload: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": workload["name"],
        "host_ipc": bool(workload.get("host_ipc")),
        "run_as": [workload.get("run_as_user"), workload.get("run_as_group")],
        "shm_size": workload.get("shm_size"),
        "instance_type": workload.get("instance_type"),
        "containers": [_container(c) for c in workload["containers"]],
    }


def berth_side(spec: dict[str, Any]) -> dict[str, Any]:
    try:
        plan = plan_spec(DeploymentSpec.model_validate(spec))
    except (PlanError, ValueError) as exc:
        return {"error": str(exc)}
    return {"workload": normalise(workload_to_dict(plan.workload)), "image": plan.image, "warnings": plan.warnings}


def gpustack_side(python: str, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    done = subprocess.run(
        [python, RUNNER], input=json.dumps(cases), capture_output=True, text=True, env={}, timeout=600, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"GPUStack's planner failed: {done.stderr[-2000:]}")
    results = json.loads(done.stdout)
    return [r if "error" in r else {"workload": normalise(r["workload"])} for r in results]


def diff(ours: Any, theirs: Any, path: str = "") -> list[str]:
    """Every difference, by path: ``containers[0].argv[5]: 'a' != 'b'``."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        out: list[str] = []
        for key in dict.fromkeys([*ours, *theirs]):
            out += diff(ours.get(key), theirs.get(key), f"{path}.{key}" if path else str(key))
        return out
    if isinstance(ours, list) and isinstance(theirs, list) and len(ours) == len(theirs):
        return [d for i, (a, b) in enumerate(zip(ours, theirs)) for d in diff(a, b, f"{path}[{i}]")]
    return [] if ours == theirs else [f"{path}: berth {ours!r} != gpustack {theirs!r}"]


def compare(names: list[str] | None = None, python: str | None = None) -> dict[str, list[str]]:
    """{case: differences} for every case (an empty list is a match)."""
    python = python or gpustack_python()
    if python is None:
        raise RuntimeError("no GPUStack 2.3.0 venv: set BERTH_GPUSTACK_PYTHON")
    with tempfile.TemporaryDirectory(prefix="berth-parity-") as root:
        cases = all_cases(fixtures(root))
        chosen = {n: cases[n] for n in (names or cases)}
        ours = {name: berth_side(spec) for name, spec in chosen.items()}
        images = [ours[n].get("image") or "vllm/vllm-openai:v0.11.0" for n in chosen]
        requests = [{"spec": s, "image": i, "gpustack_env": gpustack_env(s)} for s, i in zip(chosen.values(), images)]
        theirs = dict(zip(chosen, gpustack_side(python, requests)))
    report: dict[str, list[str]] = {}
    for name in chosen:
        a, b = ours[name], theirs[name]
        if "error" in a or "error" in b:
            both = "error" in a and "error" in b
            report[name] = [] if both else [f"refusal: berth {a.get('error')!r} / gpustack {b.get('error')!r}"]
        else:
            report[name] = diff(a["workload"], b["workload"])
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("cases", nargs="*")
    parser.add_argument("--gpustack-python", default=None)
    parser.add_argument("-v", "--verbose", action="store_true")
    options = parser.parse_args()
    report = compare(options.cases or None, options.gpustack_python)
    for name, differences in report.items():
        status = "match" if not differences else "deliberate" if name in DELIBERATE else "DIFF"
        print(f"{status:10} {name}")
        for line in differences if options.verbose or status == "DIFF" else []:
            print(f"           {line[:400]}")
    matched = sum(not d for d in report.values())
    unexplained = [n for n, d in report.items() if d and n not in DELIBERATE]
    print(f"\n{matched}/{len(report)} match element by element; deliberate: "
          + "; ".join(f"{k} ({v})" for k, v in DELIBERATE.items() if report.get(k)))
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
