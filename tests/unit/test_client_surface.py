"""berth.client's public surface: exactly these names, each present and documented."""

from __future__ import annotations

import importlib
import pkgutil

import berth.client

PUBLIC = {
    "ClientError", "LLMConfig", "RequestTimeout", "ResponseOutput", "SamplingParamsError",
    "ServeConfig", "ServerError", "ServerStartError", "ServerUnavailable", "TokenLogprob",
    "VLLMClient", "VLLMServer", "VLLMService", "instance_base_url", "request_fields",
    "LOG_LEVEL_ENV", "setup_logging",
}


def test_all_is_the_public_surface():
    assert set(berth.client.__all__) == PUBLIC
    assert len(berth.client.__all__) == len(PUBLIC)
    assert all(getattr(berth.client, name).__doc__ for name in PUBLIC)


def test_every_module_has_a_docstring_and_valid_all():
    for info in pkgutil.iter_modules(berth.client.__path__, "berth.client."):
        module = importlib.import_module(info.name)
        assert module.__doc__, f"{info.name} needs a docstring"
        missing = [n for n in getattr(module, "__all__", []) if not hasattr(module, n)]
        assert missing == [], info.name
