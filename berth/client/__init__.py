"""berth's Python client: start vLLM servers and send them batched requests.

* :class:`VLLMService` starts one server per GPU group (or attaches to running ones, by URL
  or by a berth worker's instance id) and spreads ``chat``/``generate`` batches over them;
* :class:`VLLMServer` is one server: a batched server (gserve's ``/generate`` and ``/chat``
  over ``vllm.LLM``, :mod:`berth.client.batched_server`) or ``vllm serve``, run by a berth
  deployer with the options as given;
* :class:`VLLMClient` talks to one server of either kind;
* :func:`setup_logging` and ``GSERVE_LOG_LEVEL`` set the log level, the servers' included.

The names in ``__all__`` are the public surface; every other module here is private.
"""

from __future__ import annotations

from berth.client.attach import instance_base_url
from berth.client.client import VLLMClient
from berth.client.config import LLMConfig, ServeConfig
from berth.client.log_utils import LOG_LEVEL_ENV, setup_logging
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
    "LOG_LEVEL_ENV",
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
    "setup_logging",
]
