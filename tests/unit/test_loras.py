"""Runtime LoRA adapters without an engine: name and path checks, the record, the router's pick,
the API over a memory deployer with a fake engine (vLLM's load/unload endpoints over an
in-process transport), and loading again after an engine (re)start."""

from __future__ import annotations

import json
import threading
from dataclasses import replace

import httpx
import pytest
from fastapi.testclient import TestClient

from berth.deployers.memory import MemoryDeployer
from berth.schemas.workload import WorkloadState
from berth.testing.fakes import FakeProbe
from berth.worker import ServeManager, Settings, create_app
from berth.worker.engine import EngineClient
from berth.worker.errors import InvalidRequest
from berth.worker.loras._rules import (
    RUNTIME_ENV,
    check_lora_name,
    check_lora_path,
    runtime_lora_names,
    runtime_refusal,
    with_lora,
    without_lora,
)
from berth.worker.reconcile._loras import LoraKeeper
from berth.worker.routing._router import pick_instance, served_model_names
from berth.worker.store._registry import InstanceRecord
from berth.worker.store._states import InstanceState
from tests.support.ports import free_range


class FakeEngine:
    """vLLM's runtime LoRA endpoints and /v1/models, in memory."""

    def __init__(self) -> None:
        self.loaded: dict[str, str] = {}
        self.calls: list[tuple[str, dict]] = []
        self.refuse: tuple[int, str] | None = None
        self.down = False
        self.gate: tuple[threading.Event, threading.Event] | None = None  # (arrived, go): holds one load

    def _hold(self) -> None:
        gate, self.gate = self.gate, None
        if gate is not None:
            gate[0].set()
            assert gate[1].wait(10)

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        path = request.url.path
        if path == "/v1/models":
            data = [{"id": "base"}] + [{"id": n, "root": p, "parent": "base"} for n, p in self.loaded.items()]
            return httpx.Response(200, json={"object": "list", "data": data})
        body = json.loads(request.content)
        self.calls.append((path, body))
        if self.refuse:
            status, message = self.refuse
            if message == "Not Found":  # FastAPI's answer for a route the server lacks
                return httpx.Response(404, json={"detail": message})
            return httpx.Response(status, json={"error": {"message": message, "code": status}})
        if path == "/v1/load_lora_adapter":
            self._hold()
            if body["lora_name"] in self.loaded:
                return httpx.Response(400, json={"error": {"message": "already been loaded"}})
            self.loaded[body["lora_name"]] = body["lora_path"]
            return httpx.Response(200, text="Success")
        if path == "/v1/unload_lora_adapter":
            if self.loaded.pop(body["lora_name"], None) is None:
                return httpx.Response(404, json={"error": {"message": "cannot be found"}})
            return httpx.Response(200, text="Success")
        return httpx.Response(404)

    def client(self) -> EngineClient:
        return EngineClient(transport=httpx.MockTransport(self.handle))


def adapter_dir(tmp_path, name="adapter"):
    path = tmp_path / name
    path.mkdir()
    (path / "adapter_config.json").write_text("{}")
    return path


# -- checks ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "sql-lora", "v1.2_x", "A" * 128])
def test_good_names(name):
    assert check_lora_name(name) == name


@pytest.mark.parametrize("name", ["", "-x", ".hidden", "a/b", "a b", "x" * 129, "ü", "a\n"])
def test_bad_names_name_the_field(name):
    with pytest.raises(InvalidRequest, match="^name: "):
        check_lora_name(name)


def test_paths_must_be_absolute_adapter_directories(tmp_path, monkeypatch):
    good = adapter_dir(tmp_path)
    link = tmp_path / "link"
    link.symlink_to(good)
    assert check_lora_path(str(link)) == str(good.resolve())
    monkeypatch.chdir(tmp_path)
    for path, message in [("adapter", "not absolute"), (f"{good}/../adapter", "'..'"),
                          (str(tmp_path / "missing"), "not a directory"), (str(tmp_path), "adapter_config.json"),
                          (str(good / "adapter_config.json"), "not a directory"), (f"{good}\x00", "control")]:
        with pytest.raises(InvalidRequest, match=message):
            check_lora_path(path)


def test_runtime_lora_needs_the_flag_and_the_variable():
    def spec(params, env=None):
        return {"model": {"backend_parameters": params, "env": env or {}}}

    assert runtime_refusal(spec(["--enable-lora"], {RUNTIME_ENV: "1"})) is None
    assert runtime_refusal(spec(["--enable-lora=true", "--max-loras", "2"], {RUNTIME_ENV: "True"})) is None
    both = runtime_refusal(spec(["--max-model-len", "256"]))
    assert "--enable-lora" in both and RUNTIME_ENV in both
    assert RUNTIME_ENV in runtime_refusal(spec(["--enable-lora"], {RUNTIME_ENV: "0"}))
    assert "--enable-lora" in runtime_refusal(spec([], {RUNTIME_ENV: "1"}))


# -- the record and the router -----------------------------------------------------------------


def record(instance_id="i", state=InstanceState.RUNNING, names=("base",), params=(), loras=(), started_at=1.0):
    endpoints = {"base_url": f"http://{instance_id}.engine", "served_names": list(names)}
    if loras:
        endpoints["loras"] = [{"name": n, "path": f"/a/{n}"} for n in loras]
    return InstanceRecord(id=instance_id, source="spec", deployer="memory", workload=instance_id, state=state,
                          spec={"model": {"backend_parameters": list(params)}}, endpoints=endpoints,
                          ready_at=1.0, started_at=started_at)


def test_the_record_keeps_adapters_in_load_order_and_reloads_replace():
    base = record()
    one = replace(base, endpoints=with_lora(base, "x", "/a/x"))
    two = replace(one, endpoints=with_lora(one, "y", "/a/y"))
    again = replace(two, endpoints=with_lora(two, "x", "/b/x"))
    assert runtime_lora_names(two) == ["x", "y"]
    assert again.endpoints.to_json()["loras"] == [{"name": "y", "path": "/a/y"}, {"name": "x", "path": "/b/x"}]
    assert runtime_lora_names(replace(two, endpoints=without_lora(two, "x"))) == ["y"]
    assert again.endpoints.to_json()["served_names"] == ["base"]  # the rest of the endpoints untouched
    junk = replace(base, endpoints={**base.endpoints.to_json(), "loras": [{"name": 1}, "x", {"name": "ok", "path": "/p"}]})
    assert runtime_lora_names(junk) == ["ok"]


def test_router_picks_a_runtime_adapters_base_instance():
    records = [record("a", names=["m"]), record("b", names=["n"], params=["--lora-modules", "spec-lora=/p"], loras=["rt"]),
               record("c", state=InstanceState.STARTING, names=["k"], loras=["late"])]
    assert pick_instance(records, "rt").id == "b"
    assert pick_instance(records, "spec-lora").id == "b"
    assert pick_instance(records, "late") is None  # not running yet
    assert pick_instance(records, "m").id == "a"
    assert served_model_names(records[1]) == ["n", "spec-lora", "rt"]


# -- the API -------------------------------------------------------------------------------------


RUNTIME_OPTIONS = "--model /models/tiny --enable-lora --max-loras 2 --served-model-name base-a"


@pytest.fixture
def world(tmp_path, monkeypatch):
    engine = FakeEngine()
    settings = Settings.load(data_dir=tmp_path / "data", poll_interval=0.05, instance_port_range=free_range(100))
    probe = FakeProbe()
    manager = ServeManager(settings, deployer=MemoryDeployer(initial=WorkloadState.RUNNING), probe=probe).start(watch=False)
    manager._context.engine = engine.client()
    with TestClient(create_app(manager, start=False)) as client:
        yield client, manager, engine, probe


def running(world, instance_id, options=RUNTIME_OPTIONS, env=None):
    client, manager, _, probe = world
    env = {RUNTIME_ENV: "1"} if env is None else env
    assert client.put(f"/v2/vllm/instances/{instance_id}", json={"options": options, "env_vars": env}).status_code == 201
    probe.ready.add(manager.get(instance_id).endpoints.base_url)
    manager._watch.run_once()
    assert manager.get(instance_id).state is InstanceState.RUNNING
    return manager.get(instance_id)


def test_load_list_unload_on_both_apis(world, tmp_path):
    client, manager, engine, _ = world
    running(world, "a")
    path = str(adapter_dir(tmp_path))
    loaded = client.post("/v2/instances/a/loras", json={"name": "sql", "path": path})
    assert loaded.status_code == 200, loaded.text
    assert loaded.json() == {"instance_id": "a", "loras": [{"name": "sql", "path": path}]}
    assert engine.loaded == {"sql": path}
    assert client.get("/v2/vllm/instances/a/loras").json()["loras"] == [{"name": "sql", "path": path}]
    assert pick_instance(manager.list(), "sql").id == "a"

    # loading a name again replaces it: the engine unloads, then loads the new path
    other = str(adapter_dir(tmp_path, "other"))
    assert client.post("/v2/vllm/instances/a/loras", json={"name": "sql", "path": other}).status_code == 200
    assert engine.loaded == {"sql": other}

    gone = client.delete("/v2/vllm/instances/a/loras/sql")
    assert gone.status_code == 200 and gone.json()["loras"] == [] and engine.loaded == {}
    assert pick_instance(manager.list(), "sql") is None
    assert client.delete("/v2/instances/a/loras/sql").status_code == 404


def test_refusals_are_4xx_naming_the_fix(world, tmp_path):
    client, manager, engine, _ = world
    running(world, "a")
    running(world, "plain", options="--model /models/tiny --served-model-name plain-model", env={})
    path = str(adapter_dir(tmp_path))

    def load(instance_id, name="x", where=path):
        return client.post(f"/v2/instances/{instance_id}/loras", json={"name": name, "path": where})

    cases = [
        (load("missing"), 404, "not found"),
        (load("plain"), 409, "--enable-lora"),
        (load("a", name="bad/name"), 422, "name:"),
        (load("a", where="relative"), 422, "path:"),
        (load("a", name="plain-model"), 409, "already answers"),   # another instance's served name
        (load("a", name="base-a"), 409, "served name"),            # its own served name
        (client.post("/v2/instances/a/loras", json={"name": "x", "path": path, "extra": 1}), 422, "extra"),
    ]
    for response, status, words in cases:
        assert response.status_code == status and words in response.json()["detail"], response.text
    assert engine.calls == []

    engine.refuse = (400, "rank 64 is larger than max_lora_rank 16")
    refused = load("a")
    assert refused.status_code == 400 and "max_lora_rank" in refused.json()["detail"]
    engine.refuse = (404, "Not Found")
    no_route = load("a")
    assert no_route.status_code == 409 and "--enable-lora" in no_route.json()["detail"]
    engine.refuse, engine.down = None, True
    unreachable = load("a")
    assert unreachable.status_code == 502 and "did not answer" in unreachable.json()["detail"]
    assert client.get("/v2/instances/a/loras").json()["loras"] == []  # nothing recorded on failure


def test_not_running_instances_load_nothing(world, tmp_path):
    client, manager, _, _ = world
    client.put("/v2/vllm/instances/cold", json={"options": RUNTIME_OPTIONS, "env_vars": {RUNTIME_ENV: "1"}})
    answer = client.post("/v2/instances/cold/loras", json={"name": "x", "path": str(adapter_dir(tmp_path))})
    assert answer.status_code == 409 and "not serving" in answer.json()["detail"]


# -- loading again -------------------------------------------------------------------------------


def test_adapters_are_loaded_again_once_per_engine_start(world, tmp_path):
    client, manager, engine, _ = world
    running(world, "a")
    path = str(adapter_dir(tmp_path))
    assert client.post("/v2/instances/a/loras", json={"name": "sql", "path": path}).status_code == 200

    engine.loaded.clear()  # the engine forgot; a new worker process (a new keeper) re-adopts it
    keeper = manager._watch.loras = LoraKeeper(manager._context)
    manager._watch.run_once()
    assert engine.loaded == {"sql": path}

    engine.loaded.clear()
    manager._watch.run_once()
    assert engine.loaded == {}  # this engine start is confirmed: no request per tick

    restarted = manager._context.registry.update("a", started_at=(manager.get("a").started_at or 0) + 10)
    engine.down = True
    keeper.ensure(restarted)
    assert engine.loaded == {} and not keeper.confirmed(restarted)  # retried on a later tick
    engine.down = False
    manager._watch.run_once()
    assert engine.loaded == {"sql": path} and keeper.confirmed(manager.get("a"))


# -- concurrency ---------------------------------------------------------------------------------


def held_load(client, engine, instance_id, name, path):
    """Start a load whose engine call waits; returns (thread, answers, go) once the engine has it."""
    arrived, go = threading.Event(), threading.Event()
    engine.gate = (arrived, go)
    answers = []
    thread = threading.Thread(target=lambda: answers.append(
        client.post(f"/v2/instances/{instance_id}/loras", json={"name": name, "path": path})))
    thread.start()
    assert arrived.wait(10)
    return thread, answers, go


def test_one_adapter_name_loads_into_one_instance_even_concurrently(world, tmp_path):
    client, manager, engine, _ = world
    running(world, "a")
    running(world, "b")
    path = str(adapter_dir(tmp_path))
    thread, answers, go = held_load(client, engine, "a", "x", path)  # a's load is in the engine now
    try:
        second = client.post("/v2/instances/b/loras", json={"name": "x", "path": path})
    finally:
        go.set()
        thread.join(10)
    assert second.status_code == 409 and "'x'" in second.json()["detail"], second.text
    assert answers[0].status_code == 200, answers[0].text
    assert [r.id for r in manager.list() if "x" in runtime_lora_names(r)] == ["a"]
    assert len(manager._context.lora_claims) == 0  # claims released


def test_a_failure_observed_during_a_load_is_recorded_and_the_load_answers_409(world, tmp_path):
    client, manager, engine, _ = world
    record = running(world, "a")
    thread, answers, go = held_load(client, engine, "a", "x", str(adapter_dir(tmp_path)))
    try:
        manager.deployer.set_state(record.workload, WorkloadState.FAILED, exit_code=1, reason="crashed")
        manager._watch.run_once()  # the load's engine call holds no instance lock: the failure is written
        observed = manager.get("a").state
    finally:
        go.set()
        thread.join(10)
    assert observed is InstanceState.FAILED
    assert answers[0].status_code == 409 and "changed" in answers[0].json()["detail"], answers[0].text
    assert runtime_lora_names(manager.get("a")) == [] and engine.loaded == {}  # undone in the engine
