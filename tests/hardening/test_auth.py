"""Bearer-token auth: with a token configured, every route but ``/health`` (unknown paths and the
docs included) refuses requests without it, with a wrong one, or in the wrong place (401 JSON);
the comparison goes through ``hmac.compare_digest``; the token is never logged, never answered,
never handed to instances."""

from __future__ import annotations

import hmac
import inspect
import re
from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from starlette.routing import Route

from berth.deployers.memory import MemoryDeployer
from berth.worker.app import _middleware
from tests.hardening._answers import assert_clean_answer
from tests.hardening._fixtures import in_process
from tests.hardening._serve import ServeProcess

TOKEN = "berth-TOKEN-planted-0123456789abcdef"
WRONG = [
    None,
    "",
    "Bearer",
    "Bearer ",
    f"Bearer {TOKEN[:-1]}",
    f"Bearer {TOKEN}x",
    f"Bearer x{TOKEN}",
    f"Basic {TOKEN}",
    f"Token {TOKEN}",
    TOKEN,
    f"Bearer {TOKEN.upper()}",
    "Bearer \u00e9\u00e9",
]


def _routes(app) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    found = []
    for route in app.routes:
        if isinstance(route, (APIRoute, Route)):
            path = re.sub(r"\{[^}]+\}", "x1", route.path)
            found += [(method, path) for method in sorted(route.methods or {"GET"})
                      if method != "HEAD" and path != "/health"]
    return found + [("GET", "/no/such/path"), ("POST", "/v2/vllm/instances/x1/log"), ("GET", "/health/"),
                    ("GET", "/HEALTH"), ("GET", "//health")]


@pytest.fixture
def client(tmp_path: Path):
    with in_process(tmp_path / "data", MemoryDeployer(), api_token=TOKEN) as test_client:
        yield test_client


def test_every_route_but_health_refuses_missing_or_wrong_tokens(client):
    routes = _routes(client.app)
    assert ("GET", "/metrics") in routes and ("GET", "/docs") in routes and ("GET", "/v2/instances/watch") in routes
    for method, path in routes:
        for value in WRONG:
            headers = {} if value is None else {"Authorization": value.encode()}
            response = client.request(method, path, headers=headers, params={"token": TOKEN, "access_token": TOKEN})
            assert response.status_code == 401, (method, path, value, response.status_code)
            assert_clean_answer(401, response.headers["content-type"], response.content)
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert TOKEN.encode() not in response.content


def test_health_is_open_and_the_token_opens_the_rest(client):
    assert client.get("/health").status_code == 200
    good = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/v2/vllm/instances", headers=good).status_code == 200
    assert client.get("/metrics", headers=good).status_code == 200
    assert client.get("/v2/vllm/instances", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200
    created = client.put("/v2/vllm/instances/a", headers=good, json={"options": "--model /m"})
    assert created.status_code == 201
    for url in ("/v2/vllm/instances", "/v2/instances", "/v2/instances/a", "/metrics", "/openapi.json"):
        assert TOKEN.encode() not in client.get(url, headers=good).content


def test_auth_runs_before_the_body_is_read(client):
    response = client.post("/v2/vllm/instances", content=b"x" * (4 << 20), headers={"content-type": "application/json"})
    assert response.status_code == 401


def test_the_comparison_is_constant_time(client, monkeypatch):
    """Read the code, and watch it: every check goes through ``hmac.compare_digest``."""
    source = inspect.getsource(_middleware.BearerAuth)
    assert "hmac.compare_digest(presented, self._token" in source
    assert "== self._token" not in source and "self._token ==" not in source
    calls: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return original(a, b)

    monkeypatch.setattr(_middleware.hmac, "compare_digest", spy)
    client.get("/v2/vllm/instances", headers={"Authorization": "Bearer nope"})
    client.get("/v2/vllm/instances", headers={"Authorization": f"Bearer {TOKEN}"})
    assert [a for a, _ in calls] == [b"nope", TOKEN.encode()]


def test_token_file(tmp_path):
    path = tmp_path / "token"
    path.write_text(f"{TOKEN}\n")
    path.chmod(0o600)
    with in_process(tmp_path / "data", MemoryDeployer(), api_token_file=path) as client:
        assert client.get("/v2/vllm/instances").status_code == 401
        assert client.get("/v2/vllm/instances", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


@pytest.mark.subprocess
def test_served_worker_never_logs_or_passes_on_the_token(tmp_path):
    serve = ServeProcess(tmp_path, token=TOKEN)
    serve.start()
    try:
        assert serve.http.get("/v2/vllm/instances", headers={"Authorization": f"Bearer {TOKEN}x"}).status_code == 401
        assert serve.http.put("/v2/vllm/instances/auth-1", json={"options": "--model /m"}).status_code == 201
        serve.wait_state("auth-1", "running")
        identity = serve.http.get("/v2/instances/auth-1").json()["identity"]
        pid = int(identity.get("pid.default") or identity["pgid.default"])
        assert TOKEN.encode() not in Path(f"/proc/{pid}/environ").read_bytes()
        assert TOKEN.encode() not in serve.http.get("/v2/vllm/instances/auth-1/log").content
    finally:
        serve.close()
    assert serve.leftovers == set() and serve.leftover_ports == set()
    log = serve.log.read_text()
    assert "auth on" in log and "DEBUG" in log
    assert TOKEN not in log and TOKEN[:-1] not in log
