"""Model swapping over the in-memory deployer: definitions, single-flight activation, deadlines,
the engine budget (LRU, pinned), the idle policy, the /v2/models API, events and metrics."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Sequence

import pytest
from fastapi.testclient import TestClient

from berth.deployers.memory import MemoryDeployer
from berth.schemas.workload import WorkloadState
from berth.worker import ServeManager, Settings, create_app
from berth.worker.admission._launcher_spec import LauncherRequest
from berth.worker.engine._readiness import Readiness
from berth.worker.routing._activation import (
    ModelActivator,
    ModelUnavailable,
    UnknownModel,
)
from berth.worker.swap import ModelRegistration, SwapController
from tests.support.ports import free_range
from tests.support.swap_engine import FakeEngine


class GatedProbe:
    """Ready once :attr:`open` is set; counts checks."""

    def __init__(self, open_: bool = True) -> None:
        self.open = threading.Event()
        if open_:
            self.open.set()

    def check(self, base_url: str, served_names: Sequence[str]) -> Readiness:
        return Readiness(self.open.is_set(), "" if self.open.is_set() else "loading (gated probe)")

    def close(self) -> None:
        pass


def settings(tmp_path, **extra) -> Settings:
    base = {"data_dir": tmp_path / "data", "poll_interval": 0.05, "instance_port_range": free_range(100),
            "swap_drain_timeout": 0.2}
    return Settings.load(**{**base, **extra})


@pytest.fixture
def world(tmp_path):
    """(controller, manager, deployer, probe) factory; everything closed at the end."""
    made = []

    def make(probe=None, initial=WorkloadState.RUNNING, engine=None, **extra):
        deployer = MemoryDeployer(initial=initial)
        probe = probe or GatedProbe()
        manager = ServeManager(settings(tmp_path, **extra), deployer=deployer, probe=probe).start(watch=False)
        swap = SwapController(manager, engine=engine or FakeEngine()).start(policy=False)
        made.append((swap, manager))
        return swap, manager, deployer, probe

    yield make
    for swap, manager in made:
        swap.close()
        manager.close()


def register(swap, name, options=None, **extra):
    body = {"name": name, "launcher": {"options": options or f"--model /models/{name}"}, **extra}
    return swap.register(ModelRegistration.model_validate(body))


def state(swap, name):
    return swap.state_of(name)[0]


def age(swap, name, seconds):
    """The model's last request ``seconds`` further in the past."""
    swap._state.use(name, swap._state.used_at(name) - seconds)


# -- definitions ---------------------------------------------------------------------------


def test_registration_adds_the_served_name_and_masks_secrets(world):
    swap, manager, deployer, _ = world()
    body = {"name": "tiny", "launcher": {"options": "--model /models/t --api-key sk-verysecret",
                                         "env_vars": {"HF_TOKEN": "hf_secret_value"}}}
    definition = swap.register(ModelRegistration.model_validate(body))
    assert definition.request["options"].endswith("--served-model-name tiny")
    assert state(swap, "tiny") == "parked" and deployer.created == [] and manager.list() == []
    shown = json.dumps(swap.view(definition))
    assert "hf_secret_value" not in shown and "sk-verysecret" not in shown
    assert swap.store.get("tiny").request["env_vars"]["HF_TOKEN"] == "hf_secret_value"  # kept to start it


def test_sleep_level_adds_sleep_mode_and_dev_mode(world):
    swap, *_ = world()
    definition = register(swap, "s", sleep_level=1)
    assert "--enable-sleep-mode" in definition.request["options"]
    assert definition.request["env_vars"]["VLLM_SERVER_DEV_MODE"] == "1"


def test_registration_errors_name_the_field(world):
    swap, *_ = world()
    register(swap, "a")
    with pytest.raises(Exception, match="name: model 'a' is already registered"):
        register(swap, "a", options="--model /models/other")
    with pytest.raises(Exception, match="options: --model is required"):
        register(swap, "b", options="--port 1")
    with pytest.raises(Exception, match="differs from the --served-model-name 'x'"):
        register(swap, "c", options="--model /m --served-model-name x")
    with pytest.raises(ValueError, match="exactly one of launcher"):
        ModelRegistration.model_validate({"name": "d"})


def test_definitions_survive_a_restart(world, tmp_path):
    swap, manager, *_ = world()
    register(swap, "keep", pinned=True)
    again, *_ = world()  # a second worker on the same data dir, as after a restart
    assert again.get("keep").pinned and state(again, "keep") == "parked"


# -- activation ----------------------------------------------------------------------------


def test_a_request_for_a_parked_model_starts_it(world):
    swap, manager, deployer, _ = world()
    register(swap, "m")
    activation = swap.activate("m", 5)
    assert (activation.instance_id, activation.path) == ("m", "cold")  # memory deployer: not the launcher's fork
    assert state(swap, "m") == "running" and len(deployer.created) == 1
    assert swap.activate("m", 5).path == "running" and len(deployer.created) == 1


def test_concurrent_requests_share_one_start(world):
    probe = GatedProbe(open_=False)
    swap, manager, deployer, _ = world(probe=probe)
    register(swap, "m")

    async def many():
        tasks = [asyncio.create_task(swap.ensure_ready("m", 10)) for _ in range(20)]
        await asyncio.sleep(0.3)
        assert not any(task.done() for task in tasks)
        probe.open.set()
        return await asyncio.gather(*tasks)

    assert asyncio.run(many()) == ["m"] * 20
    assert len(deployer.created) == 1


def test_a_start_past_the_deadline_is_503_with_retry_after_and_goes_on(world):
    probe = GatedProbe(open_=False)
    swap, manager, deployer, _ = world(probe=probe)
    register(swap, "slow")
    with pytest.raises(ModelUnavailable) as caught:
        asyncio.run(swap.ensure_ready("slow", 0.2))
    assert caught.value.status_code == 503 and caught.value.retry_after >= 1
    assert "slow" in str(caught.value) and "starting" in str(caught.value)
    probe.open.set()
    assert asyncio.run(swap.ensure_ready("slow", 5)) == "slow"
    assert len(deployer.created) == 1  # the retry joined the start that went on


def test_an_unregistered_model_is_unknown(world):
    swap, *_ = world()
    with pytest.raises(UnknownModel, match="'nope' is not registered"):
        asyncio.run(swap.ensure_ready("nope", 1))
    assert isinstance(swap, ModelActivator)


def test_a_model_that_fails_to_start_says_why(world):
    swap, *_ = world(initial=WorkloadState.FAILED)
    register(swap, "broken")
    with pytest.raises(ModelUnavailable, match="failed to start"):
        swap.activate("broken", 5)
    assert state(swap, "broken") == "failed"


def test_a_model_not_ready_within_swap_ready_timeout_is_parked(world):
    swap, *_ = world(probe=GatedProbe(open_=False), swap_ready_timeout=0.3)
    register(swap, "never")
    with pytest.raises(ModelUnavailable, match="was not ready within swap_ready_timeout"):
        swap.activate("never", 5)
    assert state(swap, "never") == "parked"


# -- budget and idle policy ----------------------------------------------------------------


def test_budget_of_one_parks_the_other_model(world):
    swap, manager, *_ = world(swap_max_engines=1)
    register(swap, "a")
    register(swap, "b")
    for name in ["a", "b", "a", "b"]:
        swap.activate(name, 5)
        age(swap, name, 5)  # the last request is done
        other = "b" if name == "a" else "a"
        assert (state(swap, name), state(swap, other)) == ("running", "parked")
    text = manager.metrics.render().decode()
    assert 'berth_model_evictions_total{action="park",reason="budget"} 3.0' in text
    assert 'berth_model_activations_total{path="cold"} 4.0' in text


def test_budget_evicts_the_least_recently_used(world):
    swap, *_ = world(swap_max_engines=2)
    for name in "abc":
        register(swap, name)
    swap.activate("a", 5)
    swap.activate("b", 5)
    swap._state.use("a", time.time() - 5)
    swap._state.use("b", time.time() - 10)
    swap.touch("a")  # a request for a: b is now the least recently used
    age(swap, "a", 5)
    swap.activate("c", 5)
    assert [state(swap, n) for n in "abc"] == ["running", "parked", "running"]


def test_pinned_and_busy_models_are_not_evicted(world, monkeypatch):
    from berth.worker.swap import _transitions as transitions
    # "just routed" must still hold when the next line runs on a busy machine, however late that is
    monkeypatch.setattr(transitions, "IN_TRANSIT_S", 60.0)
    swap, *_ = world(swap_max_engines=1)
    register(swap, "pinned", pinned=True)
    register(swap, "other")
    swap.activate("pinned", 5)
    age(swap, "pinned", 5)
    with pytest.raises(ModelUnavailable, match="budget of 1 engines") as caught:
        swap.activate("other", 5)
    assert caught.value.retry_after >= 1
    swap.pin("pinned", False)
    swap.touch("pinned")  # a request just routed to it: still in transit
    with pytest.raises(ModelUnavailable):
        swap.activate("other", 5)
    age(swap, "pinned", 61)
    assert swap.activate("other", 5).path == "cold" and state(swap, "pinned") == "parked"


def test_idle_models_are_parked_and_pinned_ones_kept(world):
    swap, manager, *_ = world(swap_idle_timeout=30)
    register(swap, "idle")
    register(swap, "quick", idle_timeout=1)
    register(swap, "pinned", pinned=True)
    for name in ("idle", "quick", "pinned"):
        swap.activate(name, 5)
        age(swap, name, 5)
    swap.run_policy()
    assert [state(swap, n) for n in ("idle", "quick", "pinned")] == ["running", "parked", "running"]
    age(swap, "idle", 60)
    age(swap, "pinned", 60)
    swap.run_policy()
    assert [state(swap, n) for n in ("idle", "pinned")] == ["parked", "running"]
    assert 'berth_model_evictions_total{action="park",reason="idle"} 2.0' in manager.metrics.render().decode()


def test_an_instance_being_evicted_takes_no_new_requests(world):
    swap, manager, *_ = world(swap_max_engines=1, swap_drain_timeout=5)
    register(swap, "old")
    register(swap, "new")
    swap.activate("old", 5)
    assert swap.routable("old") and swap.routable("not-a-model-instance")
    swap.touch("old")  # in transit: the eviction waits, and meanwhile the router must not pick it
    flight = threading.Thread(target=swap.activate, args=("new", 10))
    flight.start()
    time.sleep(0.2)
    assert swap.routable("old") is False and state(swap, "old") == "running"
    flight.join(timeout=10)
    assert state(swap, "old") == "parked" and state(swap, "new") == "running"


def test_sleep_needs_a_sleep_level(world):
    swap, *_ = world()
    register(swap, "m")
    swap.activate("m", 5)
    with pytest.raises(Exception, match="registered without sleep_level") as caught:
        swap.sleep("m")
    assert caught.value.status_code == 409


# -- the API -------------------------------------------------------------------------------


@pytest.fixture
def client(tmp_path):
    manager = ServeManager(settings(tmp_path, swap_max_engines=1), deployer=MemoryDeployer(), probe=GatedProbe())
    app = create_app(manager)
    app.state.services.swap._transitions.engine = FakeEngine()  # every engine idle: the memory deployer's have no /metrics
    with TestClient(app) as test_client:
        yield test_client


def test_api_register_wake_park_pin_and_forget(client):
    created = client.post("/v2/models", json={"name": "org/tiny", "launcher": {"options": "--model /models/t"}})
    assert created.status_code == 201, created.text
    assert created.json()["state"] == "parked" and created.json()["instance_id"] == "tiny"
    woken = client.post("/v2/models/org/tiny/wake", params={"timeout": 5})
    assert woken.status_code == 200 and woken.json()["path"] == "cold" and woken.json()["state"] == "running"
    assert client.get("/v2/instances/tiny").json()["state"] == "running"
    assert client.post("/v2/models/org/tiny/pin").json()["pinned"] is True
    assert client.post("/v2/models/org/tiny/unpin").json()["pinned"] is False
    assert client.post("/v2/models/org/tiny/park").json()["state"] == "parked"
    assert client.get("/v2/instances/tiny").status_code == 404
    assert [m["name"] for m in client.get("/v2/models").json()["models"]] == ["org/tiny"]
    assert client.delete("/v2/models/org/tiny").status_code == 200
    assert client.get("/v2/models/org/tiny").status_code == 404


def test_api_errors_are_json_with_fields(client):
    both = client.post("/v2/models", json={"launcher": {"options": "--model /m"}, "spec": {}})
    assert both.status_code == 422 and "spec" in both.json()["detail"]
    neither = client.post("/v2/models", json={"name": "x"})
    assert neither.status_code == 422 and "exactly one of launcher" in neither.json()["detail"]
    bad = client.post("/v2/models", json={"launcher": {"options": "--port 5"}})
    assert bad.status_code == 422 and bad.json()["detail"].startswith("options: --model is required")
    assert client.post("/v2/models/ghost/wake").status_code == 404
    assert client.post("/v2/models/ghost/wake", params={"timeout": -1}).status_code == 422
    client.post("/v2/models", json={"name": "m", "launcher": {"options": "--model /m"}})
    client.post("/v2/models/m/wake")
    asleep = client.post("/v2/models/m/sleep")
    assert asleep.status_code == 409 and "sleep_level" in asleep.json()["detail"]


def test_api_budget_full_is_503_with_retry_after(client):
    for name in ("p", "q"):
        client.post("/v2/models", json={"name": name, "pinned": name == "p", "launcher": {"options": f"--model /{name}"}})
    assert client.post("/v2/models/p/wake").status_code == 200
    busy = client.post("/v2/models/q/wake", params={"timeout": 5})
    assert busy.status_code == 503 and int(busy.headers["Retry-After"]) >= 1
    assert "swap_max_engines" in busy.json()["detail"]


def test_api_events_and_metrics(client):
    client.post("/v2/models", json={"name": "m", "launcher": {"options": "--model /m"}})
    client.post("/v2/models/m/wake")
    client.post("/v2/models/m/park")
    lines = client.get("/v2/instances/watch", params={"since": 0, "timeout": 0.5}).text.splitlines()
    kinds = [json.loads(line)["type"] for line in lines]
    assert [k for k in kinds if k.startswith("model.")] == ["model.registered", "model.starting", "model.ready",
                                                            "model.parked"]
    ready = next(json.loads(line) for line in lines if json.loads(line)["type"] == "model.ready")
    assert ready["instance"]["model"] == "m" and ready["instance"]["path"] == "cold"
    text = client.get("/metrics").text
    assert 'berth_model_actuation_seconds_count{path="cold"} 1.0' in text
    assert 'berth_models{state="parked"} 1.0' in text


def test_swap_can_be_turned_off(tmp_path):
    manager = ServeManager(settings(tmp_path, swap_enabled=False), deployer=MemoryDeployer(), probe=GatedProbe())
    app = create_app(manager)
    with TestClient(app) as test_client:
        assert test_client.get("/v2/models").status_code == 404
    assert app.state.services.activator is None and app.state.services.swap is None


def test_berth_ps_shows_parked_and_sleeping_models():
    from berth.cli._remote_cmds import _with_models

    views = [{"instance_id": "a", "state": "running", "served_names": ["a"]},
             {"instance_id": "other", "state": "starting", "served_names": ["x"]}]
    models = [{"name": "a", "instance_id": "a", "state": "asleep", "reason": "sleeping at level 1"},
              {"name": "org/b", "instance_id": "b", "state": "parked", "reason": "no engine runs"}]
    shown = _with_models(views, models)
    assert [(v["instance_id"], v.get("model_state"), v["state"]) for v in shown] == [
        ("a", "asleep", "running"), ("other", None, "starting"), ("b", "parked", "parked")]
    assert shown[2]["served_names"] == ["org/b"] and shown[2]["status"] == "stopped"


def test_an_instance_of_another_model_under_the_id_is_never_taken_for_it(world):
    swap, manager, *_ = world()
    register(swap, "mine", instance_id="shared-id")
    manager.create_from_launcher(LauncherRequest(options="--model /models/theirs"), "shared-id")
    assert state(swap, "mine") == "parked"
    with pytest.raises(Exception, match="already exists") as caught:
        swap.activate("mine", 5)
    assert caught.value.status_code == 409


GPU0 = [{"index": 0, "uuid": "GPU-0", "vendor": "nvidia", "memory_total": 80 << 30}]


def register_gpu(swap, name, **extra):
    launcher = {"options": f"--model /models/{name} {extra.pop('options', '')}", "gpu_uuids": ["GPU-0"]}
    return swap.register(ModelRegistration.model_validate(
        {"name": name, "launcher": launcher, "allow_shared_gpus": True, **extra}))


def test_memory_budget_evicts_on_the_gpu_until_the_model_fits(world):
    swap, *_ = world(gpu_devices=GPU0, swap_gpu_memory_gib=70)
    register_gpu(swap, "a", gpu_memory_gib=40)
    register_gpu(swap, "b", gpu_memory_gib=20)
    register_gpu(swap, "c", gpu_memory_gib=30)
    swap.activate("a", 5)
    swap.activate("b", 5)  # 60 of 70 GiB: both fit
    swap._state.use("a", time.time() - 20)
    swap._state.use("b", time.time() - 10)
    swap.activate("c", 5)  # 90 > 70: the least recently used (a) goes, 50 GiB remain
    assert [state(swap, n) for n in "abc"] == ["parked", "running", "running"]


def test_memory_budget_default_is_vllms_share_of_the_gpu_and_pinned_models_stay(world):
    swap, *_ = world(gpu_devices=GPU0, swap_gpu_memory_gib=70)
    assert register_gpu(swap, "half", options="--gpu-memory-utilization 0.5", pinned=True).gpu_memory_gib == 40.0
    assert register_gpu(swap, "full").gpu_memory_gib == 72.0  # vLLM's default 0.9 of 80 GiB
    register_gpu(swap, "third", gpu_memory_gib=35)
    swap.activate("half", 5)
    with pytest.raises(ModelUnavailable, match="needs 35 GiB on GPU 0, where 40 of the 70 GiB budget"):
        swap.activate("third", 5)
    with pytest.raises(Exception, match="more than the whole 70 GiB budget") as caught:
        swap.activate("full", 5)
    assert caught.value.status_code == 409


def test_a_spec_definition_starts_as_a_spec_instance(client):
    spec = {"model": {"name": "tiny", "env": {"HF_TOKEN": "hf_planted_secret"}, "backend_parameters": ["--enforce-eager"]},
            "instance": {"name": "spec-tiny", "model_name": "tiny"}, "worker": {"ip": "127.0.0.1"},
            "model_path": "/models/tiny"}
    created = client.post("/v2/models", json={"name": "tiny-chat", "spec": spec, "sleep_level": 2})
    assert created.status_code == 201, created.text
    view = created.json()
    assert (view["instance_id"], view["source"]) == ("spec-tiny", "spec") and "hf_planted_secret" not in created.text
    assert client.post("/v2/models/tiny-chat/wake").json()["state"] == "running"
    instance = client.get("/v2/instances/spec-tiny").json()
    assert instance["served_names"] == ["tiny-chat"] and instance["source"] == "spec"
    params = instance["spec"]["model"]["backend_parameters"]
    assert params == ["--enforce-eager", "--enable-sleep-mode"]
    assert instance["spec"]["model"]["env"]["VLLM_SERVER_DEV_MODE"] == "1"


def test_two_apps_over_one_worker_share_the_swap_metrics(tmp_path):
    manager = ServeManager(settings(tmp_path), deployer=MemoryDeployer(), probe=GatedProbe())
    create_app(manager, start=False, close=False)
    app = create_app(manager)
    with TestClient(app) as client:
        client.post("/v2/models", json={"name": "m", "launcher": {"options": "--model /m"}})
        assert 'berth_models{state="parked"} 1.0' in client.get("/metrics").text
