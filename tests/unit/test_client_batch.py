"""VLLMClient against the instant stub: order, n > 1, return_extra, inputs, async variants."""

from __future__ import annotations

import asyncio
import threading

import pytest

from berth.client import ClientError, ResponseOutput, ServerError, VLLMClient
from berth.testing.stub_server import StubServer


@pytest.fixture
def stub():
    with StubServer(record=True) as server:
        yield server


@pytest.fixture
def client(stub):
    with VLLMClient(base_url=stub.base_url, max_concurrency=8) as c:
        yield c


def convs(count: int) -> list[list[dict[str, str]]]:
    return [[{"role": "system", "content": "be brief"}, {"role": "user", "content": f"q{i}"}]
            for i in range(count)]


def test_chat_answers_in_input_order(client):
    answers = client.chat(convs(300))
    assert answers == [[f"q{i}"] for i in range(300)]


def test_generate_splits_list_requests_by_index_in_order(client, stub):
    prompts = [f"p{i}" for i in range(1000)]
    assert client.generate(prompts) == [[p] for p in prompts]
    sent = [body for path, body in stub.requests if path == "/v1/completions"]
    assert 1 < len(sent) < 1000  # many prompts per request, in its list form
    assert all(isinstance(body["prompt"], list) for body in sent)


def test_n_choices_per_input(client):
    assert client.chat(convs(3), {"n": 3})[2] == ["q2", "q2#1", "q2#2"]
    out = client.generate(["a", "b"], {"n": 2})
    assert out == [["a", "a#1"], ["b", "b#1"]]


def test_return_extra_carries_tokens_logprobs_and_finish_reason(client, stub):
    [[chat]] = client.chat([[{"role": "user", "content": "one two three"}]],
                           {"logprobs": 1, "max_tokens": 2}, return_extra=True)
    assert isinstance(chat, ResponseOutput)
    assert (chat.text, chat.finish_reason, chat.token_ids) == ("one two", "length", [3, 3])
    assert [t.token for t in chat.logprobs] == ["one", "two"]
    assert chat.cumulative_logprob == pytest.approx(-1.5)
    [[a0, a1]] = client.generate(["x y"], {"n": 2, "logprobs": 1}, return_extra=True)
    assert (a0.text, a1.text, a0.logprobs[1].top) == ("x y", "x y#1", {"y": -1.0})
    body = stub.requests[-1][1]
    assert body["return_token_ids"] is True and body["logprobs"] == 1


def test_without_logprobs_extra_has_none(client):
    [[out]] = client.generate(["x"], return_extra=True)
    assert out.logprobs is None and out.cumulative_logprob is None


def test_model_is_discovered_once(client, stub):
    assert client.model is None
    client.chat(convs(5))
    assert client.model == "stub-model"
    assert {body["model"] for _, body in stub.requests} == {"stub-model"}


def test_explicit_model_such_as_a_lora_adapter_is_requested(stub):
    stub.models.append("my-lora")
    with VLLMClient(base_url=stub.base_url, model="my-lora") as c:
        c.generate(["x"])
    assert stub.requests[-1][1]["model"] == "my-lora"


def test_extra_body_and_sampling_fields_reach_the_request(client, stub):
    client.chat(convs(1), {"temperature": 0.5, "stop": "x"}, extra_body={"echo": True})
    body = stub.requests[-1][1]
    assert (body["temperature"], body["stop"], body["echo"]) == (0.5, ["x"], True)


def test_empty_batches_send_nothing(client, stub):
    assert client.chat([]) == [] and client.generate([]) == []
    assert stub.requests == []


@pytest.mark.parametrize("bad", ["a prompt", {"role": "user"}])
def test_wrong_input_shapes_are_clear_errors(client, bad):
    with pytest.raises(ClientError, match="list of"):
        client.chat(bad if isinstance(bad, str) else [bad])
    with pytest.raises(ClientError, match="wrap one prompt"):
        client.generate("a prompt")


def test_server_error_carries_status_and_message(stub):
    stub.fail = (400, "max_tokens must be at least 1, got -1.")
    with VLLMClient(base_url=stub.base_url, model="stub-model") as c:
        with pytest.raises(ServerError, match="HTTP 400: max_tokens must be") as info:
            c.chat(convs(4))
    assert info.value.status == 400


def test_unknown_model_is_a_server_error(stub):
    with VLLMClient(base_url=stub.base_url, model="nope") as c, pytest.raises(ServerError, match="nope"):
        c.generate(["x"])


def test_async_variants_from_a_running_loop(client):
    async def main():
        chats, texts = await asyncio.gather(client.achat(convs(50)), client.agenerate(["a", "b"]))
        return chats, texts

    chats, texts = asyncio.run(main())
    assert chats == [[f"q{i}"] for i in range(50)] and texts == [["a"], ["b"]]


def test_sync_api_works_inside_a_running_loop(client):
    async def main():
        return client.chat(convs(3))  # blocks this loop, runs on the client's own

    assert asyncio.run(main()) == [["q0"], ["q1"], ["q2"]]


def test_async_context_manager_closes(stub):
    async def main():
        async with VLLMClient(base_url=stub.base_url) as c:
            return await c.agenerate(["z"])

    assert asyncio.run(main()) == [["z"]]


def test_progress_bar_does_not_change_results(client):
    assert client.generate(["a", "b", "c"], progress=True) == [["a"], ["b"], ["c"]]
    assert client.chat(convs(2), progress=True) == [["q0"], ["q1"]]


def test_models_health_and_address(client, stub):
    assert client.models() == ["stub-model"]
    assert client.is_healthy()
    assert (client.host, client.port) == ("127.0.0.1", stub.port)


def test_closing_the_last_client_stops_the_loop_thread(stub):
    before = {t.name for t in threading.enumerate()}
    with VLLMClient(base_url=stub.base_url) as c:
        c.generate(["x"])
    after = {t.name for t in threading.enumerate()}
    assert "berth-client-loop" not in after - before


def test_any_iterable_of_inputs_is_accepted(client):
    assert client.generate(p for p in ("a", "b")) == [["a"], ["b"]]
    assert client.chat(iter(convs(2))) == [["q0"], ["q1"]]
