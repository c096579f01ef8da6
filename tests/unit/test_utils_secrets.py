"""berth.utils.secrets: the one rule of which values are secrets, for the worker and the client."""

from __future__ import annotations

from berth.utils.secrets import MIN_SECRET, redact_bytes, redact_text, secret_values
from berth.worker import redact


def test_spec_env_and_options_longest_first():
    spec = {"model": {"env": {"HF_TOKEN": "hf_short", "PATH": "/usr/bin", "MY_API_KEY": "k"},
                      "backend_parameters": ["--api-key=sk-much-longer-value", "--max-num-batched-tokens", "8192"]}}
    assert secret_values(spec) == ["sk-much-longer-value", "hf_short"]  # "k" is under MIN_SECRET


def test_more_envs_and_args_follow_the_same_rule():
    values = secret_values(envs=[{"HF_TOKEN": "hf_abcdef"}, {"HOME": "/root"}],
                           args=["--api-key", "sk-12345", "--hf-token", "hf_zzzz", "--port", "8000"])
    assert values == ["hf_abcdef", "sk-12345", "hf_zzzz"]
    assert secret_values() == [] and MIN_SECRET == 4


def test_redaction_keeps_offsets_in_bytes_and_masks_text():
    assert redact_text("key sk-12345 here", ["sk-12345"]) == "key ****** here"
    assert redact_bytes(b"key sk-12345 here", ["sk-12345"]) == b"key ******** here"


def test_the_worker_uses_the_same_functions():
    assert (redact.secret_values, redact.redact_text, redact.redact_bytes, redact.MIN_SECRET) == (
        secret_values, redact_text, redact_bytes, MIN_SECRET)
