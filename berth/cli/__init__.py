"""berth's command line: ``berth plan / run / serve / ps / logs / stop / demo / version``.

Each command lives in its own module and registers itself on :data:`app`; the logic it calls
lives below (backends, deployers, worker, client).
"""

from __future__ import annotations

from berth.cli._app import app, main
from berth.cli import _local, _plan, _serve  # noqa: F401  (register their commands)
from berth.cli import _demo  # noqa: F401  (registers `berth demo`)

__all__ = ["app", "main"]
