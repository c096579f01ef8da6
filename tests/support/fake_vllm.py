"""A stand-in for ``vllm serve`` that starts in milliseconds: same CLI shape, same readiness
endpoints (``/health``, ``/v1/models``) and a trivial completion. For tests of the CLI and
the worker that are about lifecycle, not inference.

    python tests/support/fake_vllm.py MODEL --host H --port P --served-model-name N
    [--startup-delay S] [--exit-after S --exit-code C]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--served-model-name", default=None)
    parser.add_argument("--startup-delay", type=float, default=0.0)
    parser.add_argument("--exit-after", type=float, default=None)
    parser.add_argument("--exit-code", type=int, default=0)
    args, unknown = parser.parse_known_args(argv)
    args.unknown = unknown
    return args


def handler_for(name: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _json(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/health":
                self._json(200, {})
            elif self.path == "/v1/models":
                self._json(200, {"object": "list", "data": [{"id": name, "object": "model"}]})
            else:
                self._json(404, {"detail": "not found"})

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length", "0"))
            self.rfile.read(length)
            self._json(200, {"choices": [{"index": 0, "text": "ok", "message": {"role": "assistant", "content": "ok"},
                                           "finish_reason": "stop"}]})

        def log_message(self, fmt: str, *args: object) -> None:
            print(f"fake-vllm: {fmt % args}", flush=True)

    return Handler


def main(argv: list[str]) -> int:
    args = parse(argv)
    print(f"fake-vllm: model={args.model} port={args.port} extra={args.unknown}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    time.sleep(args.startup_delay)
    if args.exit_after is not None:
        threading.Timer(args.exit_after, lambda: (print("fake-vllm: exiting", flush=True),
                                                  signal.raise_signal(signal.SIGUSR1))).start()
        signal.signal(signal.SIGUSR1, lambda *_: sys.exit(args.exit_code))
    server = ThreadingHTTPServer((args.host, args.port), handler_for(args.served_model_name or args.model))
    print(f"fake-vllm: serving on {args.host}:{args.port}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
