"""Soak of one worker: create/delete cycles while many clients follow instance logs.

A real ``berth serve`` (process deployer, the fast vLLM stand-in ``tests/support/fake_vllm.py``
as the engine, loopback only) holds a few long-lived instances whose logs ``--followers``
clients follow the way the launcher's clients do (``Range: bytes=OFFSET-`` every 0.2 s) while a
chatter task makes those logs grow, and two clients follow the watch stream. Meanwhile
``--cycles`` instances are created (PUT), waited for until ready, listed and deleted, with
``--concurrency`` cycles at a time.

Printed: cycles done and failed, p50/p99/max of create, delete, list and status latency, the
worker's RSS and open fds after warm-up and at the end, bytes the followers read (and whether
every follower got every byte), and processes and ports left behind once everything is deleted.

    python bench/soak.py [--cycles 200] [--followers 50] [--concurrency 4] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
FAKE = ROOT / "tests" / "support" / "fake_vllm.py"
FOLLOWED = 5
POLL_S = 0.2


@dataclass
class SoakResult:
    cycles: int = 0
    failed_cycles: int = 0
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    rss_kib_start: int = 0
    rss_kib_warm: int = 0
    rss_kib_end: int = 0
    fds_warm: int = 0
    fds_end: int = 0
    follower_reads: int = 0
    follower_bytes: int = 0
    followers_complete: bool = False
    watch_events: int = 0
    leaked_processes: list[int] = field(default_factory=list)
    leaked_ports: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


# -- the machine, from /proc --------------------------------------------------------------------


def _listening() -> set[int]:
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _port_block(size: int) -> tuple[int, int]:
    busy = _listening()
    starts = list(range(47000, 60000 - size, size))
    random.shuffle(starts)
    start = next(s for s in starts if not busy & set(range(s, s + size)))
    return start, start + size - 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _ours(data_dir: Path, worker_pid: int) -> list[int]:
    """Live, non-zombie processes started for this data dir (instances and shims), the worker excluded."""
    needle = str(data_dir.resolve()).encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in (worker_pid, os.getpid()):
            continue
        try:
            blob = Path(f"/proc/{entry}/cmdline").read_bytes() + Path(f"/proc/{entry}/environ").read_bytes()
            zombie = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            continue
        if needle in blob and not zombie:
            found.append(int(entry))
    return sorted(found)


# -- the worker -----------------------------------------------------------------------------------


class Worker:
    """``berth serve`` in a session of its own over a temporary data dir."""

    def __init__(self, root: Path, ports: tuple[int, int]) -> None:
        self.data_dir = root / "data"
        self.log = root / "serve.log"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
        self.env = {**inherited, "BERTH_DATA_DIR": str(self.data_dir), "BERTH_DEPLOYER": "process",
                    "BERTH_ENTRYPOINT": json.dumps([sys.executable, str(FAKE)]), "BERTH_POLL_INTERVAL": "0.2",
                    "BERTH_STOP_TIMEOUT": "5", "BERTH_INSTANCE_PORT_RANGE": f"{ports[0]}-{ports[1]}",
                    "BERTH_LOG_LEVEL": "warning"}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> int:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "berth", "serve", "--port", str(self.port)],
                                         env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        with httpx.Client(trust_env=False) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError("berth serve exited:\n" + self.log.read_text())
                try:
                    if client.get(f"{self.url}/health", timeout=2).status_code == 200:
                        return self.proc.pid
                except httpx.HTTPError:
                    time.sleep(0.1)
        raise RuntimeError("berth serve did not answer /health")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


# -- the load ---------------------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {}

    async def timed(self, name: str, call: Any) -> httpx.Response:
        start = time.perf_counter()
        response = await call
        self.samples.setdefault(name, []).append((time.perf_counter() - start) * 1000)
        return response

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for name, values in sorted(self.samples.items()):
            ordered = sorted(values)
            p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
            out[name] = {"n": len(values), "p50": round(statistics.median(values), 2), "p99": round(p99, 2),
                         "max": round(ordered[-1], 2)}
        return out


def _options(name: str) -> dict[str, str]:
    return {"options": f"--model /models/soak --served-model-name {name}"}


async def _wait_ready(client: httpx.AsyncClient, rec: Recorder, name: str, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = (await rec.timed("status", client.get(f"/v2/vllm/instances/{name}"))).json()
        if body.get("ready"):
            return True
        if body.get("status") == "stopped":
            return False
        await asyncio.sleep(0.05)
    return False


async def _cycle(client: httpx.AsyncClient, rec: Recorder, name: str, result: SoakResult) -> None:
    created = await rec.timed("create", client.put(f"/v2/vllm/instances/{name}", json=_options(name)))
    ready = created.status_code == 201 and await _wait_ready(client, rec, name)
    await rec.timed("list", client.get("/v2/vllm/instances"))
    deleted = await rec.timed("delete", client.delete(f"/v2/vllm/instances/{name}"))
    if not ready or deleted.status_code != 200:
        result.failed_cycles += 1
        result.errors.append(f"{name}: create {created.status_code}, ready {ready}, delete {deleted.status_code}")
    result.cycles += 1


async def _cycles(client: httpx.AsyncClient, rec: Recorder, first: int, count: int, concurrency: int,
                  result: SoakResult) -> None:
    queue = list(range(first, first + count))

    async def lane() -> None:
        while queue:
            await _cycle(client, rec, f"cycle-{queue.pop(0)}", result)

    await asyncio.gather(*(lane() for _ in range(concurrency)))


class Follower:
    """Follows one instance's log by byte ranges, as the launcher's clients do."""

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        self.offset = 0
        self.reads = 0
        self.errors: list[str] = []

    async def poll(self, client: httpx.AsyncClient) -> None:
        while True:
            try:
                reply = await client.get(f"/v2/vllm/instances/{self.instance_id}/log",
                                         headers={"Range": f"bytes={self.offset}-"})
            except httpx.TransportError as exc:  # e.g. a pooled connection the server closed: retry
                self.errors.append(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(POLL_S)
                continue
            self.reads += 1
            if reply.status_code != 206 or not reply.content:
                return
            self.offset += len(reply.content)

    async def run(self, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.poll(client)
            await asyncio.sleep(POLL_S)
        await self.poll(client)


async def _chatter(urls: list[str], stop: asyncio.Event) -> None:
    """Requests to the followed instances, so their logs keep growing."""
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        while not stop.is_set():
            for url in urls:
                try:
                    await client.get(f"{url}/v1/models")
                except httpx.HTTPError:
                    pass
            await asyncio.sleep(0.05)


async def _watch(client: httpx.AsyncClient, stop: asyncio.Event, counts: list[int]) -> None:
    while not stop.is_set():
        async with client.stream("GET", "/v2/instances/watch?since=0&timeout=5") as stream:
            async for line in stream.aiter_lines():
                if line.strip() and '"heartbeat"' not in line:
                    counts[0] += 1


# -- the run --------------------------------------------------------------------------------------------


async def _start_followed(client: httpx.AsyncClient, rec: Recorder) -> tuple[list[str], list[str]]:
    """The long-lived instances whose logs are followed: (ids, base URLs)."""
    followed = [f"followed-{i}" for i in range(FOLLOWED)]
    for name in followed:
        assert (await client.put(f"/v2/vllm/instances/{name}", json=_options(name))).status_code == 201
    urls = []
    for name in followed:
        assert await _wait_ready(client, rec, name), f"{name} never became ready"
        urls.append((await client.get(f"/v2/vllm/instances/{name}")).json()["base_url"])
    return followed, urls


async def _load(client: httpx.AsyncClient, rec: Recorder, followed: list[str], urls: list[str],
                args: argparse.Namespace, result: SoakResult) -> list[Follower]:
    """The measured cycles, with followers, chatter and watch streams running meanwhile."""
    stop, quiet = asyncio.Event(), asyncio.Event()
    followers = [Follower(followed[i % FOLLOWED]) for i in range(args.followers)]
    watched = [0]
    chatter = asyncio.create_task(_chatter(urls, quiet))
    background = [asyncio.create_task(f.run(client, stop)) for f in followers]
    background += [asyncio.create_task(_watch(client, stop, watched)) for _ in range(2)]
    await _cycles(client, rec, args.warmup, args.cycles - args.warmup, args.concurrency, result)
    quiet.set()  # the logs stop growing first, so the followers' last reads reach the end
    await chatter
    await asyncio.sleep(0.5)
    stop.set()
    for outcome in await asyncio.gather(*background, return_exceptions=True):
        if isinstance(outcome, Exception):
            result.errors.append(f"follower: {type(outcome).__name__}: {outcome}")
    result.watch_events = watched[0]
    return followers


async def _complete(client: httpx.AsyncClient, followers: list[Follower]) -> bool:
    """Whether every follower read its log to the end."""
    totals = {}
    for name in {f.instance_id for f in followers}:
        head = await client.get(f"/v2/vllm/instances/{name}/log", headers={"Range": "bytes=0-0"})
        totals[name] = int(head.headers["content-range"].rpartition("/")[2])
    return all(f.offset == totals[f.instance_id] for f in followers)


async def _soak(worker: Worker, pid: int, args: argparse.Namespace, result: SoakResult) -> None:
    limits = httpx.Limits(max_connections=args.followers + args.concurrency + 16)
    async with httpx.AsyncClient(base_url=worker.url, trust_env=False, timeout=60, limits=limits) as client:
        rec = Recorder()
        followed, urls = await _start_followed(client, rec)
        await _cycles(client, rec, 0, args.warmup, args.concurrency, result)
        result.rss_kib_warm, result.fds_warm = _rss_kib(pid), _fds(pid)
        rec.samples.clear()
        followers = await _load(client, rec, followed, urls, args, result)
        result.latency_ms = rec.summary()
        result.follower_reads = sum(f.reads for f in followers)
        result.follower_bytes = sum(f.offset for f in followers)
        result.followers_complete = await _complete(client, followers)
        result.errors += [f"follower {f.instance_id}: {e}" for f in followers for e in f.errors]
        await client.delete("/v2/vllm/instances")
    await asyncio.sleep(0.5)
    result.rss_kib_end, result.fds_end = _rss_kib(pid), _fds(pid)


def run_soak(cycles: int = 200, followers: int = 50, concurrency: int = 4) -> SoakResult:
    """Run the soak; everything it started is stopped before it returns."""
    args = argparse.Namespace(cycles=cycles, followers=followers, concurrency=concurrency, warmup=min(10, cycles))
    result = SoakResult()
    ports = _port_block(200)
    with tempfile.TemporaryDirectory(prefix="berth-soak-") as root:
        worker = Worker(Path(root), ports)
        pid = worker.start()
        result.rss_kib_start = _rss_kib(pid)
        try:
            asyncio.run(_soak(worker, pid, args, result))
            result.leaked_processes = _ours(worker.data_dir, pid)
            result.leaked_ports = sorted(p for p in _listening() if ports[0] <= p <= ports[1])
        finally:
            worker.stop()
            for leftover in _ours(worker.data_dir, pid):
                os.kill(leftover, signal.SIGKILL)
    return result


def _print(result: SoakResult, args: argparse.Namespace) -> None:
    print(f"soak: {result.cycles} create/delete cycles ({result.failed_cycles} failed), "
          f"{args.followers} log followers + 2 watch streams, concurrency {args.concurrency}")
    print(f"{'request':<8} {'n':>6} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}")
    for name, stats in result.latency_ms.items():
        print(f"{name:<8} {stats['n']:>6} {stats['p50']:>9.2f} {stats['p99']:>9.2f} {stats['max']:>9.2f}")
    print(f"worker RSS: {result.rss_kib_start / 1024:.1f} MiB at start, {result.rss_kib_warm / 1024:.1f} MiB "
          f"after warm-up, {result.rss_kib_end / 1024:.1f} MiB at the end "
          f"({(result.rss_kib_end - result.rss_kib_warm) / 1024:+.1f} MiB)")
    print(f"worker fds: {result.fds_warm} after warm-up, {result.fds_end} at the end")
    print(f"followers: {result.follower_reads} range reads, {result.follower_bytes} bytes, every byte received: "
          f"{result.followers_complete}; watch events: {result.watch_events}")
    print(f"left behind: {len(result.leaked_processes)} processes {result.leaked_processes}, "
          f"{len(result.leaked_ports)} listening ports {result.leaked_ports}")
    for error in result.errors[:10]:
        print(f"error: {error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--followers", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    result = run_soak(args.cycles, args.followers, args.concurrency)
    print(json.dumps(asdict(result), indent=2)) if args.json else _print(result, args)


if __name__ == "__main__":
    main()
