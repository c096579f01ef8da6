"""Latency of the worker's API: list, status and 1 MiB log-range reads, over real HTTP.

A worker (the real FastAPI app and ServeManager, served by uvicorn on a loopback port) holds 50
instances on an in-memory deployer whose logs are real files: one of 2 MiB and one of 1 GiB
(sparse by default; ``--dense`` writes every byte). Each figure is the p50 and p99 of
``--requests`` sequential requests from one client. Log reads go through the deployer by
offset, so a 1 MiB range of the 1 GiB log should cost what a 1 MiB range of the 2 MiB log costs.

    python bench/api_latency.py [--requests 300] [--instances 50] [--dense]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import uvicorn

from berth.deployers._logfile import read_range
from berth.deployers.memory import MemoryDeployer
from berth.schemas.workload import LogChunk, WorkloadState
from berth.worker import ServeManager, Settings, create_app
from berth.testing.fakes import FakeProbe
from berth.utils.ports import free_port, free_port_range

MIB = 1 << 20
GIB = 1 << 30


class FileLogDeployer(MemoryDeployer):
    """The in-memory deployer, except that each workload's log is a file read with ``pread``."""

    def __init__(self, log_dir: Path) -> None:
        super().__init__(initial=WorkloadState.RUNNING)
        self.log_dir = log_dir

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def logs(self, name, *, container="default", start=0, end=None) -> LogChunk:  # type: ignore[override]
        self.get(name)
        return read_range(str(self.log_path(name)), start, end)


def write_log(path: Path, size: int, dense: bool) -> None:
    """A log of ``size`` bytes of text lines: every byte written, or only the last MiB (sparse)."""
    line = b"INFO 11-23 20:00:00 [engine.py:42] Avg prompt throughput: 123.4 tokens/s, running: 1\n"
    block = line * (MIB // len(line) + 1)
    with open(path, "wb") as handle:
        if not dense:
            handle.truncate(size - MIB)
            handle.seek(size - MIB)
        while handle.tell() < size:
            handle.write(block[: size - handle.tell()])


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return statistics.median(ordered) * 1000, p99 * 1000


def timed(call: Callable[[], httpx.Response], expect: int, label: str) -> float:
    started = time.perf_counter()
    response = call()
    elapsed = time.perf_counter() - started
    assert response.status_code == expect, (label, response.status_code, response.text[:200])
    return elapsed


def report(label: str, samples: list[float]) -> None:
    p50, p99 = percentiles(samples)
    print(f"{label:<44} p50 {p50:7.2f} ms   p99 {p99:7.2f} ms")


def measure(label: str, requests: int, call: Callable[[], httpx.Response], expect: int) -> None:
    for _ in range(min(20, requests)):  # warm up connections and caches
        timed(call, expect, label)
    report(label, [timed(call, expect, label) for _ in range(requests)])


def measure_pair(labels: tuple[str, str], requests: int, calls: tuple[Callable[[], httpx.Response], ...],
                 expect: int) -> None:
    """Two calls alternated request by request, so load on a shared machine hits both alike."""
    samples: tuple[list[float], list[float]] = ([], [])
    for index in range(requests + 20):
        for which in (0, 1):
            elapsed = timed(calls[which], expect, labels[which])
            if index >= 20:
                samples[which].append(elapsed)
    report(labels[0], samples[0])
    report(labels[1], samples[1])


def serve(manager: ServeManager, port: int) -> tuple[uvicorn.Server, threading.Thread]:
    config = uvicorn.Config(create_app(manager), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    return server, thread


def ranged(http: httpx.Client, instance: str, size: int) -> Callable[[], httpx.Response]:
    def call() -> httpx.Response:
        start = random.randrange(0, size - MIB)
        return http.get(f"/v2/vllm/instances/{instance}/log", headers={"Range": f"bytes={start}-{start + MIB - 1}"})

    return call


def run(args: argparse.Namespace, workdir: Path) -> None:
    deployer = FileLogDeployer(workdir / "logs")
    deployer.log_dir.mkdir()
    settings = Settings.load(data_dir=workdir / "data", poll_interval=1.0, instance_port_range=free_port_range(1000))
    manager = ServeManager(settings, deployer=deployer, probe=FakeProbe())
    port = free_port()
    server, thread = serve(manager, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=60) as http:
            for index in range(args.instances):
                created = http.put(f"/v2/vllm/instances/bench-{index}", json={"options": "--model /models/bench"})
                assert created.status_code == 201, created.text
            write_log(deployer.log_path("bench-0"), 2 * MIB, dense=True)
            started = time.perf_counter()
            write_log(deployer.log_path("bench-1"), GIB, dense=args.dense)
            kind = "dense" if args.dense else "sparse"
            print(f"{args.instances} instances; logs: 2 MiB and 1 GiB ({kind}, written in "
                  f"{time.perf_counter() - started:.1f} s); {args.requests} requests per line\n")
            bench(http, args.requests)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def bench(http: httpx.Client, requests: int) -> None:
    measure("list (detail=true, 50 instances)", requests, lambda: http.get("/v2/vllm/instances"), 200)
    measure("list (detail=false)", requests, lambda: http.get("/v2/vllm/instances?detail=false"), 200)
    measure("status of one instance", requests, lambda: http.get("/v2/vllm/instances/bench-7"), 200)
    measure_pair(("log 1 MiB range, random offset, 2 MiB log", "log 1 MiB range, random offset, 1 GiB log"),
                 requests, (ranged(http, "bench-0", 2 * MIB), ranged(http, "bench-1", GIB)), 206)
    tail = {"Range": f"bytes=-{MIB}"}
    measure_pair(("log last 1 MiB (bytes=-N), 2 MiB log", "log last 1 MiB (bytes=-N), 1 GiB log"), requests,
                 (lambda: http.get("/v2/vllm/instances/bench-0/log", headers=tail),
                  lambda: http.get("/v2/vllm/instances/bench-1/log", headers=tail)), 206)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="Requests per measured line.")
    parser.add_argument("--instances", type=int, default=50, help="Instances registered.")
    parser.add_argument("--dense", action="store_true", help="Write every byte of the 1 GiB log.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="berth-bench-") as workdir:
        run(args, Path(workdir))


if __name__ == "__main__":
    main()
