"""The launcher body read into berth's terms: options, env policy, ids."""

import pytest

from berth.utils.args import served_names
from berth.worker.admission import check_instance_id
from berth.worker.admission._env_policy import check_env
from berth.worker.admission._launcher_spec import parse_options
from berth.worker.errors import InvalidRequest


def test_model_and_port_are_understood():
    options = parse_options("--model /models/opt --port 8000 --max-model-len 512 --enforce-eager")
    assert options.model_path == "/models/opt" and options.port == 8000
    assert options.parameters == ["--max-model-len", "512", "--enforce-eager"]
    assert options.served_name == "/models/opt"


def test_equals_forms_positional_model_and_served_name():
    options = parse_options("facebook/opt-125m --port=8001 --served-model-name opt")
    assert options.model_path == "facebook/opt-125m" and options.port == 8001
    assert options.served_name == "opt" and options.parameters == ["--served-model-name", "opt"]


def test_json_values_with_spaces_stay_whole():
    options = parse_options('--model /m --speculative-config {"method": "ngram", "n": 2} --tp 2 --pp 2')
    assert options.parameters[:2] == ["--speculative-config", '{"method": "ngram", "n": 2}']
    assert options.gpu_count == 4


def test_shell_metacharacters_are_plain_tokens():
    options = parse_options("--model /m --chat-template '$(rm -rf /)' ; echo pwned")
    assert options.parameters == ["--chat-template", "$(rm -rf /)", ";", "echo", "pwned"]


@pytest.mark.parametrize(
    "text,message",
    [
        ("--port 8000", "--model is required"),
        ("--model", "--model needs a value"),
        ("--model /m --port abc", "--port 'abc' must be an integer"),
        ("--model /m --port 70000", "must be an integer from 1 to 65535"),
        ("--model /m --model /n", "--model is given twice"),
        ("--model ../etc", "--model"),
        ("--model /a/../b", "must not contain '..'"),
        ("--model /m 'unbalanced", "options:"),
        ("--model /m\x00", "control characters"),
    ],
)
def test_bad_options_name_the_problem(text, message):
    with pytest.raises(InvalidRequest, match="options") as info:
        parse_options(text)
    assert message in str(info.value)


def test_env_policy():
    assert check_env({"A": 1, "B": True, "C": "x", "D": 1.5}, allowed=[], field="env_vars") == {
        "A": "1", "B": "1", "C": "x", "D": "1.5"}
    for name in ("LD_PRELOAD", "LD_LIBRARY_PATH", "PYTHONPATH", "BASH_ENV", "PYTHONSTARTUP"):
        with pytest.raises(InvalidRequest, match=f"env_vars.{name}: refused"):
            check_env({name: "/x"}, allowed=[], field="env_vars")
    assert check_env({"LD_PRELOAD": "/x.so"}, allowed=["LD_PRELOAD"], field="env_vars") == {"LD_PRELOAD": "/x.so"}


@pytest.mark.parametrize("env,message", [
    ({"1BAD": "x"}, "not a valid variable name"),
    ({"A-B": "x"}, "not a valid variable name"),
    ({"A": {"x": 1}}, "must be a string"),
    ({"A": None}, "must be a string"),
    ({"A": "x\x00y"}, "NUL"),
])
def test_bad_env_is_refused(env, message):
    with pytest.raises(InvalidRequest, match=message):
        check_env(env, allowed=[], field="env_vars")


@pytest.mark.parametrize("good", ["a", "llama2", "a1b2c3d4-e5f6-7890-abcd-ef1234567890", "x.y_z-1", "A" * 63])
def test_safe_ids(good):
    assert check_instance_id(good) == good


@pytest.mark.parametrize("bad", ["", "a/b", "..", "a..b", "a\x00b", "-a", "a-", ".hidden", "A" * 64, "a b", "é"])
def test_unsafe_ids_refused(bad):
    with pytest.raises(InvalidRequest, match="instance_id"):
        check_instance_id(bad)


def test_served_names():
    assert served_names(["/m", "--served-model-name", "a", "b", "--port", "1"]) == ["a", "b"]
    assert served_names(["/m", "--served-model-name=c"]) == ["c"]
    assert served_names(["/m"]) == []
