"""An instant OpenAI-compatible stub of a vLLM server, for tests and the client benchmark.

It answers ``GET /health``, ``GET /v1/models``, ``POST /v1/chat/completions`` (the reply echoes
the last message) and ``POST /v1/completions`` (one choice per prompt and ``n``, indexed
``prompt * n + choice`` as vLLM does) straight from a raw ``asyncio`` protocol, so that a
benchmark measures the client and not the server. Choices carry ``token_ids`` when the request
asks ``return_token_ids`` and logprobs when it asks for them; a "token" is a space-separated word.

Test hooks: ``delay`` (seconds before each POST is answered), ``drop_first`` (close the
connection without answering the first N POSTs), ``fail`` (answer every POST with this
``(status, message)``), ``record`` (keep every POST body in ``requests``).

Run standalone: ``python -m berth.testing.stub_server --port 0`` prints ``PORT <n>`` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
from typing import Any

import orjson

__all__ = ["StubServer", "main"]

_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 500: b"Internal Server Error"}


class StubServer:
    """The stub's state and handlers; :meth:`start` serves it from a background thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, model: str = "stub-model",
                 lora: list[str] | None = None, delay: float = 0.0, drop_first: int = 0,
                 fail: tuple[int, str] | None = None, record: bool = False) -> None:
        self.host = host
        self.port = port
        self.models = [model, *(lora or [])]
        self.delay = delay
        self.drop_first = drop_first
        self.fail = fail
        self.record = record
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.served = 0
        self.connections: set[_Connection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- lifecycle --------------------------------------------------------------------------

    async def serve(self) -> asyncio.Server:
        """Listen on the current loop; sets :attr:`port` when it was 0."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self._server

    def start(self) -> StubServer:
        """Serve from a daemon thread with its own loop; returns once listening."""
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True,
                                        name=f"berth-stub-{self.port}")
        self._thread.start()
        ready.wait(10)
        return self

    def _run(self, ready: threading.Event) -> None:
        assert self._loop is not None
        self._loop.run_until_complete(self.serve())
        ready.set()
        self._loop.run_forever()
        self._loop.close()

    def stop(self) -> None:
        """Stop listening, close open connections and join the thread."""
        if self._loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = self._thread = None

    async def _close(self) -> None:
        assert self._server is not None
        self._server.close()
        for connection in list(self.connections):
            connection.close()
        await self._server.wait_closed()
        await asyncio.sleep(0)  # let the transports finish closing

    def __enter__(self) -> StubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- requests ---------------------------------------------------------------------------

    def answer(self, method: bytes, path: bytes, body: bytes) -> tuple[int, bytes] | None:
        """Status and JSON body for one request; ``None`` means: drop the connection."""
        if method == b"GET":
            return self._get(path)
        if self.drop_first > 0:
            self.drop_first -= 1
            return None
        self.served += 1
        if self.fail is not None:
            return self.fail[0], _error(self.fail[0], self.fail[1])
        return self._post(path, body)

    def _get(self, path: bytes) -> tuple[int, bytes]:
        if path == b"/health":
            return 200, b""
        if path == b"/v1/models":
            base = self.models[0]
            data = [{"id": name, "object": "model", "owned_by": "berth-stub",
                     "parent": None if name == base else base}  # adapters name their base, as in vLLM
                    for name in self.models]
            return 200, orjson.dumps({"object": "list", "data": data})
        return 404, _error(404, f"no route {path.decode(errors='replace')}")

    def _post(self, path: bytes, raw: bytes) -> tuple[int, bytes]:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return 400, _error(400, f"invalid JSON: {exc}")
        route = {b"/v1/chat/completions": _chat, b"/v1/completions": _completions}.get(path)
        if route is None:
            return 404, _error(404, f"no route {path.decode(errors='replace')}")
        if self.record:
            self.requests.append((path.decode(), body))
        if body.get("model") not in self.models:
            return 404, _error(404, f"The model `{body.get('model')}` does not exist.")
        return 200, orjson.dumps(route(body))


def _error(status: int, message: str) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": "StubError", "code": status}})


def _chat(body: dict[str, Any]) -> dict[str, Any]:
    content = body["messages"][-1].get("content") or ""
    if isinstance(content, list):
        content = " ".join(part.get("text", "") for part in content)
    choices = [
        _choice(body, i, _variant(content, i), chat=True) for i in range(int(body.get("n") or 1))
    ]
    return {"id": "chatcmpl-stub", "object": "chat.completion", "model": body["model"],
            "choices": choices, "usage": _usage(choices)}


def _completions(body: dict[str, Any]) -> dict[str, Any]:
    prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
    n = int(body.get("n") or 1)
    choices = [
        _choice(body, p * n + i, _variant(str(prompt), i), chat=False)
        for p, prompt in enumerate(prompts) for i in range(n)
    ]
    return {"id": "cmpl-stub", "object": "text_completion", "model": body["model"],
            "choices": choices, "usage": _usage(choices)}


def _variant(text: str, choice: int) -> str:
    return text if choice == 0 else f"{text}#{choice}"


def _choice(body: dict[str, Any], index: int, text: str, *, chat: bool) -> dict[str, Any]:
    words = text.split(" ")
    limit = body.get("max_tokens")
    finish = "stop"
    if limit is not None and len(words) > int(limit):
        words, finish = words[: int(limit)], "length"
    text = " ".join(words)
    choice: dict[str, Any] = {"index": index, "finish_reason": finish, "stop_reason": None,
                              "logprobs": _logprobs(body, words, chat)}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    if body.get("return_token_ids"):
        choice["token_ids"] = [len(word) for word in words]
    return choice


def _logprobs(body: dict[str, Any], words: list[str], chat: bool) -> dict[str, Any] | None:
    asked = body.get("logprobs")
    if asked is None or asked is False:
        return None
    values = [-0.5 * (i + 1) for i in range(len(words))]
    if chat:
        top = int(body.get("top_logprobs") or 0)
        content = [
            {"token": w, "logprob": v, "bytes": None,
             "top_logprobs": [{"token": w, "logprob": v, "bytes": None}][:top]}
            for w, v in zip(words, values)
        ]
        return {"content": content}
    return {"tokens": words, "token_logprobs": values,
            "top_logprobs": [{w: v} for w, v in zip(words, values)],
            "text_offset": list(range(len(words)))}


def _usage(choices: list[dict[str, Any]]) -> dict[str, int]:
    return {"prompt_tokens": 1, "completion_tokens": len(choices), "total_tokens": 1 + len(choices)}


class _Connection(asyncio.Protocol):
    """Minimal HTTP/1.1 with keep-alive and Content-Length bodies."""

    def __init__(self, stub: StubServer) -> None:
        self.stub = stub
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.stub.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.stub.connections.discard(self)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (request := _take_request(self.buffer)) is not None:
            self._respond(*request)

    def _respond(self, method: bytes, path: bytes, body: bytes) -> None:
        reply = self.stub.answer(method, path, body)
        if reply is None:
            assert self.transport is not None
            self.transport.close()
            return
        data = _http_response(*reply)
        if self.stub.delay > 0 and method == b"POST":
            asyncio.get_running_loop().call_later(self.stub.delay, self._write, data)
        else:
            self._write(data)

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


def _take_request(buffer: bytearray) -> tuple[bytes, bytes, bytes] | None:
    """Remove and return ``(method, path, body)`` of one complete request, if buffered."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buffer[:end])
    length = _content_length(head)
    if len(buffer) < end + 4 + length:
        return None
    body = bytes(buffer[end + 4:end + 4 + length])
    del buffer[:end + 4 + length]
    method, path, _ = head.split(b"\r\n", 1)[0].split(b" ", 2)
    return method, path.split(b"?", 1)[0], body


def _content_length(head: bytes) -> int:
    at = head.lower().find(b"\r\ncontent-length:")
    if at < 0:
        return 0
    start = at + len(b"\r\ncontent-length:")
    stop = head.find(b"\r\n", start)
    return int(head[start:stop if stop >= 0 else len(head)])


def _http_response(status: int, body: bytes) -> bytes:
    reason = _REASONS.get(status, b"Error")
    head = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    return head % (status, reason, len(body)) + body


def main(argv: list[str] | None = None) -> None:
    """Serve a stub until SIGTERM or SIGINT; print ``PORT <n>`` once listening."""
    parser = argparse.ArgumentParser(prog="python -m berth.testing.stub_server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    parser.add_argument("--port", type=int, default=0, help="port (0 picks a free one)")
    parser.add_argument("--model", default="stub-model", help="served model name")
    args = parser.parse_args(argv)
    asyncio.run(_serve_until_signal(StubServer(args.host, args.port, model=args.model)))


async def _serve_until_signal(stub: StubServer) -> None:
    server = await stub.serve()
    print(f"PORT {stub.port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    main(sys.argv[1:])
