"""Versions, port ranges, env masking, units."""

import socket

import pytest

from berth.utils.env import (
    MASK,
    is_secret_name,
    mask_env,
    mask_secrets_in_args,
    valid_env_name,
)
from berth.utils.ports import (
    EPHEMERAL_PORTS,
    free_port,
    free_port_range,
    is_port_free,
    parse_port_range,
)
from berth.utils.units import byte_to_gib
from berth.utils.versions import compare_versions


@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [
        ("0.16.0", "0.16.0", 0),
        ("v0.16.0", "0.16.0", 0),
        ("0.16", "0.16.0", 0),
        ("0.15.1", "0.16.0", -1),
        ("0.10.0", "0.9.2", 1),
        ("0.9.0", "0.9.0.1", -1),
        ("0.9.0.1", "0.9.0.1", 0),
        ("0.9.1", "0.9.0.1", 1),
        ("0.16.0rc1", "0.16.0", -1),
        ("0.11.0+cu128", "0.11.0", 0),
    ],
)
def test_compare_versions(left, right, expected):
    assert compare_versions(left, right) == expected


def test_parse_port_range():
    assert parse_port_range("41000-41999") == (41000, 41999)
    assert parse_port_range(" 10-10 ") == (10, 10)
    for bad in ("41000", "a-b", "10-5", "0-10", "1-70000"):
        with pytest.raises(ValueError):
            parse_port_range(bad)


def test_is_port_free():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert not is_port_free(port, "127.0.0.1")


def test_free_port_can_be_bound_and_skips_avoided_ones():
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
    assert free_port(avoid={port}) != port


def test_free_port_range_is_a_random_free_block_below_the_ephemeral_range():
    blocks = {free_port_range(50) for _ in range(5)}
    assert len(blocks) > 1, "the same block every time: two callers at once would collide"
    for block in blocks:
        start, end = parse_port_range(block)
        assert end - start == 49 and start % 50 == 0 and end < EPHEMERAL_PORTS[0]


def test_free_port_range_leaves_out_bound_and_avoided_ports(monkeypatch: pytest.MonkeyPatch):
    import berth.utils.ports as ports_module

    monkeypatch.setattr(ports_module, "is_port_free", lambda port: port != 105)  # as if 105 were bound
    assert free_port_range(10, (100, 129), avoid={121}) == "110-119"
    with pytest.raises(OSError, match="no 10 free ports in a row between 100 and 129"):
        free_port_range(10, (100, 129), avoid={115, 121})


def test_secret_names_and_masking():
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "OPENAI_API_KEY", "DB_PASSWORD"):
        assert is_secret_name(name), name
    assert is_secret_name("AWS_ACCESS_KEY_ID") and is_secret_name("MY_KEY")
    for name in ("OMP_NUM_THREADS", "VLLM_PORT", "NCCL_SOCKET_IFNAME", "CUDA_VISIBLE_DEVICES", "VLLM_MAX_TOKENS",
                 "KEYBOARD_LAYOUT"):
        assert not is_secret_name(name), name
    assert mask_env({"HF_TOKEN": "hf_abc", "A": "b"}) == {"HF_TOKEN": MASK, "A": "b"}
    assert mask_secrets_in_args(["--api-key", "sk-1", "--port", "1", "--api-key=sk-2"]) == [
        "--api-key", MASK, "--port", "1", f"--api-key={MASK}",
    ]


def test_ordinary_options_with_token_in_their_name_are_not_masked():
    args = ["--max-num-batched-tokens", "8192", "--enable-prompt-tokens-details", "--hf-token", "hf_x"]
    assert mask_secrets_in_args(args) == ["--max-num-batched-tokens", "8192", "--enable-prompt-tokens-details",
                                          "--hf-token", MASK]


def test_valid_env_name():
    assert valid_env_name("VLLM_PORT") and valid_env_name("_x1")
    assert not valid_env_name("1A") and not valid_env_name("A-B") and not valid_env_name("A B")


def test_byte_to_gib():
    assert byte_to_gib(3 << 30) == 3.0
    assert byte_to_gib(int(1.5 * (1 << 30))) == 1.5
