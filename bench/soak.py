"""Soak of one worker: create/delete cycles while many clients follow instance logs.

A real ``berth serve`` (process deployer, the fast vLLM stand-in ``tests/support/fake_vllm.py``
as the engine, loopback only) holds a few long-lived instances. A load process of its own (so
its work never delays the timed requests of this one) runs ``--followers`` clients that follow
those logs the way the launcher's clients do (``Range: bytes=OFFSET-`` every 0.2 s), a chatter
task that makes the logs grow, and two clients of the watch stream (streams of 5 s, each
resuming after the last revision seen). Meanwhile this process runs
create (PUT), wait-until-ready (status), list and delete cycles, ``--concurrency`` at a time:
first ``--idle-cycles`` with no load (the baseline on this machine as it is now), then
``--cycles`` under load.

Printed: cycles done and failed; p50/p99/max of create, delete, list and status, idle and under
load; the worker's RSS at ``--samples`` regular points and the slope of its last half (MiB per
1,000 cycles), its threads, open fds and CPU; the machine's load average; bytes the followers
read (and whether every follower got every byte, with no transport error); and processes and
ports left behind once everything is deleted.

    python bench/soak.py [--cycles 200] [--followers 50] [--concurrency 4] [--idle-cycles 40]
                         [--samples 20] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from berth.testing.serve_process import spawn_serve, stop_group, wait_healthy
from berth.utils.ports import free_port, free_port_range, parse_port_range

ROOT = Path(__file__).resolve().parents[1]
FAKE = ROOT / "tests" / "support" / "fake_vllm.py"
FOLLOWED = 5
WATCH_STREAMS = 2
POLL_S = 0.2
WARMUP = 10


@dataclass
class SoakResult:
    cycles: int = 0
    failed_cycles: int = 0
    idle_latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    rss_kib_start: int = 0
    rss_kib_warm: int = 0
    rss_kib_end: int = 0
    #: (loaded cycles done, worker RSS KiB, 1-minute load average) at regular points
    rss_samples: list[tuple[int, int, float]] = field(default_factory=list)
    rss_slope_mib_per_1000: float = 0.0
    threads_warm: int = 0
    threads_end: int = 0
    fds_warm: int = 0
    fds_end: int = 0
    worker_cpu_s: float = 0.0
    loaded_wall_s: float = 0.0
    follower_reads: int = 0
    follower_bytes: int = 0
    follower_errors: int = 0
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


def _status_field(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1])
    return 0


def _rss_kib(pid: int) -> int:
    return _status_field(pid, "VmRSS")


def _threads(pid: int) -> int:
    return _status_field(pid, "Threads")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


def slope_per_1000(samples: list[tuple[int, int, float]]) -> float:
    """Least-squares slope of RSS (MiB) over cycles, per 1,000 cycles, in the last half of ``samples``."""
    half = samples[len(samples) // 2:]
    if len(half) < 2:
        return 0.0
    xs = [float(cycles) for cycles, _, _ in half]
    ys = [rss / 1024 for _, rss, _ in half]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        return 0.0
    return 1000 * sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / spread


# -- the worker -----------------------------------------------------------------------------------


class Worker:
    """``berth serve`` in a session of its own over a temporary data dir."""

    def __init__(self, root: Path, ports: tuple[int, int]) -> None:
        self.data_dir = root / "data"
        self.log = root / "serve.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
        self.env = {**inherited, "BERTH_DATA_DIR": str(self.data_dir), "BERTH_DEPLOYER": "process",
                    "BERTH_ENTRYPOINT": json.dumps([sys.executable, str(FAKE)]), "BERTH_POLL_INTERVAL": "0.2",
                    "BERTH_STOP_TIMEOUT": "5", "BERTH_INSTANCE_PORT_RANGE": f"{ports[0]}-{ports[1]}",
                    "BERTH_LOG_LEVEL": "warning"}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> int:
        self.proc = spawn_serve(["--port", str(self.port)], self.env, self.log)
        try:
            with httpx.Client(base_url=self.url, trust_env=False, timeout=2) as client:
                wait_healthy(self.proc, client, self.log, timeout)
        except AssertionError:
            self.stop()
            raise
        return self.proc.pid

    def stop(self) -> None:
        stop_group(self.proc, timeout=30)


# -- the timed control requests (this process) -------------------------------------------------------


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


async def _cycle(client: httpx.AsyncClient, rec: Recorder, name: str) -> str | None:
    """Create, wait until ready, list, delete; what went wrong, if anything."""
    created = await rec.timed("create", client.put(f"/v2/vllm/instances/{name}", json=_options(name)))
    ready = created.status_code == 201 and await _wait_ready(client, rec, name)
    await rec.timed("list", client.get("/v2/vllm/instances"))
    deleted = await rec.timed("delete", client.delete(f"/v2/vllm/instances/{name}"))
    if not ready or deleted.status_code != 200:
        return f"{name}: create {created.status_code}, ready {ready}, delete {deleted.status_code}"
    return None


Done = Callable[[str | None], None]


async def _cycles(client: httpx.AsyncClient, rec: Recorder, names: list[str], concurrency: int, done: Done) -> None:
    queue = list(names)

    async def lane() -> None:
        while queue:
            done(await _cycle(client, rec, queue.pop(0)))

    await asyncio.gather(*(lane() for _ in range(concurrency)))


# -- the load (a process of its own) -------------------------------------------------------------


class Follower:
    """Follows one instance's log by byte ranges, as the launcher's clients do."""

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        self.offset = 0
        self.reads = 0
        self.errors: list[str] = []

    async def poll(self, client: httpx.AsyncClient) -> None:
        """Read until caught up; a transport error or an unexpected answer is recorded, then retried."""
        while True:
            try:
                reply = await client.get(f"/v2/vllm/instances/{self.instance_id}/log",
                                         headers={"Range": f"bytes={self.offset}-"})
            except httpx.TransportError as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
                return
            self.reads += 1
            if reply.status_code not in (206, 416):
                self.errors.append(f"answered {reply.status_code}")
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


async def _watch(client: httpx.AsyncClient, stop: asyncio.Event, counts: dict[str, int]) -> None:
    """Watches in streams of 5 s, each resuming after the last revision seen, as a client should."""
    since = 0
    while not stop.is_set():
        try:
            async with client.stream("GET", f"/v2/instances/watch?since={since}&timeout=5") as stream:
                async for line in stream.aiter_lines():
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    since = max(since, event["revision"])
                    counts["events"] += event["type"] != "heartbeat"
        except httpx.TransportError:
            counts["errors"] += 1


async def _stdin_line() -> str:
    return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def _load(config: dict[str, Any]) -> dict[str, Any]:
    """Followers, chatter and watch streams until a line arrives on stdin; then the logs stop
    growing, the followers read to the end, and the figures are returned."""
    stop, quiet = asyncio.Event(), asyncio.Event()
    followed = config["followed"]
    followers = [Follower(followed[i % len(followed)]) for i in range(config["followers"])]
    watched = {"events": 0, "errors": 0}
    limits = httpx.Limits(max_connections=config["followers"] + WATCH_STREAMS + 4)
    async with httpx.AsyncClient(base_url=config["url"], trust_env=False, timeout=60, limits=limits) as client:
        chatter = asyncio.create_task(_chatter(config["urls"], quiet))
        tasks = [asyncio.create_task(f.run(client, stop)) for f in followers]
        tasks += [asyncio.create_task(_watch(client, stop, watched)) for _ in range(WATCH_STREAMS)]
        print("started", flush=True)
        await _stdin_line()
        quiet.set()  # the logs stop growing first, so the followers' last reads reach the end
        await chatter
        await asyncio.sleep(0.5)
        stop.set()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    failures = [f"{type(o).__name__}: {o}" for o in outcomes if isinstance(o, BaseException)]
    return {"followers": [{"instance_id": f.instance_id, "offset": f.offset, "reads": f.reads,
                           "errors": f.errors[:5], "error_count": len(f.errors)} for f in followers],
            "watch_events": watched["events"], "watch_errors": watched["errors"], "failures": failures}


class LoadProcess:
    """``bench/soak.py --load CONFIG``: the followers, in a process of their own."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--load", json.dumps(config)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    async def started(self) -> None:
        assert self.proc.stdout is not None
        line = await asyncio.to_thread(self.proc.stdout.readline)
        if line.strip() != "started":
            raise RuntimeError(f"the load process did not start: {line!r}")

    async def finish(self) -> dict[str, Any]:
        out, _ = await asyncio.to_thread(self.proc.communicate, "stop\n", 300)
        return json.loads(out)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


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


def _sampler(pid: int, total: int, samples: int, result: SoakResult) -> Done:
    """Counts finished cycles; takes the worker's RSS at ``samples`` regular points."""
    step = max(1, total // max(1, samples))

    def done(error: str | None) -> None:
        result.cycles += 1
        if error:
            result.failed_cycles += 1
            result.errors.append(error)
        if result.cycles % step == 0 or result.cycles == total:
            result.rss_samples.append((result.cycles, _rss_kib(pid), round(os.getloadavg()[0], 2)))

    return done


async def _loaded(client: httpx.AsyncClient, pid: int, args: argparse.Namespace, config: dict[str, Any],
                  result: SoakResult) -> dict[str, Any]:
    """The measured cycles, with the load process running meanwhile; returns its figures."""
    load = LoadProcess(config)
    try:
        await load.started()
        rec = Recorder()
        cpu, wall = _cpu_s(pid), time.monotonic()
        names = [f"cycle-{i}" for i in range(args.cycles)]
        await _cycles(client, rec, names, args.concurrency, _sampler(pid, args.cycles, args.samples, result))
        result.worker_cpu_s = round(_cpu_s(pid) - cpu, 1)
        result.loaded_wall_s = round(time.monotonic() - wall, 1)
        result.latency_ms = rec.summary()
        return await load.finish()
    finally:
        load.kill()


async def _followers_figures(client: httpx.AsyncClient, figures: dict[str, Any], result: SoakResult) -> None:
    """Reads, bytes and errors of the followers, and whether each read its log to the end."""
    followers = figures["followers"]
    totals = {}
    for name in {f["instance_id"] for f in followers}:
        head = await client.get(f"/v2/vllm/instances/{name}/log", headers={"Range": "bytes=0-0"})
        totals[name] = int(head.headers["content-range"].rpartition("/")[2])
    result.follower_reads = sum(f["reads"] for f in followers)
    result.follower_bytes = sum(f["offset"] for f in followers)
    result.follower_errors = sum(f["error_count"] for f in followers) + figures["watch_errors"]
    result.followers_complete = all(f["offset"] == totals[f["instance_id"]] for f in followers)
    result.watch_events = figures["watch_events"]
    result.errors += figures["failures"]
    result.errors += [f"follower {f['instance_id']}: {e}" for f in followers for e in f["errors"]]


async def _soak(worker: Worker, pid: int, args: argparse.Namespace, result: SoakResult) -> None:
    async with httpx.AsyncClient(base_url=worker.url, trust_env=False, timeout=60) as client:
        followed, urls = await _start_followed(client, Recorder())
        unloaded: Done = lambda error: result.errors.append(error) if error else None  # noqa: E731
        await _cycles(client, Recorder(), [f"warm-{i}" for i in range(WARMUP)], args.concurrency, unloaded)
        idle = Recorder()
        await _cycles(client, idle, [f"idle-{i}" for i in range(args.idle_cycles)], args.concurrency, unloaded)
        result.idle_latency_ms = idle.summary()
        result.rss_kib_warm, result.fds_warm, result.threads_warm = _rss_kib(pid), _fds(pid), _threads(pid)
        config = {"url": worker.url, "followed": followed, "urls": urls, "followers": args.followers}
        figures = await _loaded(client, pid, args, config, result)
        result.rss_slope_mib_per_1000 = round(slope_per_1000(result.rss_samples), 2)
        await _followers_figures(client, figures, result)
        await client.delete("/v2/vllm/instances")
    await asyncio.sleep(0.5)
    result.rss_kib_end, result.fds_end, result.threads_end = _rss_kib(pid), _fds(pid), _threads(pid)


def run_soak(cycles: int = 200, followers: int = 50, concurrency: int = 4, idle_cycles: int = 40,
             samples: int = 20) -> SoakResult:
    """Run the soak; everything it started is stopped before it returns."""
    args = argparse.Namespace(cycles=cycles, followers=followers, concurrency=concurrency,
                              idle_cycles=idle_cycles, samples=samples)
    result = SoakResult()
    ports = parse_port_range(free_port_range(200))
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


def _print_latency(title: str, latency: dict[str, dict[str, float]]) -> None:
    print(f"{title:<8} {'n':>6} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}")
    for name, stats in latency.items():
        print(f"{name:<8} {stats['n']:>6} {stats['p50']:>9.2f} {stats['p99']:>9.2f} {stats['max']:>9.2f}")


def _print(result: SoakResult, args: argparse.Namespace) -> None:
    print(f"soak: {result.cycles} create/delete cycles ({result.failed_cycles} failed) under {args.followers} "
          f"log followers + {WATCH_STREAMS} watch streams, concurrency {args.concurrency}; "
          f"{args.idle_cycles} idle cycles first")
    _print_latency("idle", result.idle_latency_ms)
    _print_latency("loaded", result.latency_ms)
    print("worker RSS (cycles: MiB, load average):")
    print("  " + ", ".join(f"{c}: {rss / 1024:.1f} ({load:.1f})" for c, rss, load in result.rss_samples))
    print(f"worker RSS: {result.rss_kib_start / 1024:.1f} MiB at start, {result.rss_kib_warm / 1024:.1f} MiB "
          f"after warm-up, {result.rss_kib_end / 1024:.1f} MiB at the end "
          f"({(result.rss_kib_end - result.rss_kib_warm) / 1024:+.1f} MiB); slope of the last half "
          f"{result.rss_slope_mib_per_1000:+.2f} MiB per 1,000 cycles")
    print(f"worker threads: {result.threads_warm} after warm-up, {result.threads_end} at the end; fds: "
          f"{result.fds_warm} after warm-up, {result.fds_end} at the end; CPU {result.worker_cpu_s:.0f} s "
          f"in {result.loaded_wall_s:.0f} s under load")
    print(f"followers: {result.follower_reads} range reads, {result.follower_bytes} bytes, every byte received: "
          f"{result.followers_complete}, transport errors: {result.follower_errors}; "
          f"watch events: {result.watch_events}")
    print(f"left behind: {len(result.leaked_processes)} processes {result.leaked_processes}, "
          f"{len(result.leaked_ports)} listening ports {result.leaked_ports}")
    for error in result.errors[:10]:
        print(f"error: {error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=200, help="cycles under load")
    parser.add_argument("--followers", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--idle-cycles", type=int, default=40, help="cycles with no load first (the baseline)")
    parser.add_argument("--samples", type=int, default=20, help="RSS samples over the loaded cycles")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--load", metavar="CONFIG", help=argparse.SUPPRESS)  # the load process
    args = parser.parse_args()
    if args.load:
        print(json.dumps(asyncio.run(_load(json.loads(args.load)))), flush=True)
        return
    result = run_soak(args.cycles, args.followers, args.concurrency, args.idle_cycles, args.samples)
    print(json.dumps(asdict(result), indent=2)) if args.json else _print(result, args)


if __name__ == "__main__":
    main()
