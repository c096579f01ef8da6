"""Sampling parameters -> fields of an OpenAI-compatible vLLM request.

Parameters come as a ``vllm.SamplingParams`` (when vLLM is installed) or as a plain dict keyed
by ``SamplingParams`` names. From a ``SamplingParams`` every field that differs from its default
is sent, plus ``max_tokens`` (so that its default of 16 means what it means offline); from a
dict, exactly the keys given. A field the HTTP API cannot carry is a :class:`SamplingParamsError`
naming it.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from collections.abc import Callable, Mapping
from typing import Any

from berth.client.errors import SamplingParamsError

__all__ = ["SAMPLING_FIELDS", "batched_params", "request_fields"]

Fields = dict[str, Any]

#: SamplingParams names sent under the same name in chat and completion requests.
_SAME_NAME = (
    "n", "best_of", "temperature", "top_p", "top_k", "min_p", "seed",
    "presence_penalty", "frequency_penalty", "repetition_penalty",
    "max_tokens", "min_tokens", "stop_token_ids", "ignore_eos", "bad_words",
    "skip_special_tokens", "spaces_between_special_tokens", "include_stop_str_in_output",
    "truncate_prompt_tokens", "prompt_logprobs", "allowed_token_ids",
    # newer vLLM request fields (a server that does not know one ignores it with a warning)
    "watermarking", "logprob_token_ids", "thinking_token_budget", "repetition_detection",
    "routed_experts_prompt_start",
)
#: Engine-side fields with no meaning for a request over HTTP: never sent, never an error.
_ENGINE_ONLY = frozenset(
    {"output_kind", "output_text_buffer_length", "skip_clone", "flat_logprobs", "stream_interval"}
)
#: Old (``guided_decoding``) structured-output fields -> the request field each maps onto.
_GUIDED = {
    "json": "guided_json", "regex": "guided_regex", "choice": "guided_choice",
    "grammar": "guided_grammar", "backend": "guided_decoding_backend",
    "whitespace_pattern": "guided_whitespace_pattern",
}
#: Fields a ``SamplingParams`` always sends, default or not.
_ALWAYS = frozenset({"max_tokens"})
#: ``SamplingParams`` fields the OpenAI-compatible API has no request field for: a batched
#: server (which receives the whole ``SamplingParams``) takes them.
_ENGINE_LEVEL = frozenset(
    {"detokenize", "prompt_logprob_token_ids", "prompt_logprob_start", "trace_decode_token_ids"}
)


def _same(name: str) -> Callable[[Any, bool], Fields]:
    return lambda value, chat: {name: _plain(value)}


def _plain(value: Any) -> Any:
    """Options objects (dataclasses, structs) as dicts of their set fields; others as they are."""
    if dataclasses.is_dataclass(value) or hasattr(type(value), "__struct_fields__"):
        return _public_fields(value)
    return value


def _stop(value: Any, chat: bool) -> Fields:
    return {"stop": [value] if isinstance(value, str) else list(value)}


def _logprobs(value: Any, chat: bool) -> Fields:
    if value is None:
        return {}
    return {"logprobs": True, "top_logprobs": int(value)} if chat else {"logprobs": int(value)}


def _logit_bias(value: Any, chat: bool) -> Fields:
    return {"logit_bias": {str(token): float(bias) for token, bias in dict(value).items()}}


def _extra_args(value: Any, chat: bool) -> Fields:
    return {"vllm_xargs": dict(value)}


def _structured_outputs(value: Any, chat: bool) -> Fields:
    return {"structured_outputs": _public_fields(value)}


def _guided_decoding(value: Any, chat: bool) -> Fields:
    fields = _public_fields(value)
    unknown = sorted(set(fields) - set(_GUIDED))
    if unknown:
        raise SamplingParamsError(
            f"sampling parameter 'guided_decoding.{unknown[0]}' has no request field in the "
            f"OpenAI-compatible API; use one of: {', '.join(sorted(_GUIDED))}"
        )
    return {_GUIDED[key]: item for key, item in fields.items()}


def _public_fields(value: Any) -> Fields:
    if isinstance(value, Mapping):
        items = dict(value)
    elif dataclasses.is_dataclass(value):
        items = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    elif hasattr(type(value), "__struct_fields__"):
        items = {name: getattr(value, name) for name in type(value).__struct_fields__}
    else:
        items = dict(vars(value))
    return {k: v for k, v in items.items() if v is not None and not k.startswith("_")}


#: Every parameter name accepted, with how it becomes request fields.
SAMPLING_FIELDS: dict[str, Callable[[Any, bool], Fields]] = {
    **{name: _same(name) for name in _SAME_NAME},
    "stop": _stop,
    "logprobs": _logprobs,
    "logit_bias": _logit_bias,
    "extra_args": _extra_args,
    "structured_outputs": _structured_outputs,
    "guided_decoding": _guided_decoding,
}


def request_fields(params: Any, *, chat: bool) -> Fields:
    """The request fields for ``params`` (``None``, a dict or a ``vllm.SamplingParams``).

    ``chat`` selects the chat form of ``logprobs`` (``logprobs: true, top_logprobs: k``)
    over the completions form (``logprobs: k``).
    """
    if params is None:
        return {}
    given = dict(params) if isinstance(params, Mapping) else _non_default(params)
    fields: Fields = {}
    for name, value in given.items():
        if name in _ENGINE_ONLY or (name == "skip_reading_prefix_cache" and value == _derived_skip(given)):
            continue
        fields.update(_converter(name)(value, chat))
    return fields


def _derived_skip(given: Fields) -> bool:
    """``skip_reading_prefix_cache`` as ``SamplingParams`` derives it: true when prompt
    logprobs are asked for (the server derives it the same way from the request)."""
    return given.get("prompt_logprobs") is not None or given.get("prompt_logprob_token_ids") is not None


def batched_params(params: Any) -> Fields | None:
    """``params`` as a batched server's ``params`` object: a dict as it is, a
    ``vllm.SamplingParams`` as msgspec encodes it (its non-default fields, as gserve sends it)."""
    if params is None:
        return None
    if isinstance(params, Mapping):
        return dict(params)
    if not hasattr(type(params), "__struct_fields__"):
        raise SamplingParamsError(
            f"sampling_params of type {type(params).__name__} is not understood; pass a dict or "
            "a vllm.SamplingParams"
        )
    import msgspec

    return msgspec.to_builtins(params, enc_hook=_array_as_list)


def _array_as_list(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays (prompt_logprob_token_ids)
        return value.tolist()
    raise NotImplementedError(f"cannot encode {type(value).__name__}")


def _converter(name: str) -> Callable[[Any, bool], Fields]:
    convert = SAMPLING_FIELDS.get(name)
    if convert is not None:
        return convert
    if name in _ENGINE_LEVEL or name == "skip_reading_prefix_cache":
        raise SamplingParamsError(
            f"sampling parameter {name!r} has no field in vLLM's OpenAI-compatible API; leave it "
            "at its default, or use a batched server (ServeConfig(server='batched')), which "
            "takes every SamplingParams field"
        )
    close = difflib.get_close_matches(name, SAMPLING_FIELDS, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise SamplingParamsError(
        f"sampling parameter {name!r} cannot be sent to a vLLM server over its "
        f"OpenAI-compatible API; {hint}leave it at its default or use one of: "
        f"{', '.join(sorted(SAMPLING_FIELDS))}"
    )


def _non_default(params: Any) -> Fields:
    """Fields of a SamplingParams-like object that differ from a fresh instance's."""
    names = _field_names(type(params))
    defaults = _defaults(type(params))
    given: Fields = {}
    for name in names:
        value = getattr(params, name)
        if name in _ALWAYS and value is not None:
            given[name] = value
        elif name not in defaults or _differs(value, defaults[name]):
            given[name] = value
    return given


def _differs(value: Any, default: Any) -> bool:
    """``value != default``, for values whose comparison is not a bool (arrays) too."""
    try:
        return bool(value != default)
    except (TypeError, ValueError):
        return True


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    names = getattr(cls, "__struct_fields__", None)
    if names is None and dataclasses.is_dataclass(cls):
        names = tuple(f.name for f in dataclasses.fields(cls))
    if names is None:
        raise SamplingParamsError(
            f"sampling_params of type {cls.__name__} is not understood; pass a dict or a "
            "vllm.SamplingParams"
        )
    return tuple(n for n in names if not n.startswith("_"))


@functools.cache
def _defaults(cls: type) -> Fields:
    try:
        fresh = cls()
    except Exception:  # a class that needs arguments: treat every field as given
        return {}
    return {name: getattr(fresh, name) for name in _field_names(cls)}
