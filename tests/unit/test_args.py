"""Argument utilities: every shape users write parameters in."""

import pytest

from berth.utils.args import (
    extend_args_no_exist,
    find_bool_parameter,
    find_int_parameter,
    find_parameter,
    flatten_to_argv,
    format_backend_parameters,
    has_parameter,
    is_parameter_key,
)

TP = ["tensor-parallel-size", "tp"]


@pytest.mark.parametrize(
    "params",
    [
        ["--tp", "2"],
        ["--tp=2"],
        ["-tp", "2"],
        ["-tp 2"],
        ["--tensor-parallel-size 2"],
        ["--tensor-parallel-size = 2"],
        ["--enforce-eager --tp 2 --max-model-len 4096"],
        ["--tp 2 \\\n"],
        ["--tp 2 \\"],
        ["  --tensor-parallel-size=2  "],
    ],
)
def test_find_parameter_all_shapes(params):
    assert find_parameter(params, TP) == "2"
    assert find_int_parameter(params, TP) == 2


def test_find_parameter_absent_and_bare():
    assert find_parameter(None, TP) is None
    assert find_parameter(["--enforce-eager"], TP) is None
    assert find_parameter(["--tp"], TP) is None  # bare key has no value
    assert find_parameter(["--tp", "--enforce-eager"], TP) is None


def test_first_occurrence_wins():
    assert find_parameter(["--tp=2", "--tp=4"], TP) == "2"


def test_find_int_parameter_not_an_int():
    assert find_int_parameter(["--tp", "two"], TP) is None


def test_negative_numbers_are_values():
    assert find_parameter(["--temperature", "-0.5"], ["temperature"]) == "-0.5"
    assert not is_parameter_key("-1")
    assert not is_parameter_key("--")
    assert is_parameter_key("-tp")


def test_flatten_json_value_with_spaces():
    spec = '{"method": "ngram", "num_speculative_tokens": 5}'
    assert flatten_to_argv([f"--speculative-config {spec}"]) == ["--speculative-config", spec]
    assert flatten_to_argv([f"--speculative-config={spec}"]) == [f"--speculative-config={spec}"]
    assert find_parameter([f"--speculative-config {spec}"], ["speculative-config"]) == spec


def test_flatten_json_in_pasted_command_line():
    tokens = flatten_to_argv(['--a 1 --kv-transfer-config={"kv_connector": "X", "kv_role": "kv_both"} --b'])
    assert tokens == ["--a", "1", '--kv-transfer-config={"kv_connector": "X", "kv_role": "kv_both"}', "--b"]


def test_flatten_pasted_multiline_command():
    pasted = "--max-model-len 65536 \\\n  --enable-prefix-caching \\\n  --dtype bfloat16 \\\n"
    assert flatten_to_argv([pasted]) == ["--max-model-len", "65536", "--enable-prefix-caching", "--dtype", "bfloat16"]


def test_flatten_keeps_opaque_values_whole():
    assert flatten_to_argv(["--served-model-name", "my model", "/path/with space"]) == [
        "--served-model-name", "my model", "/path/with space",
    ]
    assert flatten_to_argv(["", "  ", None]) == []


def test_flatten_quoted_values():
    assert flatten_to_argv(["--chat-template 'a b'"]) == ["--chat-template", "a b"]


def test_flatten_key_equals_spacing():
    assert flatten_to_argv(["--ctx-size =1024"]) == ["--ctx-size=1024"]
    assert flatten_to_argv(["--ctx-size= 1024"]) == ["--ctx-size=1024"]


def test_unbalanced_quote_is_a_clear_error():
    with pytest.raises(ValueError, match="cannot split parameter"):
        flatten_to_argv(["--chat-template 'oops"])


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (["--enable-x"], True),
        (["--enable-x=true"], True),
        (["--enable-x", "1"], True),
        (["--enable-x=false"], False),
        (["--enable-x", "0"], False),
        (["--enable-x=No"], False),
        (["--enable-x=OFF"], False),
        (["--enable-x=maybe"], True),
        ([], False),
        (None, False),
    ],
)
def test_find_bool_parameter(params, expected):
    assert find_bool_parameter(params, ["enable-x"]) is expected


def test_no_form_counts_when_listed():
    names = ["enable-x", "no-enable-x"]
    assert find_bool_parameter(["--no-enable-x"], names) is True
    assert find_bool_parameter(["--no-enable-x"], ["enable-x"]) is False
    assert has_parameter(["--no-enable-x"], names)
    assert has_parameter(["--enable-x=false"], names)
    assert not has_parameter(["--other"], names)


def test_extend_args_no_exist():
    args = ["--port=9000", "--host", "0.0.0.0"]
    extend_args_no_exist(args, ("--host", "1.2.3.4"), ("--port", "1"), ("--served-model-name", "m"), "--flag")
    assert args == ["--port=9000", "--host", "0.0.0.0", "--served-model-name", "m", "--flag"]
    extend_args_no_exist(args, "--flag")
    assert args.count("--flag") == 1


def test_format_backend_parameters():
    assert format_backend_parameters(["--max-model-len", "8192", "--enable-prefix-caching"]) == [
        "--max-model-len=8192", "--enable-prefix-caching",
    ]
    assert format_backend_parameters(["--dtype=float16"]) == ["--dtype=float16"]
    assert format_backend_parameters(["--lora-modules", "a=1", "b=2"]) == ["--lora-modules", "a=1", "b=2"]
    assert format_backend_parameters(["--temperature", "-0.5"]) == ["--temperature=-0.5"]
    assert format_backend_parameters(None) == []


@pytest.mark.parametrize(
    ("entry", "tokens"),
    [
        ('--served-model-name = "my model"', ["--served-model-name=my model"]),
        ('--foo  ="  bar"', ["--foo=  bar"]),
        ("--foo  =  bar baz", ["--foo=bar", "baz"]),
        ('--k="ab"', ["--k=ab"]),
        ('--k="a b"', ["--k=a b"]),
        ("--k='a \"b\"'", ['--k=a "b"']),
        ('--foo "=bar"', ["--foo", "=bar"]),  # a quoted equals sign is a value
        ('--a = {"b": [1, 2]} --c = 3', ['--a={"b": [1, 2]}', "--c=3"]),
    ],
)
def test_parameters_are_unquoted_like_a_shell(entry, tokens):
    assert flatten_to_argv([entry]) == tokens


def test_the_same_reading_for_launcher_options():
    from berth.utils.args import split_command_line

    assert split_command_line('--served-model-name = "my model" --port 8000') == [
        "--served-model-name=my model", "--port", "8000"
    ]


def test_an_unclosed_quote_is_named():
    with pytest.raises(ValueError, match="cannot split parameter"):
        flatten_to_argv(['--chat-template="a'])


# The inputs of GPUStack's own command-utility tests (tests/utils/test_command.py), with what
# berth reads. Where GPUStack's expectation differs it is on purpose, and said so: berth reads
# parameters like a shell (quotes removed, an equals sign set off by spaces is a separator), and,
# as GPUStack 2.3.0's own code does, a flag with any value but a false one is enabled.
@pytest.mark.parametrize(
    ("parameters", "names", "expected"),
    [
        (None, ["foo"], None),
        ([], ["foo"], None),
        (["--foo=bar"], ["foo"], "bar"),
        (["-f=baz"], ["f"], "baz"),
        (["--foo=bar=baz"], ["foo"], "bar=baz"),
        (["--foo", "value"], ["foo"], "value"),
        (["-f", "val"], ["f"], "val"),
        (["--x=5"], ["y", "x"], "5"),
        (["--foo"], ["foo"], None),
        (["--bar=1", "--baz", "2"], ["foo"], None),
        ([" --max-model-len=8192"], ["max-model-len"], "8192"),
        (["  --foo=bar"], ["foo"], "bar"),
        (["  --foo bar"], ["foo"], "bar"),
        (["--foo =bar"], ["foo"], "bar"),
        (["  --foo  =bar"], ["foo"], "bar"),
        (["--foo  =  bar"], ["foo"], "bar"),  # GPUStack's test: "  bar"
        (['--foo  ="  bar"'], ["foo"], "  bar"),  # GPUStack's test: '"  bar"' (quotes kept)
        (["--hf-overrides '{\"rope_scaling\": {\"factor\": 4.0}}'"], ["hf-overrides"], '{"rope_scaling": {"factor": 4.0}}'),
        (['--hf-overrides={"rope_scaling": {"factor": 4.0}}'], ["hf-overrides"], '{"rope_scaling": {"factor": 4.0}}'),
    ],
)
def test_gpustacks_find_parameter_inputs(parameters, names, expected):
    assert find_parameter(parameters, names) == expected


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        (["--foo"], True), ([" --foo"], True), (["--foo  "], True), (["  --foo  "], True),
        (["--bar"], False), ([], False),
        (["--foo=bar"], True),  # GPUStack's test: False; its 2.3.0 code and berth: any value but a false one enables
        (["--foo=off"], False),
    ],
)
def test_gpustacks_find_bool_parameter_inputs(parameters, expected):
    assert find_bool_parameter(parameters, ["foo"]) is expected
