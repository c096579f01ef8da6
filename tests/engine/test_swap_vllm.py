"""Parking and unparking a registered model with real vLLM (CPU) and the tiny local model,
through the worker's API, on the launcher deployer (each start a fork of the preloaded vLLM).

One vLLM server at a time; the worker stops it on exit and shuts the launcher's daemon down.
"""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient

from berth.testing import CPU_ENV
from berth.worker import ServeManager, Settings, create_app
from tests.support.ports import free_range

pytestmark = pytest.mark.vllm

READY_TIMEOUT = 300


def chat(base_url: str, model: str) -> dict:
    with httpx.Client(trust_env=False, timeout=120) as http:
        reply = http.post(f"{base_url}/v1/chat/completions", json={
            "model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4})
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_a_parked_model_is_forked_again_on_request(tmp_path, tiny_model):
    settings = Settings.load(data_dir=tmp_path / "data", deployer="launcher", poll_interval=0.25,
                             instance_port_range=free_range(100), stop_instances_on_exit=True)
    manager = ServeManager(settings)
    with TestClient(create_app(manager)) as client:
        path = "forked" if manager.deployer.name == "launcher" else "cold"
        body = {"name": "tiny", "launcher": {"options": f"--model {tiny_model} --enforce-eager", "env_vars": CPU_ENV}}
        assert client.post("/v2/models", json=body).status_code == 201
        first = client.post("/v2/models/tiny/wake", params={"timeout": READY_TIMEOUT})
        assert first.status_code == 200, first.text
        assert first.json()["path"] == path
        assert chat(first.json()["base_url"], "tiny")["choices"][0]["message"]["role"] == "assistant"

        parked = client.post("/v2/models/tiny/park").json()
        assert parked["state"] == "parked" and client.get("/v2/instances/tiny").status_code == 404

        again = client.post("/v2/models/tiny/wake", params={"timeout": READY_TIMEOUT})
        assert again.status_code == 200, again.text
        assert again.json()["path"] == path
        print(f"\nfirst start {first.json()['seconds']:.1f} s, unpark ({path}) {again.json()['seconds']:.1f} s")
        assert chat(again.json()["base_url"], "tiny")["model"] == "tiny"
        assert client.delete("/v2/models/tiny").status_code == 200
        assert client.get("/v2/instances").json()["instances"] == []
