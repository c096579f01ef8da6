"""Cost of a large body through the worker's ``/v1`` router: time and the worker's peak memory.

A child process holds the worker (the real FastAPI app and ServeManager under uvicorn, memory
deployer) and a stand-in engine that hashes each body as it arrives (constant memory). This
process is the client: it sends one JSON body of ``--mib`` MiB, generated chunk by chunk, three
ways: straight to the engine (the baseline), through the router by routing header (streamed),
and through the router by ``model`` (read whole to find the model). For each it prints the wall
time and how far the child's peak resident memory (``VmHWM``, reset before each request through
``/proc/PID/clear_refs``) rose above its resident memory before the request.

    python bench/router_bodies.py [--mib 50] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import uvicorn

MIB = 1 << 20
HEADER = "X-GPUStack-Model-Instance"
CHUNK = 64 << 10


async def _engine(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
    """A stand-in engine: hashes the body as it comes, answers its size and digest."""
    digest, size, more = hashlib.sha256(), 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        digest.update(message.get("body", b""))
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = json.dumps({"size": size, "sha256": digest.hexdigest()}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def _start(app, port: int, **options) -> tuple[uvicorn.Server, threading.Thread]:  # type: ignore[no-untyped-def]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline:
            raise SystemExit(f"a loopback server did not start on port {port}")
        time.sleep(0.02)
    return server, thread


def serve(limit: int) -> None:
    """The child: worker and engine on loopback; prints both ports, runs until stdin closes."""
    with tempfile.TemporaryDirectory(prefix="berth-bodies-") as data:
        servers = _serve_in(Path(data), limit)
        try:
            sys.stdin.read()
        finally:
            for server, thread in servers:
                server.should_exit = True
                thread.join(timeout=30)


def _serve_in(data: Path, limit: int) -> list[tuple[uvicorn.Server, threading.Thread]]:
    from berth.deployers.memory import MemoryDeployer
    from berth.schemas.workload import WorkloadState
    from berth.testing import free_port
    from berth.testing.fakes import FakeProbe
    from berth.worker import ServeManager, Settings, create_app
    from berth.worker.store import InstanceState

    probe, first = FakeProbe(), free_port()
    settings = Settings.load(data_dir=data / "data", poll_interval=0.05,
                             instance_port_range=f"{first}-{min(first + 50, 65535)}", max_inference_body_bytes=limit)
    manager = ServeManager(settings, deployer=MemoryDeployer(initial=WorkloadState.RUNNING), probe=probe)
    app = create_app(manager)
    app.state.header_routes[HEADER] = lambda value: "base" if value == "base" else None
    port = free_port()
    servers = [_start(app, port)]
    assert httpx.put(f"http://127.0.0.1:{port}/v2/vllm/instances/base", trust_env=False,
                     json={"options": "--model /m --served-model-name tiny"}).status_code == 201
    engine_port = manager.get("base").ports["http"]
    servers.append(_start(_engine, engine_port, lifespan="off"))
    probe.ready.add(f"http://127.0.0.1:{engine_port}")
    while manager.get("base").state is not InstanceState.RUNNING:
        time.sleep(0.02)
    print(json.dumps({"worker": port, "engine": engine_port}), flush=True)
    return servers


def _body(mib: int) -> Iterator[bytes]:
    """A chat request of ``mib`` MiB of prompt, made as it is sent (the client holds one chunk)."""
    yield b'{"model": "tiny", "messages": [{"role": "user", "content": "'
    for _ in range(mib * MIB // CHUNK):
        yield b"x" * CHUNK
    yield b'"}]}'


def _memory_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def _measure(pid: int, url: str, headers: dict[str, str], mib: int) -> tuple[float, float]:
    """(seconds, peak MiB above the resident memory before) of one request."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS
    before = _memory_kib(pid)["VmRSS"]
    started = time.perf_counter()
    answer = httpx.post(url, content=_body(mib), headers={"content-type": "application/json", **headers},
                        timeout=300, trust_env=False)
    elapsed = time.perf_counter() - started
    assert answer.status_code == 200, answer.text[:300]
    assert answer.json()["size"] > mib * MIB
    return elapsed, (_memory_kib(pid)["VmHWM"] - before) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=50, help="Prompt size of the body, MiB.")
    parser.add_argument("--repeat", type=int, default=3, help="Requests per way; the median is printed.")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, default=100 * MIB, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.limit)
        return
    child = subprocess.Popen([sys.executable, __file__, "--serve", "--limit", str((args.mib + 1) * MIB)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        assert child.stdout is not None
        ports = json.loads(child.stdout.readline())
        ways = {
            "straight to the engine": (f"http://127.0.0.1:{ports['engine']}/v1/chat/completions", {}),
            "router, by header (streamed)": (f"http://127.0.0.1:{ports['worker']}/v1/chat/completions",
                                             {HEADER: "base"}),
            "router, by model (read whole)": (f"http://127.0.0.1:{ports['worker']}/v1/chat/completions", {}),
        }
        print(f"{args.mib} MiB chat body, median of {args.repeat}; memory: the worker process's peak above before")
        for name, (url, headers) in ways.items():
            runs = [_measure(child.pid, url, headers, args.mib) for _ in range(args.repeat)]
            seconds = statistics.median(run[0] for run in runs)
            peak = statistics.median(run[1] for run in runs)
            print(f"  {name:32s} {seconds:6.2f} s  {args.mib / seconds:7.0f} MiB/s  peak +{peak:6.1f} MiB")
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(timeout=30)


if __name__ == "__main__":
    main()
