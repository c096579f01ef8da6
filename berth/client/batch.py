"""Batched ``chat`` and ``generate`` over OpenAI-compatible or batched endpoints, sync and async.

:class:`BatchSender` holds the request logic shared by :class:`~berth.client.VLLMClient` (one
endpoint) and :class:`~berth.client.VLLMService` (several). All HTTP work runs on the shared
background loop (:mod:`berth.client._loop`); the synchronous methods block on it and the
``a``-prefixed ones await it from any event loop.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from typing import Any

from berth.client._loop import BackgroundLoop, acquire_loop
from berth.client._progress import progress_bar
from berth.client.dispatch import run_batch
from berth.client.errors import ClientError, ServerUnavailable
from berth.client.outputs import ResponseOutput, chat_output, completion_output
from berth.client.batched_wire import ITEMS, WireError, parse_answer, request_body
from berth.client.sampling import batched_params, request_fields
from berth.client.transport import Endpoint, Transport

__all__ = ["BatchSender", "Conversation", "Results"]

Conversation = list[dict[str, Any]]
Results = list[list[str]] | list[list[ResponseOutput]]
Choices = list[dict[str, Any]]


class BatchSender:
    """Sends batches to the endpoints that :meth:`_batch_endpoints` returns.

    Subclasses set ``_transport`` and ``max_prompts_per_request`` and implement
    :meth:`_batch_endpoints`.
    """

    _transport: Transport
    max_prompts_per_request: int = 256
    #: Ask vLLM for token ids (``return_token_ids``) when ``return_extra=True``.
    request_token_ids: bool = True
    _background_loop: BackgroundLoop | None = None

    def _batch_endpoints(self) -> list[Endpoint]:
        raise NotImplementedError

    def _loop(self) -> BackgroundLoop:
        if self._background_loop is None:
            self._background_loop = acquire_loop()
        return self._background_loop

    def _release_loop(self) -> None:
        loop, self._background_loop = self._background_loop, None
        if loop is None:
            return
        try:
            loop.run(self._transport.close())
        finally:
            loop.release()

    # -- public API -----------------------------------------------------------------------

    def chat(
        self,
        conversations: Sequence[Conversation],
        sampling_params: Any = None,
        return_extra: bool = False,
        *,
        progress: bool = False,
        extra_body: dict[str, Any] | None = None,
    ) -> Results:
        """One ``/v1/chat/completions`` request per conversation; a list of choices per input.

        Each inner list holds ``n`` texts, or :class:`ResponseOutput` objects when
        ``return_extra`` is true. ``extra_body`` adds request fields as they are
        (``chat_template_kwargs``, ``response_format`` ...).
        """
        call = self._chat(conversations, sampling_params, return_extra, progress, extra_body)
        return self._loop().run(call)

    async def achat(
        self,
        conversations: Sequence[Conversation],
        sampling_params: Any = None,
        return_extra: bool = False,
        *,
        progress: bool = False,
        extra_body: dict[str, Any] | None = None,
    ) -> Results:
        """Async :meth:`chat`, awaitable from any event loop."""
        call = self._chat(conversations, sampling_params, return_extra, progress, extra_body)
        return await self._loop().run_async(call)

    def generate(
        self,
        prompts: Sequence[str],
        sampling_params: Any = None,
        return_extra: bool = False,
        *,
        progress: bool = False,
        extra_body: dict[str, Any] | None = None,
    ) -> Results:
        """Completions for ``prompts``, many per ``/v1/completions`` request (its list form).

        Returns a list of ``n`` choices per prompt, in input order; see :meth:`chat`.
        """
        call = self._generate(prompts, sampling_params, return_extra, progress, extra_body)
        return self._loop().run(call)

    async def agenerate(
        self,
        prompts: Sequence[str],
        sampling_params: Any = None,
        return_extra: bool = False,
        *,
        progress: bool = False,
        extra_body: dict[str, Any] | None = None,
    ) -> Results:
        """Async :meth:`generate`, awaitable from any event loop."""
        call = self._generate(prompts, sampling_params, return_extra, progress, extra_body)
        return await self._loop().run_async(call)

    # -- on the background loop -----------------------------------------------------------

    async def _chat(self, conversations: Sequence[Conversation], params: Any, extra: bool,
                    progress: bool, extra_body: dict[str, Any] | None) -> Results:
        _check_conversations(conversations)
        return await self._send("chat", _as_sequence(conversations), params, extra, progress, extra_body)

    async def _generate(self, prompts: Sequence[str], params: Any, extra: bool,
                        progress: bool, extra_body: dict[str, Any] | None) -> Results:
        _check_prompts(prompts)
        return await self._send("generate", _as_sequence(prompts), params, extra, progress, extra_body)

    async def _send(self, kind: str, items: Sequence[Any], params: Any, extra: bool,
                    progress: bool, extra_body: dict[str, Any] | None) -> Results:
        """``items`` to the ready endpoints: batched servers take them as they are, OpenAI
        servers as chat or completions requests."""
        if not items:
            return []
        endpoints = await self._ready_endpoints()
        if _batched(endpoints, extra_body):
            return await self._send_batched(kind, items, params, extra, progress, endpoints)
        fields = self._fields(params, kind == "chat", extra, extra_body)
        send_openai = self._send_chats if kind == "chat" else self._send_completions
        return await send_openai(items, fields, extra, progress, endpoints)

    async def _send_chats(self, conversations: Sequence[Conversation], fields: dict[str, Any],
                          extra: bool, progress: bool, endpoints: list[Endpoint]) -> Results:
        """One ``/v1/chat/completions`` request per conversation."""
        n = int(fields.get("n") or 1)
        parse = _chat_outputs if extra else _chat_texts
        post = self._transport.post
        with progress_bar(len(conversations), "chat", progress) as advance:

            async def send(endpoint: Endpoint, index: int) -> list[Any]:
                payload = {"model": endpoint.model, "messages": conversations[index], **fields}
                answer = parse((await post(endpoint.chat_url, payload))["choices"], n)
                advance(1)
                return answer

            return await run_batch(endpoints, len(conversations), send, weight=n)

    async def _send_completions(self, prompts: Sequence[str], fields: dict[str, Any],
                                extra: bool, progress: bool, endpoints: list[Endpoint]) -> Results:
        """The prompts in chunks, one ``/v1/completions`` request (its list form) each."""
        n = int(fields.get("n") or 1)
        size = self._chunk_size(len(prompts), len(endpoints))
        split = _completion_splitter(n, extra)
        post = self._transport.post
        with progress_bar(len(prompts), "generate", progress) as advance:

            async def send(endpoint: Endpoint, index: int) -> list[Any]:
                part = list(_chunk(prompts, index, size))
                payload = {"model": endpoint.model, "prompt": part, **fields}
                answer = split((await post(endpoint.completions_url, payload))["choices"], len(part))
                advance(len(part))
                return answer

            parts = await run_batch(endpoints, math.ceil(len(prompts) / size), send, weight=size * n)
        return [item for part in parts for item in part]

    async def _send_batched(self, endpoint_kind: str, items: Sequence[Any], params: Any,
                            extra: bool, progress: bool, endpoints: list[Endpoint]) -> Results:
        """The batch split evenly over batched servers: one request (one engine call) each."""
        key = ITEMS[endpoint_kind]
        wire_params = batched_params(params)
        size = math.ceil(len(items) / len(endpoints))
        post = self._transport.post_bytes
        with progress_bar(len(items), endpoint_kind, progress) as advance:

            async def send(endpoint: Endpoint, index: int) -> list[Any]:
                part = _chunk(items, index, size)
                url = endpoint.generate_url if key == "prompts" else endpoint.batched_chat_url
                raw = await post(url, request_body(part, key, wire_params))
                try:
                    answer = parse_answer(raw, len(part), extra)
                except WireError as exc:
                    raise ClientError(f"{url}: {exc}") from None
                advance(len(part))
                return answer

            parts = await run_batch(endpoints, math.ceil(len(items) / size), send, weight=size)
        return [row for part in parts for row in part]

    def _fields(self, params: Any, chat: bool, extra: bool,
                extra_body: dict[str, Any] | None) -> dict[str, Any]:
        fields = request_fields(params, chat=chat)
        if extra and self.request_token_ids:
            fields["return_token_ids"] = True
        fields.update(extra_body or {})
        return fields

    def _chunk_size(self, count: int, endpoints: int) -> int:
        """Prompts per request: at most ``max_prompts_per_request``, at least 2 requests per
        endpoint when the batch allows it, so that every server gets a share."""
        return max(1, min(self.max_prompts_per_request, math.ceil(count / (2 * endpoints))))

    async def _ready_endpoints(self) -> list[Endpoint]:
        """Endpoints of this batch with their model names known; unreachable ones left out."""
        endpoints = self._batch_endpoints()
        for endpoint in endpoints:
            endpoint.down = False
        outcomes = await asyncio.gather(
            *(e.resolve_model(self._transport) for e in endpoints), return_exceptions=True
        )
        ready = [e for e, outcome in zip(endpoints, outcomes) if isinstance(outcome, str)]
        if ready:
            return ready
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        raise failures[0] if failures else ServerUnavailable("no running server to send to")


def _batched(endpoints: list[Endpoint], extra_body: dict[str, Any] | None) -> bool:
    """True when the batch goes to batched servers (all of them are; they cannot be mixed)."""
    kinds = {endpoint.kind for endpoint in endpoints}
    if len(kinds) > 1:
        raise ClientError("cannot send one batch to both OpenAI and batched servers; use one "
                          "server kind per service")
    if kinds != {"batched"}:
        return False
    if extra_body:
        raise ClientError("extra_body holds OpenAI request fields, which a batched server does "
                          "not take; use ServeConfig(server='openai') for them")
    return True


def _as_sequence(items: Any) -> Sequence[Any]:
    """Lists and tuples as they are; any other iterable (a generator...) as a list."""
    return items if isinstance(items, (list, tuple)) else list(items)


def _chunk(items: Sequence[Any], index: int, size: int) -> Sequence[Any]:
    """The ``index``-th run of ``size`` items (the last one may be shorter)."""
    return items[index * size:(index + 1) * size]


def _check_conversations(conversations: Sequence[Conversation]) -> None:
    first = conversations[0] if isinstance(conversations, (list, tuple)) and conversations else None
    if isinstance(conversations, (str, dict)) or isinstance(first, dict):
        raise ClientError(
            "chat() takes a list of conversations (each a list of {'role', 'content'} "
            "messages); wrap a single conversation as [conversation]"
        )


def _check_prompts(prompts: Sequence[str]) -> None:
    if isinstance(prompts, str):
        raise ClientError("generate() takes a list of prompts; wrap one prompt as [prompt]")


def _chat_texts(choices: Choices, n: int) -> list[str]:
    if n == 1:
        return [choices[0]["message"]["content"] or ""]
    return [c["message"]["content"] or "" for c in sorted(choices, key=_index)]


def _chat_outputs(choices: Choices, n: int) -> list[ResponseOutput]:
    return [chat_output(c) for c in sorted(choices, key=_index)]


def _index(choice: dict[str, Any]) -> int:
    return int(choice["index"])


def _completion_splitter(n: int, extra: bool) -> Callable[[Choices, int], list[Any]]:
    """A function splitting one completions answer into ``n`` choices per prompt."""

    def split(choices: Choices, prompts: int) -> list[Any]:
        if len(choices) != prompts * n:
            raise ClientError(
                f"the server returned {len(choices)} choices for {prompts} prompts x n={n}; "
                "is it an OpenAI-compatible completions endpoint?"
            )
        if n == 1 and not extra and choices[-1]["index"] == prompts - 1:
            return [[c["text"]] for c in choices]
        out: list[list[Any]] = [[] for _ in range(prompts)]
        for choice in sorted(choices, key=_index):
            out[choice["index"] // n].append(completion_output(choice) if extra else choice["text"])
        return out

    return split
