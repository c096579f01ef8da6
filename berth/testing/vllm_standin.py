"""A stand-in for ``vllm serve`` with vLLM's sleep mode, for machines where vLLM refuses it (CPU).

It takes ``vllm serve``'s command line (model, ``--host``, ``--port``, ``--served-model-name``,
``--enable-sleep-mode``; other options are ignored) and answers like vLLM:

* ``GET /health``, ``GET /v1/models``; ``POST /v1/completions`` and ``/v1/chat/completions``
  (``stream`` too), answering ``"<served name> says ok"`` so a test sees which model answered;
* with ``VLLM_SERVER_DEV_MODE=1``: ``POST /sleep?level=1|2``, ``POST /wake_up[?tags=weights|kv_cache]``,
  ``GET /is_sleeping`` and ``POST /collective_rpc`` with ``reload_weights`` (404 without dev mode,
  400 for sleep without ``--enable-sleep-mode``, as vLLM). After a level-2 sleep completions fail
  (500) until the weights are reloaded, as vLLM's would answer garbage;
* ``GET /metrics``: ``vllm:num_requests_running`` and ``vllm:num_requests_waiting``, and
  ``standin_asleep_requests_total``, requests that reached it while it slept (each got 503).

Stand-in options: ``--startup-delay S`` (seconds before it listens), ``--generate-seconds S``
(how long each completion takes), ``--sleep-seconds S`` / ``--wake-seconds S`` (how long a
sleep or a wake takes). Loopback only; it never loads a model.

    python -m berth.testing.vllm_standin MODEL --host 127.0.0.1 --port P --served-model-name N
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

__all__ = ["StandIn", "main", "parse"]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vllm_standin")
    parser.add_argument("model", nargs="?", default="standin")
    parser.add_argument("--model", dest="model_option", default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--served-model-name", nargs="+", default=None)
    parser.add_argument("--enable-sleep-mode", action="store_true")
    parser.add_argument("--startup-delay", type=float, default=0.0)
    parser.add_argument("--generate-seconds", type=float, default=0.0)
    parser.add_argument("--sleep-seconds", type=float, default=0.0)
    parser.add_argument("--wake-seconds", type=float, default=0.0)
    args, _unknown = parser.parse_known_args(argv)
    return args


class StandIn:
    """The engine's state: asleep or not, requests in flight, requests refused while asleep."""

    def __init__(self, args: argparse.Namespace, dev_mode: bool) -> None:
        self.args = args
        self.names = args.served_model_name or [args.model_option or args.model]
        self.dev_mode = dev_mode
        self.asleep: set[str] = set()  # parts put to sleep: weights, kv_cache
        self.weights_valid = True  # False after a level-2 sleep until the weights are reloaded
        self.running = 0
        self.asleep_requests = 0
        self.lock = threading.Lock()

    def metrics(self) -> str:
        with self.lock:
            running, refused = self.running, self.asleep_requests
        name = self.names[0]
        return (
            "# TYPE vllm:num_requests_running gauge\n"
            f'vllm:num_requests_running{{model_name="{name}"}} {float(running)}\n'
            "# TYPE vllm:num_requests_waiting gauge\n"
            f'vllm:num_requests_waiting{{model_name="{name}"}} 0.0\n'
            "# TYPE standin_asleep_requests_total counter\n"
            f"standin_asleep_requests_total {float(refused)}\n"
        )


def _handler(engine: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, body: object) -> None:
            self._send(status, json.dumps(body).encode())

        def do_GET(self) -> None:  # noqa: N802
            path = urlsplit(self.path).path
            if path == "/health":
                self._send(200, b"")
            elif path == "/v1/models":
                self._json(200, {"object": "list", "data": [{"id": n, "object": "model"} for n in engine.names]})
            elif path == "/metrics":
                self._send(200, engine.metrics().encode(), "text/plain; version=0.0.4")
            elif path == "/is_sleeping" and engine.dev_mode:
                self._json(200, {"is_sleeping": bool(engine.asleep)})
            else:
                self._json(404, {"detail": "Not Found"})

        def do_POST(self) -> None:  # noqa: N802
            url = urlsplit(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if url.path in ("/v1/completions", "/v1/chat/completions"):
                self._complete(url.path, body)
            elif url.path == "/sleep" and engine.dev_mode:
                self._sleep(parse_qs(url.query).get("level", ["1"])[0])
            elif url.path == "/wake_up" and engine.dev_mode:
                tags = set(parse_qs(url.query).get("tags", [])) or {"weights", "kv_cache"}
                time.sleep(engine.args.wake_seconds if engine.asleep & tags else 0.0)
                engine.asleep -= tags
                self._json(200, {"status": "sleeping" if engine.asleep else "awake"})
            elif url.path == "/collective_rpc" and engine.dev_mode:
                self._rpc(body)
            else:
                self._json(404, {"detail": "Not Found"})

        def _sleep(self, level: str) -> None:
            if not engine.args.enable_sleep_mode:
                self._json(400, {"error": "Sleep mode is not enabled. Start the server with --enable-sleep-mode"})
                return
            if level not in ("1", "2"):
                self._json(400, {"error": f"level must be 1 or 2, not {level!r}"})
                return
            time.sleep(engine.args.sleep_seconds)
            engine.asleep = {"weights", "kv_cache"}
            engine.weights_valid = engine.weights_valid and level == "1"
            self._json(200, {"status": "sleeping", "level": int(level)})

        def _rpc(self, raw: bytes) -> None:
            method = json.loads(raw or b"{}").get("method")
            if method != "reload_weights":
                self._json(400, {"error": f"the stand-in knows only reload_weights, not {method!r}"})
            elif "weights" in engine.asleep:
                self._json(500, {"error": "cannot reload weights while they sleep; wake_up?tags=weights first"})
            else:
                engine.weights_valid = True
                self._send(200, b"")

        def _complete(self, path: str, raw: bytes) -> None:
            try:
                request = json.loads(raw or b"{}")
            except ValueError:
                self._json(400, {"error": "body is not JSON"})
                return
            if engine.asleep:
                with engine.lock:
                    engine.asleep_requests += 1
                self._json(503, {"error": "the engine is asleep"})
                return
            if not engine.weights_valid:
                self._json(500, {"error": "the weights were discarded (sleep level 2) and never reloaded"})
                return
            with engine.lock:
                engine.running += 1
            try:
                time.sleep(engine.args.generate_seconds)
            finally:
                with engine.lock:
                    engine.running -= 1
            name = request.get("model") or engine.names[0]
            if name not in engine.names:
                self._json(404, {"error": f"The model `{name}` does not exist."})
                return
            text = f"{engine.names[0]} says ok"
            chat = path.endswith("chat/completions")
            if request.get("stream"):
                self._stream(name, text, chat)
                return
            choice = {"index": 0, "finish_reason": "stop",
                      **({"message": {"role": "assistant", "content": text}} if chat else {"text": text})}
            self._json(200, {"id": "standin", "object": "chat.completion" if chat else "text_completion",
                             "model": name, "choices": [choice]})

        def _stream(self, name: str, text: str, chat: bool) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for word in text.split(" "):
                delta = {"delta": {"content": word + " "}} if chat else {"text": word + " "}
                chunk = json.dumps({"id": "standin", "model": name, "choices": [{"index": 0, **delta}]})
                self._chunk(f"data: {chunk}\n\n".encode())
            self._chunk(b"data: [DONE]\n\n")
            self._chunk(b"")

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def log_message(self, fmt: str, *args: object) -> None:
            print(f"vllm-standin: {fmt % args}", flush=True)

    return Handler


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    time.sleep(args.startup_delay)
    engine = StandIn(args, dev_mode=os.environ.get("VLLM_SERVER_DEV_MODE") == "1")
    server = ThreadingHTTPServer((args.host, args.port), _handler(engine))
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    print(f"vllm-standin: serving {engine.names} on {args.host}:{args.port} "
          f"(sleep mode {'on' if args.enable_sleep_mode else 'off'}, dev mode {'on' if engine.dev_mode else 'off'})",
          flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
