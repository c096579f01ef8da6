"""berth's Python client: start vLLM servers and send them batched requests.

* :class:`VLLMService` starts one server per GPU group (or attaches to running ones, by URL
  or by a berth worker's instance id) and spreads ``chat``/``generate`` batches over them;
* :class:`VLLMServer` is one server, planned by berth and run by a berth deployer;
* :class:`VLLMClient` talks to one OpenAI-compatible server.

The names in ``__all__`` are the public surface; every other module here is private.
"""

from __future__ import annotations

from berth.client.attach import instance_base_url
from berth.client.client import VLLMClient
from berth.client.config import LLMConfig, ServeConfig
from berth.client.errors import (
    ClientError,
    RequestTimeout,
    SamplingParamsError,
    ServerError,
    ServerStartError,
    ServerUnavailable,
)
from berth.client.outputs import ResponseOutput, TokenLogprob
from berth.client.sampling import request_fields
from berth.client.server import VLLMServer
from berth.client.service import VLLMService

__all__ = [
    "ClientError",
    "LLMConfig",
    "RequestTimeout",
    "ResponseOutput",
    "SamplingParamsError",
    "ServeConfig",
    "ServerError",
    "ServerStartError",
    "ServerUnavailable",
    "TokenLogprob",
    "VLLMClient",
    "VLLMServer",
    "VLLMService",
    "instance_base_url",
    "request_fields",
]
