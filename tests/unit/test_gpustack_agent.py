"""The GPUStack agent's pieces without a server: GPUStack objects in berth's terms, the state
machine both ways (against an in-memory GPUStack and the memory deployer), model files, the
status it reports, its durable identity and the worker endpoints GPUStack calls."""

from __future__ import annotations

import asyncio
import copy
import os
import stat
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from berth.deployers.memory import MemoryDeployer
from berth.schemas.workload import WorkloadState
from berth.testing.fakes import FakeProbe
from berth.worker import ServeManager, Settings, create_app
from berth.worker.gpustack._client import ServerRefused
from berth.worker.gpustack._files import FileSync, check_local_model
from berth.worker.gpustack._identity import Identity, load_identity, save_identity
from berth.worker.gpustack._instances import InstanceSync
from berth.worker.gpustack._logs import line_window, tail_start
from berth.worker.gpustack._status import CPUSampler, registration_body
from berth.worker.gpustack._translate import (
    Assignment,
    Role,
    berth_id,
    gpustack_id,
    instance_from_header,
    role_of,
    to_spec,
)
from berth.worker.store._states import InstanceState
from tests.support.ports import free_range

FIXTURE = {"index": 0, "uuid": "FIXTURE-0", "vendor": "nvidia", "name": "FIXTURE-not-a-gpu", "memory_total": 16 << 30}
WORKER_ID = 7


def _model(**extra: Any) -> dict[str, Any]:
    return {"id": 3, "name": "tiny", "backend": "vLLM", "replicas": 1, "categories": ["llm"], "meta": {},
            "backend_parameters": ["--max-model-len=512"], "env": {"VLLM_CPU_KVCACHE_SPACE": "1"},
            "restart_on_error": True, "lora_list": None, **extra}


def _instance(state: str, **extra: Any) -> dict[str, Any]:
    return {"id": 11, "name": "tiny-ab12c", "model_id": 3, "model_name": "tiny", "worker_id": WORKER_ID,
            "worker_ip": "127.0.0.1", "state": state, "state_message": "", "port": None, "ports": [],
            "gpu_indexes": [0], "local_path": "/models/tiny", "resolved_path": None, "source": "local_path",
            "computed_resource_claim": {"vram": {"0": 1000}, "ram": None},
            "distributed_servers": {"mode": "initialize_later", "subordinate_workers": None}, **extra}


# -- translation --------------------------------------------------------------------------------


def test_ids_and_routing_headers():
    assert berth_id(11) == "gpustack-11" and gpustack_id("gpustack-11") == 11
    assert gpustack_id("mine") is None and gpustack_id("gpustack-x") is None
    assert instance_from_header("model-3-11.static") == "gpustack-11"
    assert instance_from_header("model-3-11-l9f8e.static") == "gpustack-11"
    assert instance_from_header("model-3.static") is None and instance_from_header("junk") is None


def test_roles():
    main = _instance("running")
    assert role_of(main, WORKER_ID) is Role.MAIN
    follower = _instance("running", worker_id=1, distributed_servers={
        "mode": "initialize_later", "subordinate_workers": [{"worker_id": WORKER_ID, "gpu_indexes": [0]}]})
    assert role_of(follower, WORKER_ID) is Role.SUBORDINATE
    assert role_of(_instance("running", worker_id=1), WORKER_ID) is Role.NONE


def test_spec_keeps_gpustack_fields_and_names_the_instance_after_its_id(tmp_path):
    settings = Settings.load(data_dir=tmp_path, gpu_devices=[FIXTURE])
    worker = settings.to_worker().model_copy(update={"id": WORKER_ID, "name": "w"})
    spec = to_spec(Assignment(instance=_instance("starting", ports=[45001]), model=_model(), worker=worker,
                              model_path="/models/tiny"))
    assert spec.instance.name == "gpustack-11" and spec.instance.model_extra["gpustack_name"] == "tiny-ab12c"
    assert spec.instance.ports == [45001] and spec.instance.gpu_indexes == [0]
    assert spec.model.model_extra["replicas"] == 1 and spec.worker.gpu_devices[0].name == "FIXTURE-not-a-gpu"


# -- the state machine, against an in-memory GPUStack ----------------------------------------------


class FakeGPUStack:
    """``call``/``update``/``list_all`` over dicts, recording every PUT."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[int, dict[str, Any]]] = {"model-instances": {}, "models": {3: _model()},
                                                               "model-files": {}}
        self.puts: list[tuple[str, int, dict[str, Any]]] = []

    async def call(self, method: str, path: str, **_: Any) -> Any:
        kind, _, ident = path.strip("/").partition("/")
        found = self.objects[kind].get(int(ident))
        if found is None:
            raise ServerRefused(404, f"{path} not found")
        return copy.deepcopy(found)

    async def update(self, kind: str, object_id: int, change) -> Any:
        current = await self.call("GET", f"/{kind}/{object_id}")
        changed = change(current)
        if changed is None:
            return current
        self.objects[kind][object_id] = copy.deepcopy(changed)
        self.puts.append((kind, object_id, changed))
        return changed

    async def list_all(self, kind: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(o) for o in self.objects[kind].values()]


@pytest.fixture
def base(tmp_path):
    """The first port of a block of 100 nothing on this machine holds (never a fixed number)."""
    return int(free_range(100).partition("-")[0])


@pytest.fixture
def world(tmp_path, base):
    settings = Settings.load(data_dir=tmp_path / "data", poll_interval=0.02, instance_port_range=f"{base}-{base + 99}",
                             gpu_devices=[FIXTURE], worker_name="w")
    probe = FakeProbe()
    manager = ServeManager(settings, deployer=MemoryDeployer(initial=WorkloadState.RUNNING), probe=probe).start()
    server = FakeGPUStack()
    worker = settings.to_worker().model_copy(update={"id": WORKER_ID})
    sync = InstanceSync(manager, server, lambda: worker)  # type: ignore[arg-type]
    yield manager, server, sync, probe
    manager.close()


def _wait(manager, instance_id, state):
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if manager.get(instance_id).state is state:
            return
        time.sleep(0.02)
    raise AssertionError(manager.get(instance_id))


def test_a_scheduled_instance_goes_initializing_starting_running_then_deleted(world):
    manager, server, sync, probe = world
    server.objects["model-instances"][11] = _instance("scheduled")
    asyncio.run(sync.reconcile(_instance("scheduled")))
    initializing = server.objects["model-instances"][11]
    assert initializing["state"] == "initializing" and initializing["ports"] == [initializing["port"]]
    assert not manager.list()  # nothing runs before GPUStack says the files are ready

    starting = initializing | {"state": "starting", "resolved_path": "/models/tiny"}
    server.objects["model-instances"][11] = starting
    asyncio.run(sync.reconcile(starting))
    record = manager.get("gpustack-11")
    assert record.ports["http"] == initializing["port"] and record.gpus == [0]

    asyncio.run(sync.report())
    assert server.objects["model-instances"][11]["state"] == "starting"  # not ready yet
    probe.ready.add(record.endpoints.base_url)
    _wait(manager, "gpustack-11", InstanceState.RUNNING)
    asyncio.run(sync.report())
    assert server.objects["model-instances"][11]["state"] == "running"

    asyncio.run(sync.on_event({"type": 3, "id": 11, "data": {"id": 11}}))
    assert not manager.list()
    asyncio.run(sync.reconcile(server.objects["model-instances"][11]))  # a stale snapshot never revives it
    assert not manager.list()


def test_a_refused_instance_is_reported_as_error_naming_the_cause(world, base):
    manager, server, sync, _ = world
    bad = _instance("starting", ports=[base + 10], resolved_path="/models/tiny", gpu_indexes=[5])
    server.objects["model-instances"][11] = bad
    asyncio.run(sync.reconcile(bad))
    reported = server.objects["model-instances"][11]
    assert reported["state"] == "error" and "berth refused" in reported["state_message"]
    assert "gpu" in reported["state_message"].lower() and not manager.list()


def test_a_failed_engine_is_reported_and_resync_stops_what_gpustack_forgot(world, base):
    manager, server, sync, probe = world
    starting = _instance("starting", ports=[base + 20], port=base + 20, resolved_path="/models/tiny")
    server.objects["model-instances"][11] = starting
    asyncio.run(sync.reconcile(starting))
    manager.deployer.set_state("gpustack-11", WorkloadState.FAILED, exit_code=3, reason="engine crashed")
    _wait(manager, "gpustack-11", InstanceState.FAILED)
    asyncio.run(sync.report())
    reported = server.objects["model-instances"][11]
    assert reported["state"] == "error" and "exit code 3" in reported["state_message"]

    del server.objects["model-instances"][11]
    asyncio.run(sync.resync([]))
    assert not manager.list()


def test_unreachable_instances_whose_engine_kept_serving_are_running_again(world, base):
    manager, server, sync, probe = world
    starting = _instance("starting", ports=[base + 30], port=base + 30, resolved_path="/models/tiny")
    server.objects["model-instances"][11] = starting
    asyncio.run(sync.reconcile(starting))
    probe.ready.add(manager.get("gpustack-11").endpoints.base_url)
    _wait(manager, "gpustack-11", InstanceState.RUNNING)
    unreachable = server.objects["model-instances"][11] | {"state": "unreachable"}
    server.objects["model-instances"][11] = unreachable
    asyncio.run(sync.reconcile(unreachable))
    assert server.objects["model-instances"][11]["state"] == "running"


def test_a_subordinate_worker_starts_its_part_and_reports_in_its_entry(world, base):
    manager, server, sync, _ = world
    follower = _instance("starting", worker_id=1, ports=[base + 40, base + 41, base + 42], resolved_path="/models/tiny",
                         gpu_indexes=[0], distributed_servers={"mode": "initialize_later", "subordinate_workers": [
                             {"worker_id": WORKER_ID, "worker_ip": "127.0.0.1", "gpu_indexes": [0],
                              "state": "pending"}]})
    server.objects["model-instances"][11] = follower
    asyncio.run(sync.reconcile(follower))
    entry = server.objects["model-instances"][11]["distributed_servers"]["subordinate_workers"][0]
    assert entry["state"] == "running", entry  # initialize_later: running once its part is up
    assert manager.get("gpustack-11").endpoints.base_url is None  # a follower serves no HTTP
    assert server.objects["model-instances"][11]["state"] == "starting"  # the main worker's field is untouched


# -- model files, status, identity -----------------------------------------------------------------


def test_model_files_local_paths_ready_others_errors(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"x" * 100)
    (tmp_path / "config.json").write_text("{}")
    state, message, fields = check_local_model({"source": "local_path", "local_path": str(tmp_path)})
    assert state == "ready" and fields == {"resolved_paths": [str(tmp_path)], "size": 100, "download_progress": 100}
    state, message, _ = check_local_model({"source": "local_path", "local_path": "/no/such/model"})
    assert state == "error" and "/no/such/model" in message
    state, message, _ = check_local_model({"source": "huggingface", "huggingface_repo_id": "org/m"})
    assert state == "error" and "does not download" in message

    server = FakeGPUStack()
    server.objects["model-files"] = {
        1: {"id": 1, "worker_id": WORKER_ID, "state": "downloading", "source": "local_path", "local_path": str(tmp_path)},
        2: {"id": 2, "worker_id": 99, "state": "downloading", "source": "local_path", "local_path": str(tmp_path)},
    }
    asyncio.run(FileSync(server, WORKER_ID).resync(asyncio.run(server.list_all("model-files"))))  # type: ignore[arg-type]
    assert server.objects["model-files"][1]["state"] == "ready"
    assert server.objects["model-files"][2]["state"] == "downloading"  # another worker's


def test_status_reports_the_configured_device_with_name_and_memory(tmp_path):
    settings = Settings.load(data_dir=tmp_path, gpu_devices=[FIXTURE], port=8123)
    body = registration_body(settings, CPUSampler(), "uuid-1")
    device = body["status"]["gpu_devices"][0]
    assert device["name"] == "FIXTURE-not-a-gpu" and device["memory"]["total"] == 16 << 30
    assert device["type"] == "cuda" and body["port"] == 8123 and body["worker_uuid"] == "uuid-1"
    assert body["status"]["cpu"]["total"] == os.cpu_count() and body["status"]["memory"]["total"] > 0
    assert "state_message" in body and body["state_message"] is None


def test_identity_is_durable_private_and_bound_to_its_server(tmp_path):
    identity = Identity("http://gs:80", 7, "uuid", "w", "gpustack_secret")
    save_identity(tmp_path, identity)
    path = tmp_path / "gpustack" / "identity.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_identity(tmp_path, "http://gs:80") == identity
    assert load_identity(tmp_path, "http://other:80") is None
    assert "gpustack_secret" not in repr(identity)


# -- the worker endpoints GPUStack calls -------------------------------------------------------------


@pytest.fixture
def joined_app(tmp_path):
    settings = Settings.load(data_dir=tmp_path / "data", gpustack_url="http://127.0.0.1:9", gpustack_token="reg",
                             api_token="berth-own", poll_interval=0.05)
    save_identity(settings.data_dir, Identity("http://127.0.0.1:9", 7, "uuid", "w", "gpustack_worker_token"))
    deployer = MemoryDeployer(initial=WorkloadState.RUNNING)
    manager = ServeManager(settings, deployer=deployer, probe=FakeProbe())
    with TestClient(create_app(manager)) as client:
        yield client, manager, deployer, tmp_path


def test_worker_endpoints_take_the_gpustack_token(joined_app):
    client, _, _, tmp_path = joined_app
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text('{"hidden_size": 64}')
    (tmp_path / "m" / "w.safetensors").write_bytes(b"0" * 10)
    gpustack = {"Authorization": "Bearer gpustack_worker_token"}
    assert client.get("/healthz").status_code == 200
    assert client.get("/files/file-exists", params={"path": str(tmp_path)}).status_code == 401
    exists = client.get("/files/file-exists", params={"path": str(tmp_path / "m")}, headers=gpustack).json()
    assert exists == {"exists": True, "path": str(tmp_path / "m"), "is_file": False, "is_dir": True}
    config = client.get("/files/model-config", params={"path": str(tmp_path / "m" / "config.json")}, headers=gpustack)
    assert config.json() == {"hidden_size": 64}
    secret = client.get("/files/model-config", params={"path": "/etc/shadow"}, headers=gpustack)
    assert secret.status_code == 403
    size = client.get("/files/model-weight-size", params={"path": str(tmp_path / "m")}, headers=gpustack)
    assert size.json() == {"size": 10}
    relative = client.get("/files/file-exists", params={"path": "etc"}, headers=gpustack)
    assert relative.status_code == 422 and "absolute" in relative.json()["detail"]
    # GPUStack's token opens GPUStack's paths only, not berth's management API.
    assert client.get("/v2/instances", headers=gpustack).status_code == 401
    assert client.get("/v2/instances", headers={"Authorization": "Bearer berth-own"}).status_code == 200


def test_serve_logs_tail_pages_and_404(joined_app):
    client, manager, deployer, _ = joined_app
    spec = {"model": {"name": "tiny"}, "instance": {"name": "gpustack-11", "model_name": "tiny"},
            "worker": {"ip": "127.0.0.1"}, "model_path": "/models/tiny"}
    own = {"Authorization": "Bearer berth-own"}
    assert client.post("/v2/instances", json=spec, headers=own).status_code == 201
    deployer.write_log("gpustack-11", b"".join(f"line {i}\n".encode() for i in range(10)))
    gpustack = {"Authorization": "Bearer gpustack_worker_token"}
    assert client.get("/serveLogs/11", params={"tail": 3}, headers=gpustack).content == b"line 7\nline 8\nline 9\n"
    assert client.get("/serveLogs/11", headers=gpustack).content.count(b"\n") == 10
    page = client.get("/serveLogs/11", params={"offset": 2, "limit": 2}, headers=gpustack)
    assert page.content == b"line 2\nline 3\n" and page.headers["x-log-total-lines"] == "10"
    assert client.get("/serveLogs/99", headers=gpustack).status_code == 404
    options = client.get("/serveLogOptions/11", headers=gpustack).json()
    assert options["restarts"][0]["previous"] is False
    assert tail_start(manager, "gpustack-11", 0, manager.log_size("gpustack-11")) == manager.log_size("gpustack-11")
    assert line_window(manager, "gpustack-11", 9, 5).line_count == 1


def test_follow_streams_appends_and_ends_when_the_instance_is_deleted(joined_app, monkeypatch):
    from berth.worker.gpustack import _logs as logs

    client, manager, deployer, _ = joined_app
    monkeypatch.setattr(logs, "FOLLOW_POLL_S", 0.01)
    spec = {"model": {"name": "tiny"}, "instance": {"name": "gpustack-12", "model_name": "tiny"},
            "worker": {"ip": "127.0.0.1"}, "model_path": "/models/tiny"}
    assert client.post("/v2/instances", json=spec, headers={"Authorization": "Bearer berth-own"}).status_code == 201
    deployer.write_log("gpustack-12", b"one\ntwo\n")

    async def follow() -> list[bytes]:
        seen: list[bytes] = []
        stream = logs.follow_log(manager, "gpustack-12", 1, True)
        seen.append(await anext(stream))
        deployer.write_log("gpustack-12", b"three\n")
        seen.append(await anext(stream))
        await asyncio.to_thread(manager.delete, "gpustack-12")
        seen.extend([chunk async for chunk in stream])
        return seen

    assert asyncio.run(follow()) == [b"two\n", b"three\n"]


# -- a server that is down or failing ------------------------------------------------------------------


def test_client_tells_retryable_failures_from_refusals():
    import httpx

    from berth.worker.gpustack._client import GPUStackClient, ServerUnavailable

    answers = iter([httpx.Response(503, json={"message": "db down"}), httpx.Response(403, json={"message": "no"}),
                    httpx.Response(200, json={"id": 1})])

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer tok"
        return next(answers)

    async def calls() -> None:
        client = GPUStackClient("http://gpustack.invalid")
        client.token = "tok"
        client._http = httpx.AsyncClient(base_url="http://gpustack.invalid/v2", transport=httpx.MockTransport(handler))
        with pytest.raises(ServerUnavailable, match="503 db down"):
            await client.call("GET", "/workers")
        with pytest.raises(ServerRefused) as refused:
            await client.call("GET", "/workers")
        assert refused.value.status == 403
        assert await client.call("GET", "/workers") == {"id": 1}
        down = GPUStackClient("http://127.0.0.1:9")  # nothing listens there
        with pytest.raises(ServerUnavailable, match="ConnectError"):
            await down.call("POST", "/worker-heartbeat", body={})
        await client.close()
        await down.close()

    asyncio.run(calls())


def test_a_failing_loop_backs_off_logs_once_and_recovers(tmp_path, caplog):
    from berth.worker.gpustack._agent import GPUStackAgent
    from berth.worker.gpustack._client import ServerUnavailable

    settings = Settings.load(data_dir=tmp_path, gpustack_url="http://127.0.0.1:9")
    agent = GPUStackAgent(ServeManager(settings, deployer=MemoryDeployer()))
    calls: list[float] = []

    async def step() -> None:
        calls.append(time.monotonic())
        if len(calls) <= 3:
            raise ServerUnavailable("POST /worker-heartbeat: 502 bad gateway")
        if len(calls) == 5:
            raise asyncio.CancelledError

    caplog.set_level("INFO", logger="berth.worker.gpustack._agent")
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(agent._every("heartbeat", step, 0.01))
    assert len(calls) == 5
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "instances keep serving" in warnings[0].getMessage()
    assert any("works again" in r.getMessage() for r in caplog.records)


def test_backoff_doubles_up_to_its_ceiling_with_jitter_and_resets():
    from berth.worker.gpustack._client import server_backoff

    backoff = server_backoff(initial=1.0, maximum=8.0)
    delays = [backoff.next() for _ in range(6)]
    for delay, nominal in zip(delays, [1, 2, 4, 8, 8, 8]):
        assert 0.8 * nominal <= delay <= 1.2 * nominal
    backoff.reset()
    assert backoff.next() <= 1.2


def test_gpustack_settings_name_their_field(tmp_path):
    from pydantic import ValidationError

    assert Settings.load(data_dir=tmp_path, gpustack_url="http://gs:80/").gpustack_url == "http://gs:80"
    with pytest.raises(ValidationError, match="gpustack_url"):
        Settings.load(data_dir=tmp_path, gpustack_url="gs:80")
    token = Settings.load(data_dir=tmp_path, gpustack_url="http://gs", gpustack_token="reg-secret")
    assert "reg-secret" not in repr(token) and "reg-secret" not in str(token.model_dump())


def test_file_checks_answer_404_for_what_is_not_here(joined_app):
    client, _, _, tmp_path = joined_app
    gpustack = {"Authorization": "Bearer gpustack_worker_token"}
    missing = client.get("/files/model-config", params={"path": str(tmp_path / "none" / "config.json")},
                         headers=gpustack)
    assert missing.status_code == 404 and "not a file" in missing.json()["detail"]
    assert client.get("/files/model-weight-size", params={"path": str(tmp_path / "none")},
                      headers=gpustack).status_code == 404
    assert client.get("/files/file-exists", params={"path": str(tmp_path / "none")},
                      headers=gpustack).json()["exists"] is False
