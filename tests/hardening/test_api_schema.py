"""Property-based tests of the worker's API from its own OpenAPI schema (schemathesis).

The app runs in-process over the memory deployer. Every operation gets schema-valid and
schema-violating requests (bounded: a few dozen each); every answer must be free of 5xx and
tracebacks, and every refusal a JSON ``detail`` naming the field.

Two of schemathesis's stock checks are left out, on purpose:

* ``positive_data_acceptance``: the schema states types, not every rule (``options`` must name
  ``--model``; ids are safe names; ``detail`` is a boolean word). Those are refused with 422
  naming the field, which is what :func:`clean_answers` checks.
* ``allow_header_conformance``: Starlette's 405 lists only the methods of the first route that
  matched the path, a framework limit with no effect on clients.

The watch stream is left out here (it streams until its timeout); ``test_bad_input`` covers it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import allow_header_conformance, not_a_server_error, positive_data_acceptance
from schemathesis.config._checks import NegativeDataRejectionConfig

from berth.deployers.memory import MemoryDeployer
from berth.worker import ServeManager, Settings, create_app
from berth.testing.fakes import FakeProbe
from tests.hardening._answers import problem
from tests.support.ports import free_range

EXAMPLES = int(os.environ.get("BERTH_SCHEMA_EXAMPLES", "40"))


_DATA = Path(tempfile.mkdtemp(prefix="berth-schema-"))
#: No watcher runs here (the manager starts with watch=False), so no instance ever becomes ready:
#: a registered model's start and a /v1 request waiting for it give up within seconds, not the
#: production minutes, and every such request is answered (503) while the fuzzer waits.
_MANAGER = ServeManager(
    Settings.load(data_dir=_DATA / "data", instance_port_range=free_range(200), swap_ready_timeout=2.0,
                  router_activation_timeout=2.0, swap_drain_timeout=1.0),
    deployer=MemoryDeployer(),
    probe=FakeProbe(),
)
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(_MANAGER, start=False, close=False))
schema = schema.exclude(path="/v2/instances/watch")
schema.config.generation.update(modes=["positive", "negative"], max_examples=EXAMPLES, database="none")
#: A body over max_body_bytes is refused with 413 before it is read: a rejection too.
schema.config.checks.negative_data_rejection = NegativeDataRejectionConfig(
    expected_statuses=[*NegativeDataRejectionConfig().expected_statuses, 413]
)


@pytest.fixture(scope="module", autouse=True)
def running_manager() -> Iterator[ServeManager]:
    """The manager is built at import (schemathesis reads the schema then) and started here."""
    _MANAGER.start(watch=False)
    yield _MANAGER
    _MANAGER.close()
    shutil.rmtree(_DATA, ignore_errors=True)


#: Paths that bring a model up on demand: when it cannot be ready in time (here never: no watcher
#: runs), their documented answer is 503 with Retry-After and a detail saying why (issue 17).
_ACTIVATING = ("/v1/", "/v2/models")


def clean_answers(ctx: Any, response: Any, case: Any) -> bool:
    """No 5xx (but an activating path's 503), no traceback, refusals as JSON naming the field."""
    found = problem(response.status_code, response.headers.get("content-type", [""])[0], response.content,
                    unavailable_ok=case.path.startswith(_ACTIVATING))
    if found is not None:
        raise AssertionError(found)
    return True


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), derandomize=os.environ.get("BERTH_SCHEMA_RANDOM") != "1")
def test_every_operation_answers_cleanly(case: Any) -> None:
    case.call_and_validate(
        additional_checks=[clean_answers],
        excluded_checks=[positive_data_acceptance, allow_header_conformance,
                         *([not_a_server_error] if case.path.startswith(_ACTIVATING) else [])],
    )
