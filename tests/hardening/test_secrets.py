"""A secret planted through both APIs and the CLI appears in nothing berth shows or writes for
people: API answers (create, list, get, plans), the watch stream, instance logs served by the
API (whole, by range, cut through the middle of a secret), ``/metrics``, the OpenAPI page,
berth's own log output (debug level), ``berth plan`` text and JSON.

Where secrets are kept on purpose, and how: the registry (``registry.db`` and its WAL) holds each
instance's spec with its env, because a restart after a crash needs it; it is created ``0600``
in a ``0700`` data dir. The instance's own output file (written by vLLM, not berth) is kept as
the engine wrote it, ``0600``; the API serves it with every secret overwritten byte for byte.
No other file under the data dir may hold a secret.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from berth.cli import app
from tests.hardening._fixtures import FAKE_ENTRYPOINT, spec_body
from tests.hardening._serve import ServeProcess

HF_TOKEN = "hf_PLANTEDsecretToken0123456789abc"
API_KEY = "sk-PLANTED-api-key-9876543210zyx"
PASSWORD = "pw-PLANTED-Passw0rd-5555"
SECRETS = (HF_TOKEN, API_KEY, PASSWORD)
KEPT_ON_PURPOSE = {"registry.db", "registry.db-wal", "registry.db-shm"}


def found_in(text: str | bytes) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    return [s for s in SECRETS if s.encode() in data]


@pytest.fixture
def worker(tmp_path):
    serve = ServeProcess(tmp_path, {"BERTH_RESTART_POLICY": "on-failure", "BERTH_RESTART_BACKOFF": "0.2",
                                    "BERTH_MAX_RESTARTS": "1"})
    serve.start()
    yield serve
    assert serve.close() == set()


def _plant(worker: ServeProcess, answers: list[bytes]) -> None:
    env = {"HF_TOKEN": HF_TOKEN, "DB_PASSWORD": PASSWORD}
    launcher = worker.http.put("/v2/vllm/instances/sec-l", json={
        "options": f"--model /models/m --served-model-name sec-l --api-key {API_KEY}", "env_vars": env})
    assert launcher.status_code == 201, launcher.text
    spec = spec_body("sec-s", env=env, backend_parameters=[f"--api-key={API_KEY}", "--exit-after", "1",
                                                             "--exit-code", "3"])
    created = worker.http.post("/v2/instances", json=spec)  # fails after 1 s: restart, reasons, exit codes
    assert created.status_code == 201, created.text
    bad = worker.http.put("/v2/vllm/instances/sec-bad", json={
        "options": f"--model /models/m --api-key {API_KEY}", "env_vars": {**env, "LD_PRELOAD": HF_TOKEN}})
    assert bad.status_code == 422
    answers += [launcher.content, created.content, bad.content]


def _logs(worker: ServeProcess, instance_id: str, answers: list[bytes]) -> None:
    whole = worker.http.get(f"/v2/vllm/instances/{instance_id}/log").content
    answers.append(whole)
    start = whole.find(b"*" * len(API_KEY))
    assert start >= 0, whole  # the key was in the log, and is masked in place
    for first in (start - 3, start + 5, start + len(API_KEY) - 2):
        answers.append(worker.http.get(f"/v2/vllm/instances/{instance_id}/log",
                                       headers={"Range": f"bytes={first}-{first + 8}"}).content)
    answers.append(worker.http.get(f"/v2/instances/{instance_id}/log", headers={"Range": "bytes=-4096"}).content)


def _collect(worker: ServeProcess, answers: list[bytes]) -> None:
    for url in ("/v2/vllm/instances", "/v2/vllm/instances?detail=false", "/v2/vllm/instances/sec-l",
                "/v2/instances", "/v2/instances/sec-l", "/v2/instances/sec-s", "/metrics", "/openapi.json", "/"):
        answers.append(worker.http.get(url).content)
    answers.append(worker.http.get("/v2/instances/watch?since=0&timeout=1").content)
    _logs(worker, "sec-l", answers)


@pytest.mark.subprocess
def test_planted_secrets_appear_in_nothing_berth_shows(worker):
    answers: list[bytes] = []
    _plant(worker, answers)
    worker.wait_state("sec-l", "running")
    worker.wait_state("sec-s", "running", restarts=1)
    worker.wait_state("sec-s", "failed", restarts=1)  # failed again, for good: reason and exit code recorded
    _collect(worker, answers)
    for answer in answers:
        assert found_in(answer) == [], answer[:500]
    worker.close()
    assert found_in(worker.log.read_bytes()) == [], "berth's own log holds a secret"
    assert "DEBUG" in worker.log.read_text()  # it did log at debug level
    _check_files(worker.data_dir)


def _check_files(data_dir: Path) -> None:
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    for path in data_dir.rglob("*"):
        if not path.is_file() or not found_in(path.read_bytes()):
            continue
        assert path.name in KEPT_ON_PURPOSE or path.suffix == ".log", f"{path} holds a secret"
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, f"{path} holds a secret and others may read it"


def _spec_file(tmp_path: Path) -> Path:
    body = spec_body("plan-1", env={"HF_TOKEN": HF_TOKEN, "AWS_SECRET_ACCESS_KEY": PASSWORD},
                     backend_parameters=["--api-key", API_KEY])
    body["config"] = {"entrypoint": FAKE_ENTRYPOINT, "images": {"cpu": "vllm-cpu:{tag}"}}
    body["instance"]["ports"] = [46390]
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_berth_plan_masks_secrets(tmp_path, fmt):
    result = CliRunner().invoke(app, ["plan", str(_spec_file(tmp_path)), "--format", fmt])
    assert result.exit_code == 0, result.output
    assert found_in(result.output) == [], result.output
    if fmt == "json":
        data = json.loads(result.output)
        assert data["env"]["HF_TOKEN"] != HF_TOKEN and "--api-key" in json.dumps(data["args"])


def test_berth_plan_errors_do_not_echo_secrets(tmp_path):
    path = tmp_path / "bad.yaml"
    body = spec_body("plan-2", env={"HF_TOKEN": HF_TOKEN}, backend_parameters=["--api-key", API_KEY])
    body["model_path"] = "relative/../path"
    path.write_text(yaml.safe_dump(body))
    result = CliRunner().invoke(app, ["plan", str(path)])
    assert result.exit_code != 0
    shown = result.output + str(result.exception)  # main() prints the CLIError as one line
    assert found_in(shown) == [], shown
    assert "model_path" in shown


def test_settings_errors_do_not_echo_the_api_token(tmp_path):
    from berth.cli._serve import load_settings
    from berth.cli._app import CLIError

    with pytest.raises(CLIError) as info:
        load_settings({"data_dir": tmp_path, "api_token": HF_TOKEN}, ["port=not-a-port"])
    assert HF_TOKEN not in str(info.value)
