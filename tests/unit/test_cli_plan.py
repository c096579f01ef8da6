"""`berth plan` on the shipped examples, JSON shape, masking and one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from berth.cli import app

EXAMPLES = sorted(Path(__file__).resolve().parents[2].joinpath("examples").glob("*.yaml"))
runner = CliRunner()


def test_examples_exist():
    names = {p.stem for p in EXAMPLES}
    assert {"single-gpu", "tp4", "speculative", "lmcache", "ascend-310p", "ray-leader", "ray-follower"} <= names
    assert {"mp-follower", "lora-shared-cache", "vgpu-slice"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_plan_every_example_as_json(path, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    result = runner.invoke(app, ["plan", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert {"command", "args", "env", "injected", "workload", "ports"} <= set(data)
    # the plan says what the run container really runs: a Ray follower joins the head
    expected = ["ray", "start"] if path.stem == "ray-follower" else ["vllm", "serve"]
    assert data["command"] == expected
    assert data["profile"] == "cluster"
    assert isinstance(data["env"], dict)
    assert data["workload"]["containers"][0]["name"] == "default"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_plan_every_example_as_text(path):
    result = runner.invoke(app, ["plan", str(path)])
    assert result.exit_code == 0, result.output
    assert "docker run" in result.output


def test_secrets_masked_unless_asked():
    lmcache = next(p for p in EXAMPLES if p.stem == "lmcache")
    text = runner.invoke(app, ["plan", str(lmcache)]).output
    as_json = runner.invoke(app, ["plan", str(lmcache), "--format", "json"]).output
    assert "hf_example_not_a_real_token" not in text + as_json
    shown = runner.invoke(app, ["plan", str(lmcache), "--format", "json", "--show-secrets"]).output
    assert json.loads(shown)["env"]["HF_TOKEN"] == "hf_example_not_a_real_token"


def test_json_keeps_ordinary_values(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "model: {name: m, backend_version: '0.9.0', backend_parameters: ['--max-num-batched-tokens 8192']}\n"
        "instance: {name: i, model_name: m, ports: [8000], gpu_indexes: [0], worker_id: 1}\n"
        "worker: {id: 1, ip: 1.2.3.4, gpu_devices: [{index: 0, vendor: nvidia}]}\nmodel_path: /m/x\n"
    )
    data = json.loads(runner.invoke(app, ["plan", str(spec), "--format", "json"]).output)
    assert data["args"][1:3] == ["--max-num-batched-tokens", "8192"]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "berth", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.subprocess
def test_missing_file_is_one_line():
    result = run_cli("plan", "/nonexistent/spec.yaml")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "not found" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.subprocess
def test_invalid_spec_names_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {name: m}\ninstance: {name: i, model_name: m, ports: [1]}\nworker: {ip: 1.2.3.4}\n"
                   "model_path: /m\nconfig: {ray_port_range: nonsense}\n")
    result = run_cli("plan", str(bad))
    assert result.returncode == 1 and "config.ray_port_range" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.subprocess
def test_unplannable_spec_is_one_line(tmp_path):
    bad = tmp_path / "cpu.yaml"
    bad.write_text("model: {name: m}\ninstance: {name: i, model_name: m, ports: [1]}\nworker: {ip: 1.2.3.4}\n"
                   "model_path: /m\n")
    result = run_cli("plan", str(bad))
    assert result.returncode == 1 and "config.images.cpu" in result.stderr
