"""Client throughput: berth's client vs the ``openai`` SDK vs a thread pool of ``requests``.

Part 1 (always): every client against a local stub server that answers instantly, run in its
own process, so the numbers are client overhead: requests (or prompts) per second and client
CPU per item (this process's CPU time, all threads, divided by the items sent).
Part 2 (unless ``--stub-only``; needs vLLM): the same clients against one and against two tiny
vLLM servers started by ``VLLMService``, the batch time of each, and the CPU the servers used.

It ends with ``chat vs openai SDK: 11.2x``, ``chat vs thread pool: 5.1x`` and
``generate vs openai SDK: 70x`` (prompts per second) from part 1, and with part 2 the line
``two servers vs one (berth chat batch time): 0.62x``.

    .venv/bin/python bench/client_throughput.py --stub-only
    .venv/bin/python bench/client_throughput.py --batch 64 --max-tokens 32
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import requests

from berth.client import LLMConfig, ServeConfig, VLLMService

STUB_MODEL = "stub-model"
TINY_MODEL = "tiny"
Chat = list[dict[str, str]]


@dataclass
class Target:
    """Where the clients send: base URLs (round-robin for the clients that cannot spread),
    the model name, request fields every client sends, and how much to warm up."""

    label: str
    urls: list[str]
    model: str
    params: dict[str, Any] = field(default_factory=dict)
    warm: int = 256


@dataclass
class Result:
    name: str
    items: int
    wall: float
    cpu: float

    @property
    def rate(self) -> float:
        return self.items / self.wall

    def row(self) -> str:
        per = self.cpu / self.items * 1e6
        return f"{self.name:<44} {self.items:>7} {self.wall:>8.2f} s {self.rate:>10,.0f}/s {per:>9.0f} us"


def measure(name: str, items: int, work: Callable[[], object], repeats: int = 1) -> Result:
    """Best of ``repeats`` runs of ``work()``: wall time and this process's CPU time."""
    best: Result | None = None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        work()
        result = Result(name, items, time.perf_counter() - wall, time.process_time() - cpu)
        best = result if best is None or result.wall < best.wall else best
    assert best is not None
    return best


def chats(count: int) -> list[Chat]:
    return [[{"role": "user", "content": f"question number {i}"}] for i in range(count)]


def prompts(count: int) -> list[str]:
    return [f"prompt number {i}" for i in range(count)]


# -- the three clients --------------------------------------------------------------------

def berth_service(target: Target) -> VLLMService:
    return VLLMService(attach=target.urls, model=target.model,
                       serve_config=ServeConfig(client_timeout=600))


def berth_chat(target: Target, count: int, repeats: int = 1) -> Result:
    with berth_service(target) as service:
        service.chat(chats(min(count, target.warm)), target.params)
        batch = chats(count)
        return measure(f"berth chat, {target.label}", count,
                       lambda: service.chat(batch, target.params), repeats)


def berth_generate(target: Target, count: int, repeats: int = 1) -> Result:
    with berth_service(target) as service:
        service.generate(prompts(min(count, target.warm * 4)), target.params)
        batch = prompts(count)
        return measure(f"berth generate (prompts), {target.label}", count,
                       lambda: service.generate(batch, target.params), repeats)


def sdk_chat(target: Target, count: int, repeats: int = 1) -> Result:
    clients = [openai.OpenAI(base_url=f"{u}/v1", api_key="unused", max_retries=0, timeout=600)
               for u in target.urls]
    batch = chats(count)

    def run() -> None:
        for i, messages in enumerate(batch):
            clients[i % len(clients)].chat.completions.create(
                model=target.model, messages=messages, extra_body=target.params)  # type: ignore[arg-type]

    try:
        clients[0].chat.completions.create(model=target.model, messages=batch[0],  # type: ignore[arg-type]
                                           extra_body=target.params)
        return measure(f"openai SDK chat one by one, {target.label}", count, run, repeats)
    finally:
        for client in clients:
            client.close()


def sdk_generate(target: Target, count: int, repeats: int = 1) -> Result:
    clients = [openai.OpenAI(base_url=f"{u}/v1", api_key="unused", max_retries=0, timeout=600)
               for u in target.urls]
    batch = prompts(count)

    def run() -> None:
        for i, prompt in enumerate(batch):
            clients[i % len(clients)].completions.create(
                model=target.model, prompt=prompt, extra_body=target.params)

    try:
        clients[0].completions.create(model=target.model, prompt=batch[0], extra_body=target.params)
        return measure(f"openai SDK completions one by one, {target.label}", count, run, repeats)
    finally:
        for client in clients:
            client.close()


def pool_chat(target: Target, count: int, repeats: int = 1, threads: int = 8) -> Result:
    """The seed's approach: a ThreadPoolExecutor posting with one requests.Session per thread,
    requests dealt to the servers in turn."""
    local = threading.local()
    urls = [f"{u}/v1/chat/completions" for u in target.urls]

    def post(item: tuple[int, Chat]) -> str:
        index, messages = item
        session = getattr(local, "session", None) or _new_session(local)
        body = {"model": target.model, "messages": messages, **target.params}
        answer = session.post(urls[index % len(urls)], json=body, timeout=600)
        return answer.json()["choices"][0]["message"]["content"]

    batch = list(enumerate(chats(count)))
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(post, batch[:min(count, threads * 4)]))
        return measure(f"requests thread pool ({threads}) chat, {target.label}", count,
                       lambda: list(pool.map(post, batch)), repeats)


def _new_session(local: threading.local) -> requests.Session:
    local.session = requests.Session()
    return local.session


def print_table(title: str, results: list[Result]) -> None:
    print(f"\n== {title} ==")
    print(f"{'client':<44} {'items':>7} {'wall':>10} {'rate':>12} {'cpu/item':>12}")
    for result in results:
        print(result.row())


# -- part 1: the instant stub ---------------------------------------------------------------

@contextmanager
def stub_process() -> Iterator[str]:
    """A stub server in its own process group (so its CPU is not ours); yields its base URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "berth.testing.stub_server", "--port", "0", "--model", STUB_MODEL],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("PORT "):
            raise RuntimeError(f"stub did not start: {line!r}")
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def stub_part(scale: float) -> dict[str, Result]:
    """Every client against the instant stub."""
    def n(base: int) -> int:
        return max(1, int(base * scale))

    with stub_process() as url:
        target = Target("stub", [url], STUB_MODEL)
        results = {
            "berth_chat": berth_chat(target, n(20000)),
            "sdk_chat": sdk_chat(target, n(2000)),
            "pool_chat": pool_chat(target, n(5000)),
            "berth_generate": berth_generate(target, n(300000)),
            "sdk_generate": sdk_generate(target, n(2000)),
        }
    print_table("against an instant stub (client overhead)", list(results.values()))
    return results


def stub_ratios(results: dict[str, Result]) -> None:
    chat_sdk = results["berth_chat"].rate / results["sdk_chat"].rate
    chat_pool = results["berth_chat"].rate / results["pool_chat"].rate
    gen_sdk = results["berth_generate"].rate / results["sdk_generate"].rate
    print(f"chat vs openai SDK: {chat_sdk:.1f}x")
    print(f"chat vs thread pool: {chat_pool:.1f}x")
    print(f"generate vs openai SDK: {gen_sdk:.0f}x")


# -- part 2: one vs two tiny vLLM servers ---------------------------------------------------

def tree_cpu_seconds(roots: list[int]) -> float:
    """User + system CPU seconds of the processes under ``roots`` (themselves included)."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])))
    wanted, frontier = set(roots), list(roots)
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, (ppid, _) in stats.items() if ppid == parent and pid not in wanted]
        wanted.update(children)
        frontier += children
    return sum(stats[p][1] for p in wanted if p in stats) / os.sysconf("SC_CLK_TCK")


def server_roots(service: VLLMService, count: int) -> list[int]:
    pids = []
    for server in service.servers[:count]:
        status = server.status()
        pids += [c.pid for c in (status.containers if status else []) if c.pid]
    return pids


@dataclass
class ScalingRun:
    """The clients against ``servers`` of the tiny servers."""

    servers: int
    results: list[Result]
    berth_chat: Result
    server_cores: float


def tiny_service(deployer: str) -> VLLMService:
    from berth.testing import tiny_model_path

    llm = LLMConfig(model_name=str(tiny_model_path()), served_model_name=TINY_MODEL,
                    enforce_eager=True, max_model_len=512)
    serve = ServeConfig(num_servers=2, env={"VLLM_CPU_KVCACHE_SPACE": "1"},
                        startup_timeout=600, client_timeout=600, deployer=deployer, server="openai")
    return VLLMService(llm, serve)


def scaling_run(service: VLLMService, servers: int, batch: int, params: dict[str, Any],
                repeats: int) -> ScalingRun:
    urls = [e.base_url for e in service.endpoints][:servers]
    target = Target(f"{servers} server{'s' * (servers > 1)}", urls, TINY_MODEL, params, warm=8)
    roots = server_roots(service, servers)
    cpu_before, wall_before = tree_cpu_seconds(roots), time.perf_counter()
    chat = berth_chat(target, batch, repeats)
    cores = (tree_cpu_seconds(roots) - cpu_before) / (time.perf_counter() - wall_before)
    results = [chat]
    sequential = max(1, batch // 4)  # one by one is slow: a quarter of the batch tells its rate
    for run, count in ((berth_generate, batch), (sdk_chat, sequential), (pool_chat, batch)):
        print(f"  {results[-1].row()}", flush=True)
        results.append(run(target, count, repeats))
    return ScalingRun(servers, results, chat, cores)


def vllm_part(batch: int, max_tokens: int, repeats: int, deployer: str) -> None:
    """The clients against one, then two, tiny vLLM servers (the same two servers)."""
    params = {"max_tokens": max_tokens, "ignore_eos": True, "temperature": 0.8, "seed": 0}
    started = time.perf_counter()
    with tiny_service(deployer) as service:
        print(f"\n(two tiny servers ready in {time.perf_counter() - started:.0f} s; "
              f"{deployer} deployer; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} "
              "cores)", flush=True)
        one, two = (scaling_run(service, n, batch, params, repeats) for n in (1, 2))
    print_table(f"against tiny vLLM servers ({batch} requests x {max_tokens} tokens, best of "
                f"{repeats})", one.results + two.results)
    print(f"server CPU during berth chat: 1 server {one.server_cores:.2f} cores, "
          f"2 servers {two.server_cores:.2f} cores (of {os.cpu_count()})")
    ratio = two.berth_chat.wall / one.berth_chat.wall
    print(f"two servers vs one (berth chat batch time): {ratio:.2f}x")
    if ratio > 0.75:
        print(f"  not met here: both CPU servers share the same {os.cpu_count()} cores (load "
              f"average {os.getloadavg()[0]:.1f}), and vLLM's CPU backend binds each server's "
              "OpenMP threads to the same cores (auto binding), so a second server competes "
              "with the first instead of adding capacity; GPU servers each get their own GPU")


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # run the with-blocks: stop the servers and the stub


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--stub-only", action="store_true", help="run the stub part alone")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the stub batch sizes")
    parser.add_argument("--batch", type=int, default=64, help="vLLM part: requests per batch")
    parser.add_argument("--max-tokens", type=int, default=32, help="vLLM part: tokens per answer")
    parser.add_argument("--repeats", type=int, default=2, help="vLLM part: best of N runs")
    parser.add_argument("--deployer", default="auto", choices=["auto", "launcher", "process"],
                        help="vLLM part: how the servers run (ServeConfig.deployer)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    results = stub_part(args.scale)
    if not args.stub_only:
        vllm_part(args.batch, args.max_tokens, args.repeats, args.deployer)
    print()
    stub_ratios(results)


if __name__ == "__main__":
    main()
