"""Property-based tests (hypothesis) of what reads user input before the API does: argument
utilities, launcher options, the env policy, secret masking and spec loading. Whatever they are
given, they answer or refuse with the one error type their callers turn into a 4xx naming the
field; nothing else escapes."""

from __future__ import annotations

import json
import shlex

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from berth.schemas import DeploymentSpec
from berth.utils.args import (
    find_parameter,
    flatten_to_argv,
    format_backend_parameters,
    iter_parameters,
    split_command_line,
)
from berth.utils.env import MASK, mask_secrets_in_args
from berth.worker.admission._env_policy import check_env
from berth.worker.errors import InvalidRequest
from berth.worker.admission._launcher_spec import parse_options
from berth.worker.redact import redact_bytes, secret_values
from tests.hardening._fixtures import spec_body

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
SHELLISH = st.lists(st.sampled_from([*"ab -=$()`;|&'\"\\{}[]\n\t*?~<>#!", "--tp", "--model"]), max_size=40).map("".join)
KEYS = st.from_regex(r"--[a-z][a-z0-9-]{0,12}", fullmatch=True)
VALUES = st.from_regex(r"[A-Za-z0-9_./:,@+][A-Za-z0-9_./:,@+-]{0,20}", fullmatch=True)


@FAST
@given(st.one_of(st.text(max_size=200), SHELLISH))
def test_split_command_line_only_raises_value_error(text):
    try:
        tokens = split_command_line(text)
    except ValueError:
        return
    assert all(isinstance(token, str) for token in tokens)


@FAST
@given(st.lists(st.one_of(st.text(max_size=60), SHELLISH), max_size=8))
def test_argument_queries_only_raise_value_error(entries):
    try:
        tokens = flatten_to_argv(entries)
        list(iter_parameters(entries))
        find_parameter(entries, ["model", "tp"])
    except ValueError:
        return
    assert all(isinstance(token, str) for token in tokens)


@FAST
@given(st.lists(st.tuples(KEYS, st.one_of(st.none(), VALUES)), max_size=8))
def test_format_keeps_every_option_and_value(pairs):
    tokens = [part for key, value in pairs for part in ([key] if value is None else [key, value])]
    assert list(iter_parameters(format_backend_parameters(tokens))) == list(iter_parameters(tokens))


@FAST
@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=["Cs", "Cc"]), min_size=1, max_size=30),
                min_size=1, max_size=6))
def test_quoted_tokens_reach_the_plan_as_single_tokens(words):
    """Whatever shell syntax a value holds, quoting it keeps it one literal token."""
    options = "--model /m " + " ".join(f"--opt{i} {shlex.quote(word)}" for i, word in enumerate(words))
    try:
        parsed = parse_options(options)
    except InvalidRequest as exc:
        assert str(exc).startswith("options:")
        return
    assert parsed.model_path == "/m"
    values = [parsed.parameters[i] for i in range(1, len(parsed.parameters), 2)]
    assert values == words


@FAST
@given(st.one_of(st.text(max_size=200), SHELLISH))
def test_parse_options_refuses_only_with_a_message_naming_options(text):
    try:
        parse_options(text)
    except InvalidRequest as exc:
        assert str(exc).startswith("options:")


ENV_VALUES = st.one_of(st.text(max_size=40), st.integers(), st.floats(allow_nan=False), st.booleans(), st.none(),
                       st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@FAST
@given(st.dictionaries(st.text(max_size=20), ENV_VALUES, max_size=6))
def test_env_policy_accepts_names_and_strings_or_refuses_naming_env(env):
    try:
        accepted = check_env(env, allowed=[], field="env_vars")
    except InvalidRequest as exc:
        assert str(exc).startswith("env_vars")
        return
    for name, value in accepted.items():
        assert name.isascii() and (name[0].isalpha() or name[0] == "_") and "\x00" not in value
        assert not name.upper().startswith("LD_") and name.upper() != "PYTHONPATH"


SECRETS = st.from_regex(r"[A-Za-z0-9_\-+/=.]{6,40}", fullmatch=True)


@FAST
@given(SECRETS, st.sampled_from(["--api-key", "--hf-token", "--password", "--secret-key"]), st.booleans())
def test_secret_options_are_masked_in_args(secret, option, joined):
    args = ["--model", "/m", f"{option}={secret}"] if joined else ["--model", "/m", option, secret]
    shown = mask_secrets_in_args(args)
    assert secret not in " ".join(shown) and any(MASK in token for token in shown)


@FAST
@given(SECRETS, st.binary(max_size=200), st.binary(max_size=200))
def test_log_redaction_keeps_offsets_and_hides_the_secret(secret, before, after):
    spec = {"model": {"env": {"HF_TOKEN": secret}, "backend_parameters": []}}
    data = before + secret.encode() + after
    redacted = redact_bytes(data, secret_values(spec))
    assert len(redacted) == len(data) and secret.encode() not in redacted


PLAIN = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20))
JSONISH = st.recursive(PLAIN, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=10), inner, max_size=4)),
                       max_leaves=20)


def _loads(text: str) -> None:
    try:
        spec = DeploymentSpec.from_text(text)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError too
        assert str(exc)
        return
    assert isinstance(spec, DeploymentSpec)


@FAST
@given(st.text(max_size=300))
def test_from_text_on_any_text(text):
    _loads(text)


@FAST
@given(st.sampled_from(["model", "instance", "worker", "config", "model_path"]), JSONISH)
def test_from_text_on_a_spec_with_one_section_replaced(section, value):
    body = spec_body()
    body[section] = value
    _loads(yaml.safe_dump(body))
    _loads(json.dumps(body))


@FAST
@given(st.sampled_from(["model", "instance", "worker"]), st.text(max_size=12), JSONISH)
def test_from_text_on_a_spec_with_one_field_added_or_replaced(section, key, value):
    body = spec_body()
    body[section] = {**body[section], key: value}
    _loads(json.dumps(body))


def test_from_text_refuses_alias_bombs_and_deep_nesting_quickly():
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for index in range(1, 9):
        prev, name = chr(ord("a") + index - 1), chr(ord("a") + index)
        levels.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 10)}]")
    bomb = "\n".join(levels) + "\nmodel: {name: m, backend_parameters: *i}\n"
    for text in (bomb, "model: " + "[" * 20000 + "]" * 20000, "a: &a [*a]\nmodel: *a\n"):
        try:
            DeploymentSpec.from_text(text)
        except ValueError as exc:
            assert str(exc).startswith("spec:")
        else:
            raise AssertionError("accepted")
