"""Bad input, case by case, against the worker's API (in-process, memory deployer): shell
injection in options, env var names that are not names, code-injecting variables, config a
request may not change, unsafe ids, huge or malformed Range headers, huge and malformed bodies.

Every answer must be clean (no 5xx, no traceback, refusals as JSON naming the field); see
``test_properties`` for the property-based half.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from berth.deployers.memory import MemoryDeployer
from tests.hardening._answers import assert_clean_answer
from tests.hardening._fixtures import in_process, spec_body

INJECTIONS = ["; rm -rf /", "$(touch /tmp/berth-pwned)", "`touch /tmp/berth-pwned`", "&& reboot", "| nc -l 4444",
              "\nid", "${IFS}id", "'; id; '"]


@pytest.fixture
def deployer() -> MemoryDeployer:
    return MemoryDeployer()


@pytest.fixture
def client(tmp_path: Path, deployer: MemoryDeployer) -> Iterator[TestClient]:
    with in_process(tmp_path / "data", deployer) as test_client:
        yield test_client


def clean(response) -> dict:  # type: ignore[no-untyped-def]
    assert_clean_answer(response.status_code, response.headers.get("content-type", ""), response.content)
    return response.json() if response.headers.get("content-type", "").startswith("application/json") else {}


# -- shell injection: literal argv tokens, never a shell -------------------------------------


@pytest.mark.parametrize("payload", INJECTIONS)
def test_injection_in_options_stays_literal_argv(client, deployer, payload):
    options = f"--model /models/m --served-model-name x --chat-template-content-format {shlex.quote(payload)}"
    response = client.put("/v2/vllm/instances/inj", json={"options": options})
    body = clean(response)
    if response.status_code != 201:  # refused (a control character): fine, as long as it names options
        assert response.status_code == 422 and body["detail"].startswith("options:")
        return
    [plan] = deployer.created
    execution = plan.containers[0].execution
    assert execution.command_script is None  # nothing goes through a shell
    assert execution.command == ["vllm", "serve"]
    assert payload.strip() in execution.args  # one argv token, as sent (the planner trims edge whitespace)
    assert not Path("/tmp/berth-pwned").exists()


def test_unquoted_shell_syntax_is_just_more_tokens(client, deployer):
    options = "--model /models/m ; touch /tmp/berth-pwned && $(id) `id` | cat"
    assert client.put("/v2/vllm/instances/raw", json={"options": options}).status_code == 201
    args = deployer.created[0].containers[0].execution.args
    for token in [";", "touch", "/tmp/berth-pwned", "&&", "$(id)", "`id`", "|", "cat"]:
        assert token in args
    assert not Path("/tmp/berth-pwned").exists()


@pytest.mark.parametrize("options", ["--model /m\x00", "--model /m\x1b[2J", "--model '/m", "--model", "", "--port 80"])
def test_unusable_options_are_refused_naming_options(client, options):
    response = client.post("/v2/vllm/instances", json={"options": options})
    assert response.status_code == 422
    assert clean(response)["detail"].startswith("options:")


# -- environment variables --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["1ABC", "A-B", "A B", "", "A=B", "A\x00", "É", "A\nB", "X" * 300 + "-"])
def test_env_names_that_are_not_names(client, name):
    response = client.post("/v2/vllm/instances", json={"options": "--model /m", "env_vars": {name: "x"}})
    assert response.status_code == 422
    assert clean(response)["detail"].startswith("env_vars")


@pytest.mark.parametrize("name", ["LD_PRELOAD", "LD_LIBRARY_PATH", "ld_preload", "DYLD_INSERT_LIBRARIES",
                                  "PYTHONPATH", "PYTHONSTARTUP", "BASH_ENV", "NODE_OPTIONS", "PATH"])
def test_code_injecting_variables_are_refused(client, name):
    response = client.post("/v2/vllm/instances", json={"options": "--model /m", "env_vars": {name: "/tmp/x.so"}})
    assert response.status_code == 422
    detail = clean(response)["detail"]
    assert detail.startswith(f"env_vars.{name}") and "BERTH_ALLOWED_ENV" in detail
    spec = spec_body(env={name: "/tmp/x.so"})
    refused = client.post("/v2/instances", json=spec)
    assert refused.status_code == 422 and clean(refused)["detail"].startswith(f"model.env.{name}")


def test_allowed_env_setting_lets_one_through(tmp_path, deployer):
    with in_process(tmp_path / "data", deployer, allowed_env="LD_PRELOAD") as client:
        body = {"options": "--model /m", "env_vars": {"LD_PRELOAD": "/opt/x.so"}}
        assert client.put("/v2/vllm/instances/ok", json=body).status_code == 201
        refused = client.put("/v2/vllm/instances/no", json={"options": "--model /m", "env_vars": {"PYTHONPATH": "/x"}})
        assert refused.status_code == 422
    envs = {e.name: e.value for e in deployer.created[0].containers[0].envs or []}
    assert envs["LD_PRELOAD"] == "/opt/x.so"


@pytest.mark.parametrize("value", [{"a": 1}, [1], None, "x\x00y", "v" * 40000])
def test_env_values_that_are_not_strings(client, value):
    response = client.post("/v2/vllm/instances", json={"options": "--model /m", "env_vars": {"A": value}})
    assert response.status_code == 422
    assert clean(response)["detail"].startswith("env_vars")


# -- config a request may not change ----------------------------------------------------------


@pytest.mark.parametrize("field, value", [
    ("entrypoint", ["/bin/sh", "-c", "touch /tmp/berth-pwned"]),
    ("images", {"cpu": "evil/image:latest"}),
    ("cache_dir", "/etc"),
    ("data_dir", "/"),
    ("runtime_uid", 0),
])
def test_spec_config_that_decides_what_runs_is_refused(client, deployer, field, value):
    spec = {**spec_body(), "config": {field: value}}
    response = client.post("/v2/instances", json=spec)
    assert response.status_code == 422
    detail = clean(response)["detail"]
    assert detail.startswith(f"config.{field}:") and f"BERTH_SPEC_OVERRIDES={field}" in detail
    assert deployer.created == []


def test_spec_config_may_repeat_the_workers_values_and_set_allowed_fields(client, deployer):
    spec = {**spec_body(), "config": {"entrypoint": ["vllm", "serve"], "shm_size_gib": 2}}
    assert clean(client.post("/v2/instances", json=spec))["instance_id"] == "s-1"
    assert deployer.created[0].shm_size == 2 << 30


def test_spec_overrides_setting_allows_the_entrypoint(tmp_path, deployer):
    with in_process(tmp_path / "data", deployer, spec_overrides="entrypoint") as client:
        spec = {**spec_body(), "config": {"entrypoint": ["python3", "-m", "my.server"]}}
        assert client.post("/v2/instances", json=spec).status_code == 201
    assert deployer.created[0].containers[0].execution.command == ["python3", "-m", "my.server"]


# -- ids ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["a/b", "..", "%2e%2e", "a..b", "a%00b", "x" * 64, "a%2Fb", "-a", "a%20b",
                                 "%0a", "..%2F..%2Fetc%2Fpasswd", "%C3%A9", "a." + "b" * 200])
def test_unsafe_ids_never_reach_a_path(client, deployer, tmp_path, raw):
    for method, url in [("PUT", f"/v2/vllm/instances/{raw}"), ("GET", f"/v2/vllm/instances/{raw}"),
                        ("DELETE", f"/v2/vllm/instances/{raw}"), ("GET", f"/v2/vllm/instances/{raw}/log"),
                        ("GET", f"/v2/instances/{raw}"), ("DELETE", f"/v2/instances/{raw}")]:
        response = client.request(method, url, json={"options": "--model /m"} if method == "PUT" else None)
        assert response.status_code in (404, 405, 422), (method, url, response.text)
        clean(response)
    assert deployer.created == []
    # only the worker's own databases (instances, model definitions): nothing named after an id
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == sorted(
        ["registry.db", "swap.db", *_wal(tmp_path / "data")])


def _wal(data: Path) -> list[str]:
    return sorted(p.name for p in data.iterdir() if p.name.startswith(("registry.db-", "swap.db-")))


@pytest.mark.parametrize("name", ["../etc", "a/b", "x" * 64, "a\x00b", ".hidden"])
def test_unsafe_spec_instance_names(client, deployer, name):
    response = client.post("/v2/instances", json=spec_body(name))
    assert response.status_code == 422
    assert clean(response)["detail"].startswith("instance.name")
    assert deployer.created == []


# -- Range headers -------------------------------------------------------------------------------


@pytest.mark.parametrize("header, status", [
    ("bytes=0-99999999999999999999999999999", 206),
    ("bytes=99999999999999999999999999-", 416),
    ("bytes=-999999999999999999999999999", 206),
    ("bytes=18446744073709551616-18446744073709551617", 416),
    ("bytes=5-1", 400),
    ("bytes=0-1,3-4", 400),
    ("items=0-1", 400),
    ("bytes=" + "9" * 300, 400),
    ("bytes=-0", 416),
    ("bytes=--1", 400),
    ("bytes=-", 400),
    ("bytes=1e9-", 400),
    ("bytes=0x10-", 400),
    ("", 400),
])
def test_range_headers(client, deployer, header, status):
    assert client.put("/v2/vllm/instances/lg", json={"options": "--model /m"}).status_code == 201
    deployer.write_log("lg", b"0123456789" * 10)
    response = client.get("/v2/vllm/instances/lg/log", headers={"Range": header})
    assert response.status_code == status, response.text
    clean(response)
    if status == 206:
        assert response.headers["content-range"].endswith("/100") and len(response.content) <= 100
    if status == 416:
        assert response.headers["content-range"] == "bytes */100" and response.content == b""


# -- bodies ------------------------------------------------------------------------------------


def test_body_of_many_megabytes_is_413(client, deployer):
    big = json.dumps({"options": "--model /m " + "x" * (8 << 20)}).encode()
    response = client.post("/v2/vllm/instances", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413 and "max_body_bytes" in clean(response)["detail"]


def test_streamed_body_without_length_is_413(client):
    def chunks() -> Iterator[bytes]:
        yield b'{"options": "--model /m '
        for _ in range(64):
            yield b"x" * (64 << 10)
        yield b'"}'

    response = client.post("/v2/vllm/instances", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    clean(response)


@pytest.mark.parametrize("raw", [b"{", b'{"options": ', b"\xff\xfe\x00", b"[1]", b"3", b"null", b'"x"',
                                 b"[" * 100000 + b"]" * 100000, b'{"options": "--model /m"' + b" " * 10 + b"}}"])
def test_malformed_json_is_422_naming_the_body(client, raw):
    for url, method in [("/v2/vllm/instances", "POST"), ("/v2/vllm/instances/j", "PUT"), ("/v2/instances", "POST")]:
        response = client.request(method, url, content=raw, headers={"content-type": "application/json"})
        assert response.status_code == 422, (url, raw[:20], response.text)
        assert clean(response)["detail"].startswith("body")


def test_unknown_fields_are_named(client):
    response = client.post("/v2/vllm/instances", json={"options": "--model /m", "optoins": "x", "\x1b[31m": 1})
    assert response.status_code == 422
    detail = clean(response)["detail"]
    assert "optoins" in detail and "\x1b" not in detail


@pytest.mark.parametrize("query", ["since=-1", "since=99999999999999999999999", "since=abc", "timeout=0",
                                   "timeout=-1", "timeout=1e308", "timeout=nan"])
def test_watch_parameters(client, query):
    response = client.get(f"/v2/instances/watch?{query}")
    assert response.status_code == 422
    assert clean(response)["detail"].startswith("query.")


def test_detail_flag_is_bounded(client):
    response = client.get("/v2/vllm/instances?detail=" + "x" * 8000)
    assert response.status_code in (414, 422, 431)
    clean(response)
