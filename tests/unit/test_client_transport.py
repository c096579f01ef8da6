"""Retries on connection errors, timeouts, and base URL handling."""

from __future__ import annotations

import time

import pytest

from berth.client import ClientError, RequestTimeout, ServerUnavailable, VLLMClient
from berth.client.transport import Transport, normalize_base_url
from berth.testing.stub_server import StubServer
from tests.support.ports import free_port


def test_dropped_connections_are_retried():
    with StubServer(drop_first=2) as stub, VLLMClient(
        base_url=stub.base_url, model="stub-model", retry_backoff=0.01
    ) as client:
        assert client.generate(["x"]) == [["x"]]
        assert stub.drop_first == 0 and stub.served == 1


def test_retries_run_out_with_a_clear_error():
    with StubServer(drop_first=10) as stub, VLLMClient(
        base_url=stub.base_url, model="stub-model", max_retries=2, retry_backoff=0.01
    ) as client:
        with pytest.raises(ServerUnavailable, match="after 3 attempt"):
            client.generate(["x"])
    assert stub.drop_first == 7


def test_refused_connection_is_server_unavailable():
    url = f"http://127.0.0.1:{free_port()}"
    with VLLMClient(base_url=url, model="m", max_retries=1, retry_backoff=0.01) as client:
        with pytest.raises(ServerUnavailable, match="is the server running"):
            client.chat([[{"role": "user", "content": "hi"}]])
        assert not client.is_healthy()


def test_backoff_grows_between_retries():
    transport = Transport(backoff=0.1)
    pauses = [transport._pause(attempt) for attempt in range(4)]
    assert all(0.05 * 2**i <= p <= 0.1 * 2**i for i, p in enumerate(pauses))


def test_slow_answer_times_out_without_retry():
    with StubServer(delay=30.0) as stub, VLLMClient(
        base_url=stub.base_url, model="stub-model", timeout=0.2
    ) as client:
        started = time.monotonic()
        with pytest.raises(RequestTimeout, match="client timeout of 0.2 s"):
            client.generate(["x"])
        assert time.monotonic() - started < 10  # far below the answer's 30 s, whatever the machine's load
        assert stub.served == 1


@pytest.mark.parametrize(
    ("given", "expected"),
    [("http://h:8000", "http://h:8000"), ("http://h:8000/v1/", "http://h:8000"),
     (" https://h/ ", "https://h")],
)
def test_base_url_is_normalized(given, expected):
    assert normalize_base_url(given) == expected


@pytest.mark.parametrize("bad", ["h:8000", "ftp://h", "http://"])
def test_bad_base_url_names_the_field(bad):
    with pytest.raises(ClientError, match="base_url"):
        VLLMClient(base_url=bad)


def test_invalid_limits_are_refused():
    with pytest.raises(ClientError, match="max_concurrency"):
        VLLMClient(max_concurrency=0)
    with pytest.raises(ClientError, match="max_retries"):
        VLLMClient(max_retries=-1)


def test_api_key_is_sent_but_never_shown():
    with StubServer() as stub:
        client = VLLMClient(base_url=stub.base_url, api_key="sk-secret-value")
        assert "sk-secret" not in repr(client) and "sk-secret" not in repr(client._transport)
        assert client._transport._headers["Authorization"] == "Bearer sk-secret-value"
        client.close()
