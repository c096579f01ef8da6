"""The wire format of gserve's batched server, for both ends (no vLLM import here).

A request is ``{"prompts"|"conversations": [...], "params": {...}}`` (the form gserve's README
documents) or the same two values as an array, ``[items, params]`` (what gserve's own client
sends: its msgspec structs are ``array_like``); ``params`` holds ``vllm.SamplingParams`` fields
by name and may be absent or null. The answer is one list per input of one entry per choice,
``{"text": ..., "logprobs": ...}``, or ``[text, logprobs]`` when the request was an array, so
each kind of client reads the shape it sent; ``logprobs`` is left out when there are none.
``logprobs`` is vLLM's ``SampleLogprobs``: one ``{token_id: {"logprob", "rank",
"decoded_token"}}`` per generated token, the sampled token first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from berth.client.outputs import ResponseOutput, TokenLogprob

__all__ = [
    "BatchRequest",
    "WireError",
    "decode_request",
    "encode_answer",
    "parse_answer",
    "request_body",
]

#: The items key of each endpoint.
ITEMS = {"generate": "prompts", "chat": "conversations"}
_ITEM_TYPES: dict[str, Any] = {"prompts": list[str], "conversations": list[list[dict[str, Any]]]}
_DECODER = msgspec.json.Decoder()
_ENCODER = msgspec.json.Encoder()


class WireError(ValueError):
    """A request body that does not follow the wire format; the message names the field."""


@dataclass(frozen=True, slots=True)
class BatchRequest:
    """A decoded request: the items, the raw ``params`` mapping (or None) and its shape."""

    items: list[Any]
    params: dict[str, Any] | None
    array: bool


def decode_request(body: bytes, key: str) -> BatchRequest:
    """Read a request whose items are under ``key`` (``prompts`` or ``conversations``)."""
    try:
        data = _DECODER.decode(body)
    except msgspec.DecodeError as exc:
        raise WireError(f"the body is not JSON: {exc}") from None
    if isinstance(data, list):
        if not 1 <= len(data) <= 2:
            raise WireError(f"an array body is [{key}, params]; got {len(data)} elements")
        items, params, array = data[0], (data[1] if len(data) == 2 else None), True
    elif isinstance(data, dict):
        unknown = sorted(set(data) - {key, "params"})
        if unknown:
            raise WireError(f"unknown field {unknown[0]!r}; the body holds {key!r} and 'params'")
        if key not in data:
            raise WireError(f"field {key!r} is required")
        items, params, array = data[key], data.get("params"), False
    else:
        raise WireError(f"the body must be a JSON object {{{key!r}: [...], 'params': {{...}}}}")
    if params is not None and not isinstance(params, dict):
        raise WireError("params must be an object of vllm.SamplingParams fields, or null")
    try:
        checked = msgspec.convert(items, _ITEM_TYPES[key])
    except msgspec.ValidationError as exc:
        raise WireError(f"{key}: {exc}") from None
    return BatchRequest(items=checked, params=params, array=array)


def encode_answer(outputs: Sequence[Any], array: bool) -> bytes:
    """vLLM ``RequestOutput`` objects as the answer body, in the request's shape."""
    rows = []
    for request_output in outputs:
        row = []
        for choice in request_output.outputs:
            logprobs = _plain_logprobs(choice.logprobs)
            if array:
                row.append([choice.text] if logprobs is None else [choice.text, logprobs])
            else:
                row.append({"text": choice.text} if logprobs is None
                           else {"text": choice.text, "logprobs": logprobs})
        rows.append(row)
    return _ENCODER.encode(rows)


def _plain_logprobs(value: Any) -> list[dict[int, Any]] | None:
    """``SampleLogprobs`` as a list of dicts (``FlatLogprobs`` is read position by position)."""
    if value is None or isinstance(value, list):
        return value
    return [value[index] for index in range(len(value))]


def request_body(items: Sequence[Any], key: str, params: dict[str, Any] | None) -> bytes:
    """The object-form request body berth's client sends."""
    payload: dict[str, Any] = {key: list(items)}
    if params is not None:
        payload["params"] = params
    return _ENCODER.encode(payload)


def parse_answer(raw: bytes, expected: int, extra: bool) -> list[list[Any]]:
    """An answer body as ``expected`` lists of texts, or of :class:`ResponseOutput`."""
    try:
        rows = _DECODER.decode(raw)
    except msgspec.DecodeError as exc:
        raise WireError(f"the server's answer is not JSON: {exc}") from None
    if not isinstance(rows, list) or len(rows) != expected:
        count = len(rows) if isinstance(rows, list) else type(rows).__name__
        raise WireError(f"the server answered {count} results for {expected} inputs; is it a "
                        "gserve-compatible batched server?")
    if not extra:
        return [[_text(entry) for entry in row] for row in rows]
    return [[_output(entry) for entry in row] for row in rows]


def _text(entry: Any) -> str:
    return entry[0] if isinstance(entry, list) else entry["text"]


def _output(entry: Any) -> ResponseOutput:
    if isinstance(entry, list):
        text, logprobs = entry[0], (entry[1] if len(entry) > 1 else None)
    else:
        text, logprobs = entry["text"], entry.get("logprobs")
    return ResponseOutput(text=text, logprobs=None if logprobs is None else _token_logprobs(logprobs))


def _token_logprobs(positions: list[dict[str, Any]]) -> list[TokenLogprob]:
    """One :class:`TokenLogprob` per position: the sampled token (vLLM puts it first) and the
    top alternatives by decoded text."""
    out = []
    for position in positions:
        entries = list(position.values())
        first = entries[0]
        out.append(TokenLogprob(
            token=first.get("decoded_token") or "",
            logprob=float(first["logprob"]),
            top={e.get("decoded_token") or "": float(e["logprob"]) for e in entries},
        ))
    return out
