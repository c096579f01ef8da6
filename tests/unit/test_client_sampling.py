"""Sampling parameters -> OpenAI-compatible request fields, and the errors for what cannot map."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from berth.client import SamplingParamsError, request_fields


@dataclass
class FakeSamplingParams:
    """The shape of vllm.SamplingParams (a subset) for tests that must not import vLLM."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int | None = 16
    stop: list[str] = field(default_factory=list)
    logprobs: int | None = None
    seed: int | None = None
    detokenize: bool = True
    output_kind: int = 0
    logits_processors: Any = None
    _internal: int = 0


def test_dict_keys_map_by_name():
    fields = request_fields({"temperature": 0.2, "top_k": 5, "max_tokens": 7, "seed": 1,
                             "presence_penalty": 0.1, "frequency_penalty": 0.3,
                             "repetition_penalty": 1.1, "min_tokens": 2, "n": 2}, chat=True)
    assert fields == {"temperature": 0.2, "top_k": 5, "max_tokens": 7, "seed": 1,
                      "presence_penalty": 0.1, "frequency_penalty": 0.3,
                      "repetition_penalty": 1.1, "min_tokens": 2, "n": 2}


def test_logprobs_take_the_chat_or_completions_form():
    assert request_fields({"logprobs": 3}, chat=True) == {"logprobs": True, "top_logprobs": 3}
    assert request_fields({"logprobs": 3}, chat=False) == {"logprobs": 3}
    assert request_fields({"logprobs": None}, chat=True) == {}


def test_conversions():
    fields = request_fields({"stop": "END", "logit_bias": {7: -100}, "extra_args": {"k": 1}},
                            chat=False)
    assert fields == {"stop": ["END"], "logit_bias": {"7": -100.0}, "vllm_xargs": {"k": 1}}


def test_structured_and_guided_outputs():
    assert request_fields({"structured_outputs": {"choice": ["a", "b"], "regex": None}},
                          chat=True) == {"structured_outputs": {"choice": ["a", "b"]}}
    assert request_fields({"guided_decoding": {"json": {"type": "object"}}}, chat=True) == {
        "guided_json": {"type": "object"}}
    with pytest.raises(SamplingParamsError, match="guided_decoding.bogus"):
        request_fields({"guided_decoding": {"bogus": 1}}, chat=True)


def test_unknown_dict_key_is_named_with_a_suggestion():
    with pytest.raises(SamplingParamsError, match="'temprature'.*did you mean 'temperature'"):
        request_fields({"temprature": 0.5}, chat=True)


def test_object_sends_non_defaults_and_always_max_tokens():
    params = FakeSamplingParams(temperature=0.7, stop=["x"], logprobs=2)
    assert request_fields(params, chat=True) == {
        "temperature": 0.7, "stop": ["x"], "max_tokens": 16, "logprobs": True, "top_logprobs": 2}
    assert request_fields(FakeSamplingParams(), chat=False) == {"max_tokens": 16}


def test_object_field_that_cannot_travel_is_named():
    with pytest.raises(SamplingParamsError, match="'detokenize' has no field.*batched server"):
        request_fields(FakeSamplingParams(detokenize=False), chat=False)
    with pytest.raises(SamplingParamsError, match="'logits_processors'"):
        request_fields(FakeSamplingParams(logits_processors=[print]), chat=False)


def test_engine_only_fields_are_ignored():
    assert request_fields(FakeSamplingParams(output_kind=2), chat=True) == {"max_tokens": 16}


def test_unsupported_type_is_refused():
    with pytest.raises(SamplingParamsError, match="pass a dict or a vllm.SamplingParams"):
        request_fields(object(), chat=True)


@pytest.mark.vllm
def test_real_vllm_sampling_params():
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    params = SamplingParams(temperature=0.5, top_p=0.9, max_tokens=20, stop="##", seed=4,
                            logprobs=1, structured_outputs=StructuredOutputsParams(choice=["y"]))
    fields = request_fields(params, chat=True)
    assert fields["structured_outputs"]["choice"] == ["y"]
    assert {k: fields[k] for k in ("temperature", "top_p", "max_tokens", "stop", "seed")} == {
        "temperature": 0.5, "top_p": 0.9, "max_tokens": 20, "stop": ["##"], "seed": 4}
    assert fields["logprobs"] is True and fields["top_logprobs"] == 1
    with pytest.raises(SamplingParamsError, match="detokenize"):
        request_fields(SamplingParams(detokenize=False), chat=True)


@pytest.mark.vllm
def test_real_vllm_derived_and_engine_level_fields():
    from vllm import SamplingParams

    from berth.client.sampling import batched_params

    fields = request_fields(SamplingParams(prompt_logprobs=3, max_tokens=4), chat=False)
    assert fields == {"prompt_logprobs": 3, "max_tokens": 4}  # skip_reading_prefix_cache derived
    assert request_fields(SamplingParams(prompt_logprobs=0), chat=True)["prompt_logprobs"] == 0
    with pytest.raises(SamplingParamsError, match="skip_reading_prefix_cache"):
        request_fields(SamplingParams(skip_reading_prefix_cache=True), chat=False)
    engine_level = [
        SamplingParams(detokenize=False),
        SamplingParams(prompt_logprob_token_ids=[[1, 2]], prompt_logprobs=None),
        SamplingParams(prompt_logprob_start=1),
        SamplingParams(trace_decode_token_ids=[1, 2]),
    ]
    for params in engine_level:
        with pytest.raises(SamplingParamsError, match="use a batched server"):
            request_fields(params, chat=False)
    # a batched server takes every field, as msgspec encodes the SamplingParams
    wire = batched_params(SamplingParams(prompt_logprob_token_ids=[[1, 2]], detokenize=False,
                                         max_tokens=3))
    assert wire["prompt_logprob_token_ids"] == [[1, 2]] and wire["detokenize"] is False
    assert batched_params({"max_tokens": 2}) == {"max_tokens": 2} and batched_params(None) is None
