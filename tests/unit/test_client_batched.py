"""The batched server (gserve's wire format) without vLLM: its app over a recording stand-in
for ``vllm.LLM``, served by uvicorn on a free port, reached by berth's client, by a client
shaped as gserve's own (msgspec ``array_like`` structs) and by plain HTTP."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
import uvicorn

from berth.client import (
    ClientError,
    ResponseOutput,
    ServeConfig,
    VLLMClient,
    VLLMService,
)
from berth.client.batched_server import BatchedEngine, build_app, llm_kwargs, parse_args
from berth.client.batched_wire import (
    WireError,
    decode_request,
    encode_answer,
    parse_answer,
)


@dataclass
class Logprob:
    """Shaped as ``vllm.logprobs.Logprob`` (a dataclass)."""

    logprob: float
    rank: int | None
    decoded_token: str | None


@dataclass
class RecordingLLM:
    """Stands in for ``vllm.LLM``: answers each prompt upper-cased (``n`` times), and records
    every call with its arguments."""

    calls: list[tuple[str, list[Any], dict[str, Any]]] = field(default_factory=list)
    logprobs: bool = False

    def generate(self, prompts: list[str], **kwargs: Any) -> list[Any]:
        self.calls.append(("generate", prompts, kwargs))
        return [self._output(p) for p in prompts]

    def chat(self, conversations: list[Any], **kwargs: Any) -> list[Any]:
        self.calls.append(("chat", conversations, kwargs))
        return [self._output(c[-1]["content"]) for c in conversations]

    def _output(self, text: str) -> Any:
        logprobs = [{7: Logprob(logprob=-0.5, rank=1, decoded_token="X")}] if self.logprobs else None
        return SimpleNamespace(outputs=[SimpleNamespace(text=text.upper(), logprobs=logprobs)])


class Served:
    """The app on a free port, served by uvicorn from a thread."""

    def __init__(self, llm: RecordingLLM, lora: Any = None) -> None:
        self.llm = llm
        self.stopped = threading.Event()
        self.engine = BatchedEngine(llm, lora)
        config = uvicorn.Config(build_app(self.engine, self.stopped.set), host="127.0.0.1", port=0,
                                log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.engine.close()

    def post(self, path: str, body: bytes) -> tuple[int, Any]:
        request = urllib.request.Request(self.url + path, data=body, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())


@pytest.fixture
def served() -> Iterator[Served]:
    with Served(RecordingLLM()) as running:
        yield running


# -- the wire format ----------------------------------------------------------------------


def test_requests_are_read_in_both_shapes():
    as_object = decode_request(b'{"prompts": ["a", "b"], "params": {"max_tokens": 3}}', "prompts")
    as_array = decode_request(b'[["a", "b"], {"max_tokens": 3}]', "prompts")
    assert (as_object.items, as_object.params, as_object.array) == (["a", "b"], {"max_tokens": 3}, False)
    assert (as_array.items, as_array.params, as_array.array) == (["a", "b"], {"max_tokens": 3}, True)
    assert decode_request(b'[["a"]]', "prompts").params is None
    chat = decode_request(b'{"conversations": [[{"role": "user", "content": "hi"}]]}', "conversations")
    assert chat.items == [[{"role": "user", "content": "hi"}]] and chat.params is None


@pytest.mark.parametrize(("body", "message"), [
    (b"nope", "not JSON"),
    (b'{"prompt": ["a"]}', "unknown field 'prompt'"),
    (b'{"params": {}}', "field 'prompts' is required"),
    (b'{"prompts": "a"}', "prompts: Expected `array`"),
    (b'{"prompts": [1]}', r"prompts: Expected `str`"),
    (b'{"prompts": ["a"], "params": 3}', "params must be an object"),
    (b'[["a"], {}, 1]', r"\[prompts, params\]; got 3"),
    (b'"a"', "must be a JSON object"),
])
def test_bad_requests_name_the_field(body, message):
    with pytest.raises(WireError, match=message):
        decode_request(body, "prompts")


def test_answers_follow_the_request_shape_and_omit_absent_logprobs():
    plain = [SimpleNamespace(outputs=[SimpleNamespace(text="x", logprobs=None)])]
    assert json.loads(encode_answer(plain, array=False)) == [[{"text": "x"}]]
    assert json.loads(encode_answer(plain, array=True)) == [[["x"]]]
    logprob = SimpleNamespace(logprob=-1.0, rank=1, decoded_token="y")
    with_logprobs = [SimpleNamespace(outputs=[SimpleNamespace(text="y", logprobs=[{5: {"logprob": -1.0}}])])]
    assert json.loads(encode_answer(with_logprobs, array=False)) == [
        [{"text": "y", "logprobs": [{"5": {"logprob": -1.0}}]}]]
    flat = FlatLike([{5: {"logprob": -1.0, "rank": 1, "decoded_token": "y"}}])
    assert json.loads(encode_answer([SimpleNamespace(outputs=[SimpleNamespace(text="y", logprobs=flat)])],
                                   array=True))[0][0][1] == [{"5": {"logprob": -1.0, "rank": 1, "decoded_token": "y"}}]
    assert logprob.logprob == -1.0


class FlatLike:
    """Reads like vLLM's ``FlatLogprobs``: indexable positions, not a list."""

    def __init__(self, positions: list[dict[int, Any]]) -> None:
        self._positions = positions

    def __len__(self) -> int:
        return len(self._positions)

    def __getitem__(self, index: int) -> dict[int, Any]:
        return self._positions[index]


def test_answers_parse_into_texts_or_outputs():
    raw = b'[[{"text": "a", "logprobs": [{"9": {"logprob": -0.1, "rank": 1, "decoded_token": "a"}, ' \
          b'"4": {"logprob": -2.0, "rank": 2, "decoded_token": "b"}}]}], [["c"]]]'
    assert parse_answer(raw, 2, extra=False) == [["a"], ["c"]]
    [[first], [second]] = parse_answer(raw, 2, extra=True)
    assert first.text == "a" and first.logprobs[0].token == "a" and first.logprobs[0].top == {"a": -0.1, "b": -2.0}
    assert second == ResponseOutput(text="c")
    with pytest.raises(WireError, match="answered 1 results for 2 inputs"):
        parse_answer(b'[[["a"]]]', 2, extra=False)


# -- the server --------------------------------------------------------------------------


def test_options_are_gserves():
    args = parse_args(["--serve", "--model", "m", "--host", "0.0.0.0", "--port", "9", "--gpus", "0,1",
                       "--llm_kwargs", '{"dtype": "half"}', "--lora_path", "/l"])
    assert (args.serve, args.model, args.host, args.port, args.gpus, args.lora_path) == (
        True, "m", "0.0.0.0", 9, "0,1", "/l")
    defaults = parse_args([])
    assert (defaults.serve, defaults.host, defaults.port, defaults.gpus) == (False, "127.0.0.1", 8000, "0")
    assert llm_kwargs('{"dtype": "half"}', "/l") == {"dtype": "half", "enable_lora": True}
    assert llm_kwargs('{"enable_lora": false}', "/l") == {"enable_lora": False}
    with pytest.raises(SystemExit, match="--llm_kwargs is not valid JSON"):
        llm_kwargs("{dtype", None)
    with pytest.raises(SystemExit, match="must be a JSON object"):
        llm_kwargs("[1]", None)


def test_health_and_one_engine_call_per_batch(served):
    with urllib.request.urlopen(served.url + "/health", timeout=5) as answer:
        assert json.loads(answer.read()) == {"status": "ok"}
    status, body = served.post("/generate", json.dumps({"prompts": ["a", "b", "c"]}).encode())
    assert status == 200 and json.loads(body) == [[{"text": "A"}], [{"text": "B"}], [{"text": "C"}]]
    status, body = served.post("/chat", b'[[[{"role": "user", "content": "q"}]]]')
    assert status == 200 and json.loads(body) == [[["Q"]]]
    [generate, chat] = served.llm.calls
    assert generate[:2] == ("generate", ["a", "b", "c"])
    assert generate[2] == {"sampling_params": None, "lora_request": None, "use_tqdm": False}
    assert chat[2]["add_generation_prompt"] is True and chat[2]["continue_final_message"] is False


def test_bad_requests_are_400_with_detail(served):
    status, body = served.post("/generate", b'{"prompt": ["a"]}')
    assert status == 400 and "unknown field 'prompt'" in body["detail"]
    status, body = served.post("/chat", b"[")
    assert status == 400 and "not JSON" in body["detail"]
    assert served.llm.calls == []


def test_an_empty_batch_needs_no_engine_call(served):
    assert served.post("/generate", b'{"prompts": []}') == (200, b"[]")
    assert served.llm.calls == []


def test_engine_refusals_are_400_and_failures_500_without_traceback():
    class Refusing(RecordingLLM):
        def generate(self, prompts: list[str], **kwargs: Any) -> list[Any]:
            raise ValueError("prompt is longer than the maximum model length")

        def chat(self, conversations: list[Any], **kwargs: Any) -> list[Any]:
            raise RuntimeError("engine died")

    with Served(Refusing()) as running:
        status, body = running.post("/generate", b'{"prompts": ["a"]}')
        assert status == 400 and "maximum model length" in body["detail"]
        status, body = running.post("/chat", b'{"conversations": [[{"role": "user", "content": "q"}]]}')
        assert status == 500 and body == {"detail": "error during vLLM inference: RuntimeError('engine died')"}


def test_every_call_carries_the_lora_request():
    lora = SimpleNamespace(lora_name="lora_adapter")
    with Served(RecordingLLM(), lora) as running:
        running.post("/generate", b'{"prompts": ["a"]}')
        running.post("/chat", b'{"conversations": [[{"role": "user", "content": "q"}]]}')
        assert [call[2]["lora_request"] for call in running.llm.calls] == [lora, lora]


def test_shutdown_answers_then_stops(served):
    assert served.post("/shutdown", b"") == (200, b"shutting down")
    assert served.stopped.wait(5)


# -- clients -------------------------------------------------------------------------------


class GserveGenerate(msgspec.Struct, array_like=True, omit_defaults=True, forbid_unknown_fields=True):
    prompts: list[str]
    params: dict[str, Any] | None = None


class GserveOutput(msgspec.Struct, array_like=True, omit_defaults=True, forbid_unknown_fields=True):
    text: str
    logprobs: list[dict[int, Any]] | None = None


def test_a_client_shaped_as_gserves_reads_its_own_shape():
    with Served(RecordingLLM(logprobs=True)) as running:
        status, body = running.post("/generate", msgspec.json.encode(GserveGenerate(prompts=["a", "b"])))
    answer = msgspec.json.decode(body, type=list[list[GserveOutput]])
    assert status == 200 and [[o.text for o in row] for row in answer] == [["A"], ["B"]]
    assert answer[0][0].logprobs == [{7: {"logprob": -0.5, "rank": 1, "decoded_token": "X"}}]


def test_berths_client_over_a_batched_server(served):
    with VLLMClient("127.0.0.1", served.port, 10, kind="batched") as client:
        assert client.generate(["a", "b"]) == [["A"], ["B"]]
        [[output]] = client.chat([[{"role": "user", "content": "q"}]], None, return_extra=True)
        assert output == ResponseOutput(text="Q")
        with pytest.raises(ClientError, match="extra_body holds OpenAI request fields"):
            client.generate(["a"], extra_body={"echo": True})


def test_a_service_splits_a_batch_evenly_one_request_per_server():
    with Served(RecordingLLM()) as one, Served(RecordingLLM()) as two:
        service = VLLMService(serve_config=ServeConfig(server="batched"), attach=[one.url, two.url],
                              attach_kind="batched")
        with service:
            prompts = [f"p{i}" for i in range(7)]
            assert service.generate(prompts) == [[p.upper()] for p in prompts]
        sizes = sorted(len(llm.calls[0][1]) for llm in (one.llm, two.llm))
        assert sizes == [3, 4] and len(one.llm.calls) == len(two.llm.calls) == 1


def test_a_cpu_server_runs_its_engine_in_process_unless_told_otherwise():
    from berth.client.batched_server import engine_in_process

    kwargs: dict[str, Any] = {"dtype": "half"}
    env: dict[str, str] = {}
    engine_in_process(kwargs, env)
    assert kwargs["distributed_executor_backend"] == "uni"
    assert env == {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    kwargs, env = {"tensor_parallel_size": 2}, {"VLLM_ENABLE_V1_MULTIPROCESSING": "1"}
    engine_in_process(kwargs, env)
    assert "distributed_executor_backend" not in kwargs
    assert env == {"VLLM_ENABLE_V1_MULTIPROCESSING": "1"}
