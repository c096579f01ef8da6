"""One batch through each of berth's server paths: time to ready, batch times, tokens/s.

Paths (``--paths``, all by default):

* ``batched``: berth's batched server (gserve's wire format over ``vllm.LLM``: the whole batch
  in one engine call), one process (``ServeConfig(server="batched")``, the client's default);
* ``openai-launcher``: ``vllm serve`` forked by berth's launcher, which preloaded vLLM; the
  client sends many prompts per ``/v1/completions`` request and one request per conversation;
* ``openai-process``: ``vllm serve`` as a plain process, same client;
* ``gserve``: gserve's own code, unchanged, when ``--gserve DIR`` names a checkout of it (its
  ``VLLMService`` is imported from there): the reference berth is held to.

Every path serves the same model (default: the demo's SmolLM2-135M-Instruct, built by
``scripts/setup_demo.sh`` + ``berth demo``) with the same engine options, on one CPU server
each, and gets the same batch (``--prompts`` x ``--max-tokens``, greedy, ``ignore_eos`` so every
answer is exactly ``--max-tokens`` long). Each path is started ``--starts`` times; each start
runs the generate batch and the chat batch ``--runs`` times. Reported: medians of time to ready
(constructor to ``start()`` returning), generate and chat batch times, output tokens/s, and
each figure's ratio to the best path (1.00 = fastest). The machine is shared: repeat, read
medians, and compare paths measured in the same run.

    .venv/bin/python bench/batch_paths.py --starts 2 --runs 3
    .venv/bin/python bench/batch_paths.py --paths batched,gserve --gserve /path/to/gserve
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from berth.client import LLMConfig, ServeConfig, VLLMService
from berth.demo.model import default_cache_dir, demo_model_dir

PATHS = ("batched", "openai-launcher", "openai-process", "gserve")
#: Engine settings every path shares: a small KV cache (the machine is shared) and no
#: compilation (minutes on two CPU cores, the same for every path).
CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}
FIGURES = ("ready", "generate", "chat")


@dataclass
class Figures:
    """Every measurement of one path, in seconds."""

    ready: list[float] = field(default_factory=list)
    generate: list[float] = field(default_factory=list)
    chat: list[float] = field(default_factory=list)

    def median(self, name: str) -> float:
        values = getattr(self, name)
        return statistics.median(values) if values else float("nan")


def batch(count: int) -> tuple[list[str], list[list[dict[str, str]]]]:
    prompts = [f"Write a short story about a lighthouse keeper named number {i}:" for i in range(count)]
    chats = [[{"role": "user", "content": f"Give me three facts about the number {i}."}]
             for i in range(count)]
    return prompts, chats


def sampling(max_tokens: int) -> Any:
    from vllm import SamplingParams

    return SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)


def berth_service(path: str, model: str, engine: dict[str, Any]) -> Any:
    kind, _, deployer = path.partition("-")
    llm = LLMConfig(model, **engine)
    serve = ServeConfig(num_servers=1, env=CPU_ENV, startup_timeout=None, client_timeout=None,
                        server="batched" if kind == "batched" else "openai",
                        deployer=deployer or "auto")
    return VLLMService(llm, serve)


def gserve_service(root: str, model: str, engine: dict[str, Any]) -> Any:
    """gserve's own VLLMService over its own server, imported from a checkout, unchanged."""
    sys.path.insert(0, root)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    os.environ.update(CPU_ENV)
    gserve = importlib.import_module("gserve")
    llm = gserve.LLMConfig(model_name=model, **engine)
    return gserve.VLLMService(llm, gserve.ServeConfig(gpu_ids=[0], startup_timeout=None,
                                                      client_timeout=None))


def measure(make: Callable[[], Any], prompts: list[str], chats: list[list[dict[str, str]]],
            params: Any, runs: int, into: Figures) -> None:
    service = make()
    try:
        began = time.perf_counter()
        service.start()
        into.ready.append(time.perf_counter() - began)
        for _ in range(runs):
            into.generate.append(timed(lambda: service.generate(prompts, params), len(prompts)))
            into.chat.append(timed(lambda: service.chat(chats, params), len(chats)))
    finally:
        service.shutdown()


def timed(call: Callable[[], list[Any]], expected: int) -> float:
    began = time.perf_counter()
    answers = call()
    elapsed = time.perf_counter() - began
    if len(answers) != expected:
        raise RuntimeError(f"got {len(answers)} answers for {expected} inputs")
    return elapsed


def report(results: dict[str, Figures], tokens: int) -> None:
    best = {name: min(r.median(name) for r in results.values()) for name in FIGURES}
    print(f"\n{'path':<16} {'ready s':>8} {'gen s':>7} {'gen tok/s':>9} {'chat s':>7} "
          f"{'chat tok/s':>10}   ratio to best: ready / gen / chat")
    for path, figures in results.items():
        ready, gen, chat = (figures.median(name) for name in FIGURES)
        ratios = " / ".join(f"{figures.median(n) / best[n]:.2f}" for n in FIGURES)
        print(f"{path:<16} {ready:8.1f} {gen:7.2f} {tokens / gen:9.0f} {chat:7.2f} "
              f"{tokens / chat:10.0f}   {ratios}")
    for name in FIGURES:
        fastest = min(results, key=lambda p: results[p].median(name))
        print(f"fastest {name}: {fastest}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--paths", default=",".join(PATHS[:3]),
                        help=f"comma-separated, of: {', '.join(PATHS)}")
    parser.add_argument("--model", default=str(demo_model_dir(default_cache_dir())))
    parser.add_argument("--gserve", default=None, help="a gserve checkout, for the gserve path")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--starts", type=int, default=2, help="starts per path")
    parser.add_argument("--runs", type=int, default=3, help="batches per start")
    parser.add_argument("--max-model-len", type=int, default=2048)
    args = parser.parse_args(argv)
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    unknown = sorted(set(paths) - set(PATHS))
    if unknown:
        parser.error(f"unknown path {unknown[0]!r}; use {', '.join(PATHS)}")
    if "gserve" in paths and not args.gserve:
        parser.error("the gserve path needs --gserve DIR (a checkout of gserve)")
    if not Path(args.model).is_dir():
        parser.error(f"{args.model} is not a model directory; build the demo model first "
                     "(bash scripts/setup_demo.sh .venv, then berth demo)")
    engine = {"dtype": "bfloat16", "enforce_eager": True, "max_model_len": args.max_model_len}
    prompts, chats = batch(args.prompts)
    params = sampling(args.max_tokens)
    results = {path: Figures() for path in paths}
    for start in range(args.starts):
        for path in paths:  # interleaved, so that load changes hit every path alike
            make = ((lambda: gserve_service(args.gserve, args.model, engine)) if path == "gserve"
                    else (lambda p=path: berth_service(p, args.model, engine)))
            measure(make, prompts, chats, params, args.runs, results[path])
            figures = results[path]
            print(f"start {start + 1} {path}: ready {figures.ready[-1]:.1f} s, generate "
                  f"{figures.generate[-args.runs:]}, chat {figures.chat[-args.runs:]}", flush=True)
    report(results, args.prompts * args.max_tokens)
    return 0


if __name__ == "__main__":
    sys.exit(main())
