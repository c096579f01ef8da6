"""VLLMService over stubs: spreading by outstanding work, order, attach, failover, start/stop."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from berth.client import (
    ClientError,
    LLMConfig,
    ServeConfig,
    ServerStartError,
    ServerUnavailable,
    VLLMService,
    instance_base_url,
)
from berth.client.attach import base_url_from_instance
from berth.deployers.memory import MemoryDeployer
from berth.schemas.workload import WorkloadState
from berth.testing.stub_server import StubServer
from tests.support.ports import free_port


@pytest.fixture
def two_stubs():
    with StubServer() as first, StubServer() as second:
        yield first, second


def chats(count: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"c{i}"}] for i in range(count)]


def attached(*stubs: StubServer, **config: object) -> VLLMService:
    return VLLMService(serve_config=ServeConfig(**config), attach=[s.base_url for s in stubs])


def test_batch_spreads_over_both_and_keeps_order(two_stubs):
    with attached(*two_stubs, max_concurrency=4) as service:
        assert service.chat(chats(200)) == [[f"c{i}"] for i in range(200)]
        assert service.generate([f"p{i}" for i in range(64)]) == [[f"p{i}"] for i in range(64)]
        first, second = (e.answered for e in service.endpoints)
    # both serve a real share; not an even one: work follows whichever answers first, and on a
    # loaded machine one stub's thread can lag for a while (a slower server gets less, by design)
    assert first + second > 200 and min(first, second) >= 0.1 * (first + second)


def test_small_batch_alternates_between_servers(two_stubs):
    with attached(*two_stubs) as service:
        service.chat(chats(2))
        assert [e.answered for e in service.endpoints] == [1, 1]


def test_slower_server_gets_less_work():
    with StubServer(delay=0.2) as slow, StubServer() as fast, attached(
        slow, fast, max_concurrency=2
    ) as service:
        assert service.chat(chats(60)) == [[f"c{i}"] for i in range(60)]
        slow_count, fast_count = (e.answered for e in service.endpoints)
    assert fast_count > 2 * slow_count


def test_work_moves_off_a_server_that_goes_away(two_stubs):
    first, second = two_stubs
    service = attached(first, second, max_retries=0)
    service.chat(chats(4))
    first.stop()
    with service:
        assert service.chat(chats(40)) == [[f"c{i}"] for i in range(40)]
        assert service.endpoints[0].down
    assert second.served > first.served


def test_no_reachable_server_is_server_unavailable():
    url = f"http://127.0.0.1:{free_port()}"
    service = VLLMService(serve_config=ServeConfig(max_retries=0), attach=[url], model="m")
    with service, pytest.raises(ServerUnavailable):
        service.generate(["x"])


def test_service_without_servers_says_so():
    with VLLMService() as service, pytest.raises(ServerUnavailable, match="no running server"):
        service.chat(chats(1))


def fake_service(stubs: list[StubServer], deployer: MemoryDeployer) -> VLLMService:
    config = ServeConfig(num_servers=len(stubs), port=stubs[0].port, startup_timeout=5,
                         server="openai")
    return VLLMService(LLMConfig(model_name="stub-model"), config, deployer=deployer)


def test_started_servers_get_consecutive_ports_and_stop_together():
    deployer = MemoryDeployer()
    with StubServer() as first:
        with StubServer(port=first.port + 1) as second:
            with fake_service([first, second], deployer) as service:
                assert service.is_running()
                assert [s.port for s in service.servers] == [first.port, first.port + 1]
                assert service.chat(chats(10)) == [[f"c{i}"] for i in range(10)]
                assert first.served and second.served
            assert not service.is_running() and deployer.list() == []


def test_dead_started_server_is_left_out_of_batches():
    deployer = MemoryDeployer()
    with StubServer() as first, StubServer(port=first.port + 1) as second:
        with fake_service([first, second], deployer) as service:
            deployer.set_state(service.servers[0].name, WorkloadState.FAILED)
            served = first.served
            service.generate(["a", "b", "c", "d"])
            assert first.served == served and second.served > 0


def test_one_failed_start_stops_the_others():
    deployer = MemoryDeployer()
    with StubServer() as only:  # nothing listens on the second port
        service = VLLMService(
            LLMConfig(model_name="stub-model"),
            ServeConfig(num_servers=2, port=only.port, startup_timeout=1, server="openai"),
            deployer=deployer)
        with pytest.raises(ServerStartError):
            service.start()
    assert deployer.list() == [] and service.servers == []


class _Worker(BaseHTTPRequestHandler):
    instances: dict[str, dict[str, str]] = {}

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.headers.get("Authorization") != "Bearer w-token":
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = self.instances.get(self.path.rsplit("/", 1)[-1])
        payload = json.dumps(body or {"detail": "not found"}).encode()
        self.send_response(200 if body else 404)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def worker(two_stubs):
    first, second = two_stubs
    _Worker.instances = {"a": {"readiness_url": f"{first.base_url}/health"},
                         "b": {"status": {"base_url": second.base_url}}}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Worker)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_attach_to_worker_instances_by_id(worker, two_stubs):
    assert instance_base_url(worker, "a", token="w-token") == two_stubs[0].base_url
    with pytest.raises(ClientError, match="HTTP 401; pass the worker's token"):
        instance_base_url(worker, "a")
    with VLLMService.from_worker(worker, ["a", "b"], worker_token="w-token") as service:
        assert service.generate(["x", "y"]) == [["x"], ["y"]]
        assert [e.base_url for e in service.endpoints] == [s.base_url for s in two_stubs]
    with pytest.raises(ClientError, match="HTTP 404"):
        instance_base_url(worker, "zzz", token="w-token")


def test_instance_without_address_is_a_clear_error():
    with pytest.raises(ClientError, match="neither base_url nor readiness_url"):
        base_url_from_instance({"name": "x", "status": {"state": "starting"}})
