"""Model swapping on one CPU worker: time from a request to its first token, by path, against a
cold ``vllm serve`` measured in the same run.

    .venv/bin/python bench/swap.py --models 2 --rounds 3 [--model PATH] [--json]

First a plain ``vllm serve`` is timed from spawn to the first streamed token (the baseline) and
stopped. Then ``berth serve`` runs with the launcher deployer and ``swap_max_engines=1``, and
``--models`` names are registered for the same weights (parked). Requests alternate between them,
two in a row per model (``a a b b a a ...``): the first of a pair finds its model parked (the
other one holds the only engine) and is answered after a fork of the preloaded vLLM; the second
finds it running. The very first request also waits for the launcher's daemon to import vLLM.

Each request goes through the worker's ``/v1/chat/completions`` when the worker serves ``/v1``;
otherwise through ``POST /v2/models/{name}/wake`` followed by the request on the engine's own
port (the same activation, one more hop). Prints, per path, the median time to first token and
its ratio to the cold start, and fails (exit 1) if any request was lost or answered by another
model. Loopback only; the tiny local model unless ``--model`` names another; every process
started here is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from berth.testing import CPU_ENV, free_port, serve_argv, tiny_model_path
from berth.testing.serve_process import spawn_serve, stop_group, wait_healthy
from berth.utils.ports import free_port_range

PROMPT = [{"role": "user", "content": "hello"}]


def first_token(http: httpx.Client, url: str, model: str) -> tuple[float, str]:
    """(seconds to the first streamed content chunk, the model named in it)."""
    started = time.monotonic()
    body = {"model": model, "messages": PROMPT, "max_tokens": 4, "stream": True}
    with http.stream("POST", url, json=body) as reply:
        if reply.status_code != 200:
            raise RuntimeError(f"{model}: {reply.status_code} {reply.read()[:300]!r}")
        for line in reply.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                return time.monotonic() - started, json.loads(line[6:]).get("model", "")
    raise RuntimeError(f"{model}: the stream ended without a token")


def cold_vllm(model: str, workdir: Path, timeout: float) -> float:
    """Seconds from spawning ``vllm serve`` to its first streamed token."""
    port = free_port()
    argv = [str(Path(sys.executable).with_name("vllm")), "serve", *serve_argv(model, port),
            "--served-model-name", "cold"]
    with open(workdir / "cold.log", "wb") as log:
        started = time.monotonic()
        proc = subprocess.Popen(argv, env={**os.environ, **CPU_ENV}, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        with httpx.Client(trust_env=False, timeout=120) as http:
            while time.monotonic() - started < timeout:
                if proc.poll() is not None:
                    raise RuntimeError(f"vllm serve exited with {proc.returncode}; see {workdir / 'cold.log'}")
                try:
                    if http.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                        first_token(http, f"http://127.0.0.1:{port}/v1/chat/completions", "cold")
                        return time.monotonic() - started
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        raise RuntimeError(f"vllm serve was not ready in {timeout:.0f} s")
    finally:
        stop_group(proc, timeout=60)


class Worker:
    """``berth serve`` with the launcher deployer and a budget of one engine."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
        env.update({"BERTH_DATA_DIR": str(workdir / "data"), "BERTH_DEPLOYER": "launcher",
                    "BERTH_SWAP_MAX_ENGINES": "1", "BERTH_STOP_INSTANCES_ON_EXIT": "true",
                    "BERTH_POLL_INTERVAL": "0.25", "BERTH_INSTANCE_PORT_RANGE": free_port_range(100)})
        self.proc = spawn_serve(["--port", str(self.port)], env, workdir / "worker.log")
        self.http = httpx.Client(base_url=self.url, trust_env=False, timeout=900)
        wait_healthy(self.proc, self.http, workdir / "worker.log", timeout=120, poll=0.2)
        paths = self.http.get("/openapi.json").json().get("paths", {})
        self.routes_v1 = any(path.startswith("/v1/") for path in paths)

    def register(self, name: str, model: str) -> None:
        body = {"name": name, "launcher": {"options": f"--model {model} --enforce-eager", "env_vars": CPU_ENV}}
        reply = self.http.post("/v2/models", json=body)
        if reply.status_code != 201:
            raise RuntimeError(f"registering {name}: {reply.status_code} {reply.text[:300]}")

    def request(self, name: str) -> tuple[float, str, str]:
        """(seconds to first token, path the activation took, model that answered)."""
        before = self.http.get(f"/v2/models/{name}").json()
        started = time.monotonic()
        if self.routes_v1:
            _, answered = first_token(self.http, f"{self.url}/v1/chat/completions", name)
        else:
            woken = self.http.post(f"/v2/models/{name}/wake", params={"timeout": 900})
            if woken.status_code != 200:
                raise RuntimeError(f"{name}: {woken.status_code} {woken.text[:300]}")
            _, answered = first_token(self.http, f"{woken.json()['base_url']}/v1/chat/completions", name)
        seconds = time.monotonic() - started
        path = "running" if before["state"] == "running" else self.http.get(f"/v2/models/{name}").json()["last_path"]
        return seconds, str(path), answered

    def close(self) -> None:
        self.http.close()
        stop_group(self.proc, timeout=120)


def run(model: str, count: int, rounds: int, timeout: float, workdir: Path) -> dict[str, object]:
    cold = cold_vllm(model, workdir, timeout)
    print(f"cold vllm serve, spawn to first token: {cold:.1f} s", file=sys.stderr)
    names = [f"swap-{chr(ord('a') + i)}" for i in range(count)]
    worker = Worker(workdir)
    samples: dict[str, list[float]] = {}
    wrong = lost = 0
    try:
        for name in names:
            worker.register(name, model)
        for index, name in enumerate(name for _ in range(rounds) for name in names for _ in range(2)):
            try:
                seconds, path, answered = worker.request(name)
            except (RuntimeError, httpx.HTTPError) as exc:
                lost += 1
                print(f"request {index} for {name}: LOST ({exc})", file=sys.stderr)
                continue
            wrong += answered != name
            key = "first (daemon start + fork)" if not samples else path
            samples.setdefault(key, []).append(seconds)
            print(f"request {index} for {name}: {path}, first token after {seconds:.2f} s", file=sys.stderr)
    finally:
        worker.close()
    paths = {key: {"median_s": round(statistics.median(v), 2), "n": len(v), "ratio_to_cold": round(statistics.median(v) / cold, 3)}
             for key, v in samples.items()}
    return {"cold_vllm_serve_s": round(cold, 1), "through": "/v1" if worker.routes_v1 else "wake + engine port",
            "paths": paths, "lost": lost, "wrong_model": wrong}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=2, choices=range(2, 6))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default=None, help="model directory (default: the tiny local model)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds a cold start may take")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    model = args.model or str(tiny_model_path())
    with tempfile.TemporaryDirectory(prefix="berth-swap-") as workdir:
        result = run(model, args.models, args.rounds, args.timeout, Path(workdir))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"cold vllm serve (spawn to first token): {result['cold_vllm_serve_s']} s; requests through "
              f"{result['through']}")
        for key, value in result["paths"].items():  # type: ignore[union-attr]
            print(f"{key}: {value['median_s']} s to first token (n={value['n']}), {value['ratio_to_cold']}x cold")
        print(f"lost: {result['lost']}, answered by the wrong model: {result['wrong_model']}")
    return 1 if result["lost"] or result["wrong_model"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
