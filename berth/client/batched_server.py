"""gserve's batched server, wire-compatible, over one in-process ``vllm.LLM``.

Run it as gserve's ``vllm_server.py`` is run::

    python -m berth.client.batched_server --serve --model MODEL [--host 127.0.0.1]
        [--port 8000] [--gpus 0] [--llm_kwargs '{"dtype": "bfloat16"}'] [--lora_path DIR]

Endpoints: ``GET /health`` -> ``{"status": "ok"}`` (once the model is loaded: the port opens
after it), ``POST /generate`` and ``POST /chat`` (the whole batch in ONE ``LLM.generate`` /
``LLM.chat`` call; payloads in :mod:`berth.client.batched_wire`), ``POST /shutdown`` (answers,
then the server exits). With ``--lora_path`` every call carries the adapter's ``LoRARequest``.

Calls run on one worker thread, in arrival order (``vllm.LLM`` is not thread-safe), so
``/health`` keeps answering during a long batch. On a CPU server the engine runs in this
process (:func:`engine_in_process`; the user's own settings win). Bad input is HTTP 400 ``{"detail": ...}``
naming the field; an engine failure is 500 with the engine's message, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from berth.client.batched_wire import ITEMS, WireError, decode_request, encode_answer
from berth.client.log_utils import setup_logging

__all__ = ["BatchedEngine", "build_app", "main", "parse_args"]

logger = logging.getLogger("berth.client.batched_server")

#: The adapter name every call's LoRARequest carries (one adapter per server).
LORA_NAME = "lora_adapter"


class BatchedEngine:
    """One ``vllm.LLM`` and its optional LoRA adapter, called from a single worker thread."""

    def __init__(self, llm: Any, lora_request: Any = None) -> None:
        self.llm = llm
        self.lora_request = lora_request
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="berth-llm")

    async def run(self, endpoint: str, items: list[Any], params: Any) -> list[Any]:
        """The outputs of one batch, from one ``LLM`` call on the worker thread."""
        call = self._call(endpoint, items, params)
        return await asyncio.get_running_loop().run_in_executor(self._worker, call)

    def _call(self, endpoint: str, items: list[Any], params: Any) -> Callable[[], list[Any]]:
        if endpoint == "chat":
            return lambda: self.llm.chat(
                items, sampling_params=params, lora_request=self.lora_request,
                add_generation_prompt=True, continue_final_message=False, use_tqdm=False,
            )
        return lambda: self.llm.generate(
            items, sampling_params=params, lora_request=self.lora_request, use_tqdm=False
        )

    def close(self) -> None:
        """Finish the running call, then stop the engine's processes."""
        self._worker.shutdown(wait=True, cancel_futures=True)
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()


def refusals() -> tuple[type[Exception], ...]:
    """The errors that mean "bad input" (HTTP 400): ValueError/TypeError and, when vLLM is
    loaded, its client errors (``VLLMValidationError`` ...)."""
    errors = sys.modules.get("vllm.exceptions")
    client_error = getattr(errors, "VLLMClientError", None)
    return (ValueError, TypeError) if client_error is None else (ValueError, TypeError, client_error)


def sampling_params(fields: dict[str, Any] | None) -> Any:
    """``params`` as a ``vllm.SamplingParams`` (None stays None: the model's defaults apply)."""
    if fields is None:
        return None
    import msgspec
    from vllm import SamplingParams

    known = SamplingParams.__struct_fields__
    unknown = sorted(name for name in fields if name not in known)
    if unknown:
        close = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise WireError(f"params: {unknown[0]!r} is not a vllm.SamplingParams field{hint}")
    try:
        return msgspec.convert(fields, SamplingParams, dec_hook=_as_array)
    except msgspec.ValidationError as exc:
        raise WireError(f"params: {exc}") from None
    except refusals() as exc:  # SamplingParams.__post_init__ checks
        raise WireError(f"params: {exc}") from None


def _as_array(kind: type, value: Any) -> Any:
    """msgspec's hook for the ``numpy.ndarray`` fields (``prompt_logprob_token_ids``)."""
    import numpy

    if kind is numpy.ndarray:
        return numpy.asarray(value)
    raise NotImplementedError(f"cannot read {kind.__name__}")


def build_app(engine: BatchedEngine, on_shutdown: Callable[[], None]) -> Any:
    """The ASGI app of the four endpoints over ``engine`` (plain Starlette routes: no
    per-request validation layer between the body and msgspec)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    def error(status: int, detail: str) -> Response:
        return JSONResponse({"detail": detail}, status_code=status)

    async def batch(endpoint: str, request: Request) -> Response:
        try:
            decoded = decode_request(await request.body(), ITEMS[endpoint])
            params = sampling_params(decoded.params)
        except WireError as exc:
            return error(400, f"invalid request: {exc}")
        if not decoded.items:
            return Response(content=b"[]", media_type="application/json")
        try:
            outputs = await engine.run(endpoint, decoded.items, params)
            content = encode_answer(outputs, decoded.array)
        except refusals() as exc:  # vLLM's input checks: prompt too long ...
            return error(400, f"vLLM refused the batch: {exc}")
        except Exception as exc:  # an engine failure: its message, no traceback
            logger.exception("%s batch failed", endpoint)
            return error(500, f"error during vLLM inference: {exc!r}")
        return Response(content=content, media_type="application/json")

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def generate(request: Request) -> Response:
        return await batch("generate", request)

    async def chat(request: Request) -> Response:
        return await batch("chat", request)

    async def shutdown(request: Request) -> Response:
        asyncio.get_running_loop().call_later(0.05, on_shutdown)
        return PlainTextResponse("shutting down")

    return Starlette(routes=[
        Route("/health", health, methods=["GET"]),
        Route("/generate", generate, methods=["POST"]),
        Route("/chat", chat, methods=["POST"]),
        Route("/shutdown", shutdown, methods=["POST"]),
    ])


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """gserve's options: ``--serve --model --host --port --gpus --llm_kwargs --lora_path``."""
    parser = argparse.ArgumentParser(
        prog="python -m berth.client.batched_server",
        description="gserve-compatible batched chat/generate server over vllm.LLM",
    )
    parser.add_argument("--serve", action="store_true", help="Run the server (else do nothing).")
    parser.add_argument("--model", default=None, help="Hub id or local path of the model.")
    parser.add_argument("--host", default="127.0.0.1", help="Address to bind.")
    parser.add_argument("--port", type=int, default=8000, help="Port to bind.")
    parser.add_argument("--gpus", default="0",
                        help="CUDA_VISIBLE_DEVICES for this process, e.g. '0' or '0,1' ('' for none).")
    parser.add_argument("--llm_kwargs", default=None,
                        help="JSON object of keyword arguments for vllm.LLM, e.g. '{\"dtype\": \"half\"}'.")
    parser.add_argument("--lora_path", default=None, help="LoRA adapter applied to every request.")
    return parser.parse_args(argv)


def llm_kwargs(text: str | None, lora_path: str | None) -> dict[str, Any]:
    """``--llm_kwargs`` as a dict (``enable_lora`` defaulting to true with a LoRA adapter)."""
    try:
        kwargs = json.loads(text) if text else {}
    except json.JSONDecodeError as exc:
        raise SystemExit(f"--llm_kwargs is not valid JSON: {exc}") from None
    if not isinstance(kwargs, dict):
        raise SystemExit("--llm_kwargs must be a JSON object, e.g. '{\"max_model_len\": 4096}'")
    if lora_path is not None:
        kwargs.setdefault("enable_lora", True)
    return kwargs


def engine_in_process(kwargs: dict[str, Any], env: dict[str, str] | os._Environ[str]) -> None:
    """On a CPU server, run the engine in this process (one process, no IPC per step): the
    engine core (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) and, for one worker, its executor
    (``distributed_executor_backend="uni"``). Measured in bench/batch_paths.py against the
    multi-process engine gserve runs: 0.34-0.64x its generate batch time and less than half its
    time to ready on two cores. What the user set wins: these are defaults only."""
    env.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    parallel = [kwargs.get(name) or 1 for name in
                ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size")]
    if parallel == [1, 1, 1]:
        kwargs.setdefault("distributed_executor_backend", "uni")


def serve(args: argparse.Namespace) -> None:
    """Load the model, then serve until SIGINT/SIGTERM or ``POST /shutdown``."""
    import uvicorn

    os.environ["CUDA_VISIBLE_DEVICES"] = args.gpus
    kwargs = llm_kwargs(args.llm_kwargs, args.lora_path)
    from vllm import LLM
    from vllm.platforms import current_platform

    if current_platform.is_cpu():
        engine_in_process(kwargs, os.environ)

    lora = None
    if args.lora_path is not None:
        from vllm.lora.request import LoRARequest

        lora = LoRARequest(LORA_NAME, 1, lora_path=args.lora_path)
    engine = BatchedEngine(LLM(model=args.model, **kwargs), lora)
    servers: list[uvicorn.Server] = []

    def stop() -> None:
        servers[0].should_exit = True

    config = uvicorn.Config(build_app(engine, stop), host=args.host, port=args.port,
                            log_level="warning")
    server = uvicorn.Server(config)
    servers.append(server)
    try:
        server.run()
    finally:
        engine.close()
        logger.info("batched server on %s:%d stopped", args.host, args.port)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.serve:
        return 0  # as gserve's script: without --serve there is nothing to do
    if not args.model:
        print("error: --model is required with --serve", file=sys.stderr)
        return 1
    setup_logging()
    serve(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
