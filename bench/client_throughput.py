"""Client throughput: berth's client vs the ``openai`` SDK vs a thread pool of ``requests``.

Part 1 (always): against a local stub server that answers instantly, in its own process, so
the numbers are client overhead: requests (or prompts) per second and client CPU per request
(this process's CPU time, every thread included, divided by the requests sent).
Part 2 (unless ``--stub-only``): the same batch against one and against two tiny vLLM servers
started by ``VLLMService``, to show scaling.

It ends with the ratio lines ``chat vs openai SDK: 11.2x``, ``chat vs thread pool: 5.1x`` and
``generate vs openai SDK: 70x`` (prompts per second for generate).

    .venv/bin/python bench/client_throughput.py --stub-only
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
from dataclasses import dataclass

import openai
import requests

from berth.client import VLLMClient

MODEL = "stub-model"


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
        return f"{self.name:<34} {self.items:>8} {self.wall:>8.2f} s {self.rate:>11,.0f}/s {per:>9.1f} us"


def measure(name: str, items: int, work: Callable[[], object]) -> Result:
    """Wall and process CPU time of ``work()``, which handles ``items`` requests or prompts."""
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return Result(name, items, time.perf_counter() - wall, time.process_time() - cpu)


@contextmanager
def stub_process() -> Iterator[str]:
    """A stub server in its own process group (so its CPU is not ours); yields its base URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "berth.client._stub", "--port", "0", "--model", MODEL],
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


def chats(count: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"question number {i}"}] for i in range(count)]


def prompts(count: int) -> list[str]:
    return [f"prompt number {i}" for i in range(count)]


# -- the three clients --------------------------------------------------------------------

def berth_chat(url: str, count: int) -> Result:
    with VLLMClient(base_url=url, model=MODEL) as client:
        client.chat(chats(256))  # warm the pool
        batch = chats(count)
        return measure("berth VLLMClient.chat", count, lambda: client.chat(batch))


def berth_generate(url: str, count: int) -> Result:
    with VLLMClient(base_url=url, model=MODEL) as client:
        client.generate(prompts(1024))
        batch = prompts(count)
        return measure("berth VLLMClient.generate (prompts)", count, lambda: client.generate(batch))


def sdk_chat(url: str, count: int) -> Result:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    batch = chats(count)

    def run() -> None:
        for messages in batch:
            client.chat.completions.create(model=MODEL, messages=messages)

    client.chat.completions.create(model=MODEL, messages=batch[0])
    try:
        return measure("openai SDK chat, one by one", count, run)
    finally:
        client.close()


def sdk_generate(url: str, count: int) -> Result:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    batch = prompts(count)

    def run() -> None:
        for prompt in batch:
            client.completions.create(model=MODEL, prompt=prompt)

    client.completions.create(model=MODEL, prompt=batch[0])
    try:
        return measure("openai SDK completions, one by one", count, run)
    finally:
        client.close()


def pool_chat(url: str, count: int, threads: int = 8) -> Result:
    """The seed's approach: a ThreadPoolExecutor posting with one requests.Session per thread."""
    local = threading.local()
    target = f"{url}/v1/chat/completions"

    def post(messages: list[dict[str, str]]) -> str:
        session = getattr(local, "session", None) or _new_session(local)
        answer = session.post(target, json={"model": MODEL, "messages": messages}, timeout=30)
        return answer.json()["choices"][0]["message"]["content"]

    batch = chats(count)
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(post, batch[:threads * 4]))
        return measure(f"requests thread pool ({threads}) chat", count, lambda: list(pool.map(post, batch)))


def _new_session(local: threading.local) -> requests.Session:
    local.session = requests.Session()
    return local.session


# -- parts ---------------------------------------------------------------------------------

def stub_part(scale: float) -> dict[str, Result]:
    """All clients against the instant stub."""
    n = lambda base: max(1, int(base * scale))  # noqa: E731
    with stub_process() as url:
        results = {
            "berth_chat": berth_chat(url, n(20000)),
            "sdk_chat": sdk_chat(url, n(2000)),
            "pool_chat": pool_chat(url, n(5000)),
            "berth_generate": berth_generate(url, n(300000)),
            "sdk_generate": sdk_generate(url, n(2000)),
        }
    print("\n== against an instant stub (client overhead) ==")
    print(f"{'client':<34} {'items':>8} {'wall':>10} {'rate':>13} {'cpu/item':>12}")
    for result in results.values():
        print(result.row())
    return results


def vllm_part(batch: int, max_tokens: int) -> None:
    """One vs two tiny vLLM servers, started by VLLMService (needs vLLM and the tiny model)."""
    from bench._vllm_scaling import run_scaling  # local helper, imported only when asked

    run_scaling(batch, max_tokens)


def ratios(results: dict[str, Result]) -> None:
    chat_sdk = results["berth_chat"].rate / results["sdk_chat"].rate
    chat_pool = results["berth_chat"].rate / results["pool_chat"].rate
    gen_sdk = results["berth_generate"].rate / results["sdk_generate"].rate
    print()
    print(f"chat vs openai SDK: {chat_sdk:.1f}x")
    print(f"chat vs thread pool: {chat_pool:.1f}x")
    print(f"generate vs openai SDK: {gen_sdk:.0f}x")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stub-only", action="store_true", help="run the stub part alone")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the stub batch sizes")
    parser.add_argument("--batch", type=int, default=64, help="vLLM part: requests per batch")
    parser.add_argument("--max-tokens", type=int, default=32, help="vLLM part: tokens per answer")
    args = parser.parse_args(argv)
    results = stub_part(args.scale)
    if not args.stub_only:
        vllm_part(args.batch, args.max_tokens)
    ratios(results)


if __name__ == "__main__":
    main()
