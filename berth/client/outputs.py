"""What a request returns when ``return_extra=True``: plain slotted objects, built straight from
the decoded JSON of vLLM's OpenAI-compatible responses (no validation layer on the hot path).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ResponseOutput", "TokenLogprob", "chat_output", "completion_output"]


@dataclass(slots=True)
class TokenLogprob:
    """One generated token: its text, its log-probability and the top alternatives asked for."""

    token: str
    logprob: float
    top: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class ResponseOutput:
    """One generated choice.

    ``token_ids`` is filled when the server returns them (vLLM does for ``return_extra=True``
    from the version that knows ``return_token_ids``); ``logprobs`` when the sampling
    parameters asked for them; ``stop_reason`` is vLLM's (the stop string or token id that
    ended the text, ``None`` at end of sequence or length).
    """

    text: str
    finish_reason: str | None = None
    token_ids: list[int] | None = None
    logprobs: list[TokenLogprob] | None = None
    stop_reason: int | str | None = None

    @property
    def cumulative_logprob(self) -> float | None:
        """Sum of the generated tokens' log-probabilities, when logprobs were returned."""
        if self.logprobs is None:
            return None
        return sum(item.logprob for item in self.logprobs)


def chat_output(choice: dict[str, Any]) -> ResponseOutput:
    """A ``/v1/chat/completions`` choice as a :class:`ResponseOutput`."""
    message = choice.get("message") or {}
    logprobs = choice.get("logprobs")
    return ResponseOutput(
        text=message.get("content") or "",
        finish_reason=choice.get("finish_reason"),
        token_ids=choice.get("token_ids"),
        logprobs=_chat_logprobs(logprobs["content"]) if logprobs and logprobs.get("content") else None,
        stop_reason=choice.get("stop_reason"),
    )


def completion_output(choice: dict[str, Any]) -> ResponseOutput:
    """A ``/v1/completions`` choice as a :class:`ResponseOutput`."""
    logprobs = choice.get("logprobs")
    return ResponseOutput(
        text=choice.get("text") or "",
        finish_reason=choice.get("finish_reason"),
        token_ids=choice.get("token_ids"),
        logprobs=_completion_logprobs(logprobs) if logprobs and logprobs.get("tokens") else None,
        stop_reason=choice.get("stop_reason"),
    )


def _chat_logprobs(content: list[dict[str, Any]]) -> list[TokenLogprob]:
    return [
        TokenLogprob(
            token=item["token"],
            logprob=float(item["logprob"]),
            top={alt["token"]: float(alt["logprob"]) for alt in item.get("top_logprobs") or ()},
        )
        for item in content
    ]


def _completion_logprobs(logprobs: dict[str, Any]) -> list[TokenLogprob]:
    tokens: list[str] = logprobs["tokens"]
    values: list[float | None] = logprobs.get("token_logprobs") or [None] * len(tokens)
    tops: list[dict[str, float] | None] = logprobs.get("top_logprobs") or [None] * len(tokens)
    return [
        TokenLogprob(token=token, logprob=_logprob(value), top=dict(top or {}))
        for token, value, top in zip(tokens, values, tops)
    ]


def _logprob(value: float | None) -> float:
    return float("-inf") if value is None else float(value)
